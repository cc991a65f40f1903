"""Tool values: the wire codec, the model projection and attachment collection."""

from __future__ import annotations

import itertools
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lash.kernel.attachments import AttachmentRef
from lash.kernel.errors import ToolValueError
from lash.kernel.jsonvalue import strict_json_eq
from lash.kernel.tools.output import (
    AttachmentReturn,
    FailureClass,
    ModelReturnPart,
    TextReturn,
    ToolCancelled,
    ToolFailure,
    ToolOutput,
)
from lash.kernel.tools.value import (
    TOOL_VALUE_TAG,
    collect_attachments,
    decode_tool_value,
    encode_tool_value,
    format_tool_output_content,
    model_return_parts,
)

IMG_ID = "a" * 64


def image_ref(digest: str = IMG_ID) -> AttachmentRef:
    return AttachmentRef(id=digest, mime="image/png", byte_len=3, width=1, height=1, label="tiny")


IMG_WIRE = {
    "id": IMG_ID,
    "mime": "image/png",
    "byte_len": 3,
    "width": 1,
    "height": 1,
    "label": "tiny",
}


# --- ports of the reference tests -------------------------------------------------------


def test_tool_value_serializes_nested_attachments() -> None:
    value = [image_ref()]

    wire = encode_tool_value(value)

    assert wire == [{TOOL_VALUE_TAG: "attachment", "ref": IMG_WIRE}]
    assert decode_tool_value(wire) == value


def test_tool_value_escapes_user_reserved_key() -> None:
    value = {TOOL_VALUE_TAG: "user"}

    wire = encode_tool_value(value)

    assert wire == {TOOL_VALUE_TAG: "object", "entries": {TOOL_VALUE_TAG: "user"}}
    assert decode_tool_value(wire) == value


def test_tool_value_rejects_malformed_reserved_object() -> None:
    with pytest.raises(ToolValueError) as info:
        decode_tool_value({TOOL_VALUE_TAG: "attachment", "extra": True})

    assert str(info.value) == (
        "$: a 'attachment' tool value must have exactly the keys "
        "'$lash_tool_value' and 'ref', got extra keys ['extra']"
    )


def test_tool_value_model_parts_preserve_attachment_position() -> None:
    output = ToolOutput.success(["before", image_ref(), "after"])

    assert model_return_parts(output) == (
        TextReturn(text='["before",'),
        AttachmentReturn(ref=image_ref()),
        TextReturn(text=',"after"]'),
    )


def test_tool_output_failure_projects_raw_attachments_after_failure_text() -> None:
    output = ToolOutput.failure(
        ToolFailure(
            failure_class=FailureClass.EXECUTION,
            code="boom",
            message="boom",
            raw={"image": image_ref()},
        )
    )

    assert model_return_parts(output) == (
        TextReturn(text="[Tool execution failed]\nboom"),
        AttachmentReturn(ref=image_ref()),
    )


def test_model_tool_return_text_part_serializes() -> None:
    part = TextReturn(text="hello")

    wire = msgspec.json.encode(part)

    assert msgspec.json.decode(wire) == {"type": "text", "text": "hello"}
    assert msgspec.json.decode(wire, type=ModelReturnPart) == part


def test_tool_output_status_distinguishes_cancelled_from_failure() -> None:
    failure = ToolOutput.failure(
        ToolFailure(failure_class=FailureClass.EXECUTION, code="boom", message="boom")
    )
    cancelled = ToolOutput.cancelled("stopped")

    assert failure.status == "failure"
    assert cancelled.status == "cancelled"
    assert not cancelled.is_success


# --- model projection --------------------------------------------------------------------


def test_success_string_is_one_text_part_and_empty_string_is_none() -> None:
    assert model_return_parts(ToolOutput.success("hi\nthere")) == (TextReturn(text="hi\nthere"),)
    assert model_return_parts(ToolOutput.success("")) == ()


def test_success_attachment_is_one_attachment_part() -> None:
    assert model_return_parts(ToolOutput.success(image_ref())) == (
        AttachmentReturn(ref=image_ref()),
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (3, "3"),
        (1.5, "1.5"),
        ({"b": [1, {"d": None, "c": "é"}], "a": "x"}, '{"a":"x","b":[1,{"c":"é","d":null}]}'),
        ({TOOL_VALUE_TAG: 1}, '{"$lash_tool_value":1}'),
        ((), "[]"),
    ],
)
def test_other_success_values_are_compact_sorted_json(value: Any, text: str) -> None:
    assert model_return_parts(ToolOutput.success(value)) == (TextReturn(text=text),)


def test_attachments_inside_objects_split_in_sorted_key_order() -> None:
    second = image_ref("b" * 64)
    output = ToolOutput.success({"z": second, "a": image_ref(), "m": 1})

    assert model_return_parts(output) == (
        TextReturn(text='{"a":'),
        AttachmentReturn(ref=image_ref()),
        TextReturn(text=',"m":1,"z":'),
        AttachmentReturn(ref=second),
        TextReturn(text="}"),
    )
    assert collect_attachments(output) == (image_ref(), second)


def test_cancelled_output_text_and_raw_attachments() -> None:
    output = ToolOutput(outcome=ToolCancelled(message="", raw=[image_ref()]))

    assert model_return_parts(output) == (
        TextReturn(text="[Tool execution cancelled]"),
        AttachmentReturn(ref=image_ref()),
    )
    assert model_return_parts(ToolOutput.cancelled("user stop")) == (
        TextReturn(text="[Tool execution cancelled]\nuser stop"),
    )


