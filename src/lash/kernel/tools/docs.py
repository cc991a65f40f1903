"""Compact tool contracts: code-style signatures and prompt docs derived from JSON Schemas.

A tool reads as ``await tools.search_docs({ query: str, limit?: int <= 10 = 5 })?``
returning ``record{matches: list[str], next_page?: str | null}``, followed by
one line per parameter and per interesting return field. Everything here is a
pure function of the tool definition; values are displayed as compact JSON.

Only local ``#/...`` references are resolved; a reference cycle becomes ``{}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from ..jsonvalue import is_json_int, strict_json_eq
from .definition import ToolDefinition

__all__ = [
    "CompactToolContract",
    "compact_contract",
    "format_tool_docs",
    "parameter_metadata",
    "resolve_schema_refs",
    "return_field_metadata",
    "return_label",
    "type_label",
]

EXAMPLE_LIMIT = 2
"""How many examples a compact contract keeps."""
EXAMPLE_CHAR_LIMIT = 240
"""Examples longer than this many characters are cut, ending in ``...``."""

_TYPE_NAMES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "object": "record",
    "array": "list",
    "null": "null",
}

# (schema keyword, metadata key) for the integer limits, in display order.
_COUNT_LIMITS = (
    ("minLength", "min_length"),
    ("maxLength", "max_length"),
    ("minItems", "min_items"),
    ("maxItems", "max_items"),
)
_LIMIT_WORDS = {
    "min_length": "min_len",
    "max_length": "max_len",
    "min_items": "min_items",
    "max_items": "max_items",
}


class CompactToolContract(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The compact, model-facing shape of one tool: signature, return type, parameters and fields.

    ``parameters`` and ``return_fields`` are JSON objects with ``name`` (or
    ``path``), ``type``, ``required``, ``signature`` and, when set,
    ``nullable``, ``description``, ``default``, ``enum``, ``minimum``,
    ``maximum``, ``min_length``, ``max_length``, ``min_items``, ``max_items``
    and ``items``.
    """

    name: str
    signature: str
    returns: str
    parameters: tuple[dict[str, Any], ...] = ()
    return_fields: tuple[dict[str, Any], ...] = ()
    description: str = ""
    examples: tuple[str, ...] = ()

    def render_signature_head(self) -> str:
        """``{signature} -> {returns}``."""
        return f"{self.signature.strip()} -> {self.returns.strip()}"

    def render_signature(self) -> str:
        """The head, then the ``Parameters:`` and ``Return fields:`` sections."""
        sections = [self.render_signature_head()]
        sections += _section("Parameters:", self.parameters)
        sections += _section("Return fields:", self.return_fields)
        return "\n".join(sections)

    def render_returns(self) -> str:
        """The ``Return fields:`` section, or ``""`` when there are none."""
        return "\n".join(_section("Return fields:", self.return_fields))

    def render_markdown(self) -> str:
        """The prompt block: ``### head``, description, parameters, return fields, examples."""
        sections = [f"### {self.render_signature_head()}"]
        if self.description.strip():
            sections.append(self.description.strip())
        sections += _section("Parameters:", self.parameters)
        sections += _section("Return fields:", self.return_fields)
        if self.examples:
            sections.append("Examples: " + "; ".join(self.examples))
        return "\n".join(sections)


def compact_contract(tool: ToolDefinition) -> CompactToolContract:
    """The compact contract of a tool definition."""
    params = parameter_metadata(tool.input_schema)
    body = "{ " + ", ".join(p["signature"] for p in params) + " }" if params else "{}"
    return CompactToolContract(
        name=tool.call_path,
        signature=f"await {tool.call_path}({body})?",
        returns=return_label(tool.output_schema),
        parameters=params,
        return_fields=return_field_metadata(tool.output_schema),
        description=tool.description.strip(),
        examples=_compact_examples(tool.examples),
    )


def format_tool_docs(tools: Iterable[ToolDefinition]) -> str:
    """The markdown blocks of several tools, separated by blank lines."""
    return "\n\n".join(compact_contract(tool).render_markdown() for tool in tools)


# ---------------------------------------------------------------------------
# $ref resolution


def resolve_schema_refs(schema: Any) -> Any:
    """A copy of ``schema`` with local ``#/...`` references replaced by their targets.

    A reference that is part of a cycle becomes ``{}``; keys written next to a
    ``$ref`` override the target's. Other references are left as they are.
    """
    return _resolve(schema, schema, [])