def test_format_tool_output_content() -> None:
    failure = ToolFailure(failure_class=FailureClass.TIMEOUT, code="t", message="")

    assert format_tool_output_content(ToolOutput.success("plain")) == "plain"
    assert format_tool_output_content(ToolOutput.success({"b": 1, "a": [True]})) == (
        '{"a":[true],"b":1}'
    )
    assert format_tool_output_content(ToolOutput.success(image_ref())) == (
        '{"$lash_tool_value":"attachment","ref":{"byte_len":3,"height":1,'
        f'"id":"{IMG_ID}","label":"tiny","mime":"image/png","width":1}}}}'
    )
    assert format_tool_output_content(ToolOutput.failure(failure)) == "[Tool execution failed]"
    assert format_tool_output_content(ToolOutput.cancelled("x")) == (
        "[Tool execution cancelled]\nx"
    )


def test_collect_attachments_from_failure_raw() -> None:
    failure = ToolFailure(
        failure_class=FailureClass.EXECUTION,
        code="c",
        message="m",
        raw={"shots": [image_ref(), {"more": image_ref("c" * 64)}]},
    )

    assert collect_attachments(ToolOutput.failure(failure)) == (
        image_ref(),
        image_ref("c" * 64),
    )
    assert collect_attachments(ToolOutput.success("no attachments")) == ()


# --- codec: bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({TOOL_VALUE_TAG: 1, "ref": {}}, "$: $lash_tool_value must be a string, got 1"),
        ({TOOL_VALUE_TAG: "blob", "data": 1}, "$: unknown $lash_tool_value tag 'blob'"),
        (
            {"a": [{TOOL_VALUE_TAG: "object"}]},
            "$.a[0]: a 'object' tool value must have exactly the keys "
            "'$lash_tool_value' and 'entries', got extra keys []",
        ),
        (
            {TOOL_VALUE_TAG: "object", "entries": [1]},
            "$.entries: escaped object entries must be an object",
        ),
        (
            {TOOL_VALUE_TAG: "attachment", "ref": {"id": "nope", "mime": "x", "byte_len": 1}},
            "$.ref: invalid attachment reference: "
            "attachment id 'nope' is not a lowercase hex SHA-256 digest",
        ),
        (
            {TOOL_VALUE_TAG: "attachment", "ref": {"id": IMG_ID}},
            "$.ref: invalid attachment reference: Object missing required field `mime`",
        ),
        ([1.0, math.inf], "$[1]: non-finite number inf is not a tool value"),
        ({"x": math.nan}, "$.x: non-finite number nan is not a tool value"),
        ({"x": {1, 2}}, "$.x: set is not JSON"),
    ],
)
def test_decode_rejects_malformed_input_with_its_path(wire: Any, message: str) -> None:
    with pytest.raises(ToolValueError) as info:
        decode_tool_value(wire)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [math.inf]}, "$.a[0]: non-finite number inf is not a tool value"),
        ({1: "x"}, "$: object key 1 is not a string"),
        ([object()], "$[0]: object is not a tool value"),
        ({"b": b"bytes"}, "$.b: bytes is not a tool value"),
    ],
)
def test_encode_rejects_what_is_not_json(value: Any, message: str) -> None:
    with pytest.raises(ToolValueError) as info:
        encode_tool_value(value)
    assert str(info.value) == message


def test_model_projection_rejects_non_json_values() -> None:
    with pytest.raises(ToolValueError, match=r"^\$\.x: non-finite number nan"):
        model_return_parts(ToolOutput.success({"x": math.nan}))
    with pytest.raises(ToolValueError, match=r"^\$: object key 1 is not a string"):
        model_return_parts(ToolOutput.success({1: "x"}))


def test_wire_form_survives_json_bytes() -> None:
    value = {"k": [image_ref(), {TOOL_VALUE_TAG: {"nested": image_ref("d" * 64)}}]}

    blob = msgspec.json.encode(encode_tool_value(value))

    assert decode_tool_value(msgspec.json.decode(blob)) == value


# --- codec: property test ----------------------------------------------------------------

hex_ids = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
attachments = st.builds(
    AttachmentRef,
    id=hex_ids,
    mime=st.sampled_from(["image/png", "image/jpeg", "application/pdf"]),
    byte_len=st.integers(min_value=0, max_value=2**40),
    width=st.none() | st.integers(min_value=0, max_value=10_000),
    height=st.none() | st.integers(min_value=0, max_value=10_000),
    label=st.none() | st.text(max_size=10),
)
keys = st.sampled_from([TOOL_VALUE_TAG, "ref", "entries", "a", ""]) | st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
tool_values = st.recursive(
    scalars | attachments,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equality that keeps JSON types apart and compares attachments by value."""
    if isinstance(a, AttachmentRef) or isinstance(b, AttachmentRef):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return strict_json_eq(a, b) and type(a) is type(b)


@given(tool_values)
def test_encode_decode_round_trip(value: Any) -> None:
    wire = encode_tool_value(value)
    blob = msgspec.json.encode(wire)

    assert same(decode_tool_value(wire), value)
    assert same(decode_tool_value(msgspec.json.decode(blob)), value)
    assert encode_tool_value(decode_tool_value(wire)) == wire


@given(tool_values)
def test_model_parts_hold_every_attachment_in_order(value: Any) -> None:
    parts = model_return_parts(ToolOutput.success(value))

    refs = tuple(p.ref for p in parts if isinstance(p, AttachmentReturn))
    assert refs == collect_attachments(ToolOutput.success(value))
    # no two text parts are adjacent and none is empty
    for first, second in itertools.pairwise(parts):
        assert not (isinstance(first, TextReturn) and isinstance(second, TextReturn))
    assert all(p.text for p in parts if isinstance(p, TextReturn))