def _resolve(root: Any, node: Any, active: list[str]) -> Any:
    if isinstance(node, list):
        return [_resolve(root, item, active) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        if ref in active:
            return {}
        found, target = _pointer_lookup(root, ref[1:])
        if found:
            active.append(ref)
            resolved = _resolve(root, target, active)
            active.pop()
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if not siblings:
                return resolved
            if isinstance(resolved, dict):
                merged = dict(resolved)
                for key, value in siblings.items():
                    merged[key] = _resolve(root, value, active)
                return merged
    return {key: _resolve(root, value, active) for key, value in node.items()}


def _pointer_lookup(root: Any, pointer: str) -> tuple[bool, Any]:
    if pointer == "":
        return True, root
    if not pointer.startswith("/"):
        return False, None
    node = root
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            if len(token) > 1 and token.startswith("0"):
                return False, None
            node = node[int(token)]
        else:
            return False, None
    return True, node


# ---------------------------------------------------------------------------
# labels


def type_label(schema: Any) -> str:
    """The short label of a parameter or field schema: ``str``, ``list[int]``, ``enum[...]``."""
    return _label_and_nullable(schema)[0]


def _label_and_nullable(schema: Any) -> tuple[str, bool]:
    if not isinstance(schema, dict):
        return "any", False
    enum = schema.get("enum")
    if isinstance(enum, list):
        variants = [_display(v) for v in enum if v is not None]
        nullable = any(v is None for v in enum)
        if variants:
            label = f"enum[{', '.join(variants)}]"
            return (label + " | null", True) if nullable else (label, False)

    types = schema.get("type")
    if isinstance(types, list):
        nullable = "null" in types
        names = [_type_name(t) for t in types if isinstance(t, str) and t != "null"]
        label = " | ".join(names) if names else "any"
        return (label + " | null", True) if nullable else (label, False)

    branches = _alternatives(schema)
    if branches is not None:
        nullable = False
        labels: list[str] = []
        for branch in branches:
            label, branch_nullable = _label_and_nullable(branch)
            nullable = nullable or branch_nullable or label == "null"
            if branch_nullable:  # its "| null" moves to the end of the union
                label = " | ".join(p for p in _split_label(label) if p != "null")
            if label and label != "null" and label not in labels:
                labels.append(label)
        label = " | ".join(labels) if labels else "any"
        return (label + " | null", True) if nullable else (label, False)

    if types == "array":
        item = type_label(schema["items"]) if "items" in schema else "any"
        return f"list[{item or 'any'}]", False
    if isinstance(types, str):
        return _type_name(types), types == "null"
    return "any", False


def return_label(schema: Any) -> str:
    """The return-type label: records spelled out, alternatives as a sorted set.

    ``$ref``\\ s are resolved first; ``None`` (no output schema) reads ``any``.
    """
    return _return_label(resolve_schema_refs(schema))


def _return_label(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    branches = _alternatives(schema)
    if branches is not None:
        labels = sorted({_return_label(branch) for branch in branches})
        return " | ".join(labels) if labels else "any"
    types = schema.get("type")
    if isinstance(types, list):
        names = sorted(
            {_return_label({"type": t}) for t in types if isinstance(t, str) and t != "null"}
        )
        label = " | ".join(names) if names else "any"
        return label + " | null" if "null" in types else label
    if types == "array":
        if "items" not in schema:
            return "list[any]"
        return f"list[{_return_label(schema['items']) or 'any'}]"
    if types == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return "record"
        required = _required_names(schema)
        fields = [
            f"{name}{'' if name in required else '?'}: {_return_label(properties[name])}"
            for name in sorted(properties)
        ]
        return "record{" + ", ".join(fields) + "}"
    return type_label(schema)


def _alternatives(schema: dict[str, Any]) -> list[Any] | None:
    """The ``anyOf`` branches (or ``oneOf`` when there is no ``anyOf``), if that is a list."""
    value = schema["anyOf"] if "anyOf" in schema else schema.get("oneOf")
    return value if isinstance(value, list) else None


def _type_name(name: str) -> str:
    return _TYPE_NAMES.get(name, "any")


# ---------------------------------------------------------------------------
# parameters


def parameter_metadata(input_schema: Any) -> tuple[dict[str, Any], ...]:
    """One metadata object per input property: required ones in ``required`` order, then the
    rest alphabetically."""
    schema = resolve_schema_refs(input_schema)
    if not isinstance(schema, dict):
        return ()
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return ()
    order: dict[str, int] = {}
    for name in schema.get("required") or ():
        if isinstance(name, str) and name not in order:
            order[name] = len(order)
    names = sorted(properties, key=lambda n: (0, order[n], "") if n in order else (1, 0, n))
    out = []
    for name in names:
        doc = {"name": name, **_describe(properties[name], name in order, with_default=True)}
        doc["signature"] = _signature(name, doc)
        out.append(doc)
    return tuple(out)


def _describe(schema: Any, required: bool, *, with_default: bool) -> dict[str, Any]:
    """The metadata keys shared by parameters and return fields (no name, path or signature)."""
    label, nullable = _label_and_nullable(schema)
    doc: dict[str, Any] = {"type": label, "required": required}
    if not isinstance(schema, dict):
        return doc
    if nullable:
        doc["nullable"] = True
    description = schema.get("description")
    if isinstance(description, str) and description.strip():
        doc["description"] = description
    if with_default and "default" in schema:
        doc["default"] = schema["default"]
    enum = schema.get("enum")
    if isinstance(enum, list):
        values = [v for v in enum if v is not None]
        if values:
            doc["enum"] = values
    for plain, exclusive, key in (
        ("minimum", "exclusiveMinimum", "minimum"),
        ("maximum", "exclusiveMaximum", "maximum"),
    ):
        if plain in schema:
            doc[key] = schema[plain]
        elif exclusive in schema:
            doc[key] = schema[exclusive]
    for keyword, key in _COUNT_LIMITS:
        limit = schema.get(keyword)
        if isinstance(limit, int) and is_json_int(limit) and limit >= 0:
            doc[key] = limit
    if "items" in schema:
        item = type_label(schema["items"])
        if item != "any":
            doc["items"] = item
    return doc


def _signature(name: str, doc: dict[str, Any]) -> str:
    """``name[?]: type``, then constraints, then `` = default``."""
    out = f"{name}{'' if doc['required'] else '?'}: {doc['type']}"
    constraints = []
    if "enum" in doc and not doc["type"].startswith("enum["):
        constraints.append("in " + "|".join(_display(v) for v in doc["enum"]))
    if "minimum" in doc:
        constraints.append(f">= {_display(doc['minimum'])}")
    if "maximum" in doc:
        constraints.append(f"<= {_display(doc['maximum'])}")
    for key, word in _LIMIT_WORDS.items():
        if key in doc:
            constraints.append(f"{word} {doc[key]}")
    if constraints:
        out += " " + " ".join(constraints)
    if "default" in doc:
        out += f" = {_display(doc['default'])}"
    return out


# ---------------------------------------------------------------------------
# return fields


def return_field_metadata(output_schema: Any) -> tuple[dict[str, Any], ...]:
    """The interesting fields of an output schema, one metadata object per path.

    Every leaf is listed; objects, arrays and alternatives are listed only when
    they carry a description, an enum or limits. Fields met more than once
    (through ``anyOf``/``oneOf``) are merged.
    """
    schema = resolve_schema_refs(output_schema)
    merged: dict[str, dict[str, Any]] = {}
    for path, node, required in _walk_fields("", schema, True):
        doc = _describe(node, required, with_default=False)
        if path in merged:
            _merge(merged[path], doc)
        else:
            merged[path] = doc
    out = []
    for path, doc in merged.items():
        field = {"path": path, **doc}
        field["signature"] = _signature(path, field)
        out.append(field)
    return tuple(out)


def _walk_fields(path: str, schema: Any, required: bool) -> Iterable[tuple[str, Any, bool]]:
    if not isinstance(schema, dict):
        if path:
            yield path, schema, required
        return
    branches = _alternatives(schema)
    if branches is not None:
        if _interesting(path, schema):
            yield path, schema, required
        for branch in branches:
            yield from _walk_fields(path, branch, required)
        return
    kind = _single_type(schema)
    if kind == "object":
        if _interesting(path, schema):
            yield path, schema, required
        properties = schema.get("properties")
        if isinstance(properties, dict):
            names = _required_names(schema)
            for name in sorted(properties):
                child = f"{path}.{name}" if path else name
                yield from _walk_fields(child, properties[name], name in names)
    elif kind == "array":
        if _interesting(path, schema):
            yield path, schema, required
        if "items" in schema:
            yield from _walk_fields(f"{path}[]", schema["items"], True)
    elif path:
        yield path, schema, required


def _single_type(schema: dict[str, Any]) -> str | None:
    types = schema.get("type")
    if isinstance(types, str):
        return types
    if isinstance(types, list):
        names = [t for t in types if isinstance(t, str) and t != "null"]
        if len(names) == 1:
            return names[0]
    return None


def _interesting(path: str, schema: dict[str, Any]) -> bool:
    if not path:
        return False
    description = schema.get("description")
    if isinstance(description, str) and description.strip():
        return True
    keys = ("enum", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems")
    return any(key in schema for key in keys)


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Fold a second sighting of a field into the first one."""
    label = _union_labels(into["type"], other["type"])
    into["required"] = into["required"] or other["required"]
    nullable = into.get("nullable", False) or other.get("nullable", False)
    nullable = nullable or "null" in _split_label(other["type"])
    if nullable and "null" not in _split_label(label):
        label = _union_labels(label, "null")
    into["type"] = label
    if nullable:
        into["nullable"] = True
    if "description" not in into and "description" in other:
        into["description"] = other["description"]
    if "enum" in other:
        values = into.setdefault("enum", [])
        for value in other["enum"]:
            if not any(strict_json_eq(value, seen) for seen in values):
                values.append(value)
    for key in ("minimum", "maximum", "min_length", "max_length", "min_items", "max_items"):
        if key not in into and key in other:
            into[key] = other[key]
    if "items" not in into and "items" in other:
        into["items"] = other["items"]
    # keep the canonical key order of a fresh field
    ordered = _describe_order(into)
    into.clear()
    into.update(ordered)


_KEY_ORDER = (
    "type",
    "required",
    "nullable",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "min_length",
    "max_length",
    "min_items",
    "max_items",
    "items",
)


def _describe_order(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: doc[key] for key in _KEY_ORDER if key in doc}


def _union_labels(left: str, right: str) -> str:
    labels: list[str] = []
    for label in (*_split_label(left), *_split_label(right)):
        if label and label != "any" and label not in labels:
            labels.append(label)
    if not labels:
        return "any"
    labels.sort(key=lambda label: label == "null")
    return " | ".join(labels)


def _split_label(label: str) -> list[str]:
    """Split ``a | b`` at the top level only (``list[str | null]`` stays whole)."""
    parts: list[str] = []
    depth = 0
    current = ""
    i = 0
    while i < len(label):
        char = label[i]
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if depth == 0 and label.startswith(" | ", i):
            parts.append(current.strip())
            current = ""
            i += 3
            continue
        current += char
        i += 1
    parts.append(current.strip())
    return parts


# ---------------------------------------------------------------------------
# helpers


def _section(title: str, docs: tuple[dict[str, Any], ...]) -> list[str]:
    lines = [line for line in (_doc_line(doc) for doc in docs) if line]
    return [title + "\n" + "\n".join(lines)] if lines else []


def _doc_line(doc: dict[str, Any]) -> str | None:
    signature = doc.get("signature")
    if not isinstance(signature, str) or not signature.strip():
        return None
    description = doc.get("description")
    if isinstance(description, str) and description.strip():
        return f"- `{signature.strip()}` — {description.strip()}"
    return f"- `{signature.strip()}`"


def _compact_examples(examples: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for example in examples:
        text = example.strip()
        if not text:
            continue
        if len(text) > EXAMPLE_CHAR_LIMIT:
            text = text[: EXAMPLE_CHAR_LIMIT - 3] + "..."
        out.append(text)
        if len(out) == EXAMPLE_LIMIT:
            break
    return tuple(out)


def _required_names(schema: dict[str, Any]) -> set[str]:
    required = schema.get("required")
    if not isinstance(required, list):
        return set()
    return {name for name in required if isinstance(name, str)}


def _display(value: Any) -> str:
    """A value as compact JSON (object keys sorted)."""
    try:
        return msgspec.json.encode(value, order="sorted").decode()
    except (TypeError, ValueError, OverflowError):
        return repr(value)
