"""Failure classification: HTTP status + vendor code + message text → retry decision.

One table-driven function decides, for every provider, whether a failed call is
worth retrying and which terminal reason it carries. The text rules run over the
vendor code, message and raw body, lowercased.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ..kernel.llm import LlmCallError, TerminalReason

__all__ = [
    "Classification",
    "FailureKind",
    "classify_failure",
    "make_call_error",
    "redact",
]


class FailureKind(StrEnum):
    """What went wrong; its value is the ``LlmCallError.code``."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    HTTP_RETRYABLE = "http_retryable"
    AUTH = "auth"
    VALIDATION = "validation"
    CONTEXT_OVERFLOW = "context_overflow"
    CONTENT_FILTER = "content_filter"
    QUOTA = "quota"
    UNSUPPORTED = "unsupported"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    TRANSPORT = "transport"
    MALFORMED = "malformed_response"
    STREAM_ERROR = "stream_error"
    HTTP_ERROR = "http_error"


@dataclass(frozen=True, slots=True)
class Classification:
    """The classifier's verdict on one failure."""

    kind: FailureKind
    retryable: bool
    terminal_reason: TerminalReason = TerminalReason.PROVIDER_ERROR


# 529 is Anthropic's "overloaded" status: a busy server, worth another try.
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
_AUTH_STATUS = frozenset({401, 403})
_VALIDATION_STATUS = frozenset({400, 413, 422})

_CONTEXT_OVERFLOW = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "exceeds the maximum number of tokens",  # Gemini: "input token count ... exceeds ..."
    "prompt is too long",
    "too many tokens",
    "request too large",
    "input is too long",
    "token limit exceeded",
)
_RATE_LIMIT_WORDING = (
    "rate limit",
    "rate_limit",
    "throttl",
    "too many requests",
    "tokens per minute",
    "tpm",
    "quota",
)
_HARD_QUOTA = ("insufficient_quota", "usage_limit_reached", "usage_not_included")
_CONTENT_FILTER = ("content_filter", "prohibited_content", "safety", "sensitive")
_UNSUPPORTED = ("model_not_found", "unsupported model", "does not exist")
# Vendor codes for a busy or failing server: worth another try when they come
# with a 5xx status or in an error event inside a 200 stream.
_RETRYABLE_CODES = frozenset(
    {
        "server_error",
        "internal_server_error",
        "service_unavailable",
        "temporarily_unavailable",
        "overloaded",
        "overloaded_error",
        "rate_limit_exceeded",
        "rate_limit_error",
        "api_error",
    }
)


def _has(text: str, needles: Iterable[str]) -> bool:
    return any(n in text for n in needles)


def classify_failure(
    *,
    status: int | None = None,
    code: str | None = None,
    message: str = "",
    raw: str | None = None,
    transport: bool = False,
    timeout: bool = False,
    in_stream: bool = False,
) -> Classification:
    """Classify one failure.

    ``transport``/``timeout`` mark failures without an HTTP status (connection
    reset, stalled stream); ``in_stream`` marks an error event inside a 200 stream,
    retryable only for the overload/server codes vendors use for that. A 5xx
    status outside the standard retryable set (e.g. 501) is retried only with
    one of those codes (``overloaded_error``, ``api_error``...).
    """
    text = " ".join(x for x in (code, message, raw) if x).lower()
    if _has(text, _CONTEXT_OVERFLOW) and not _has(text, _RATE_LIMIT_WORDING):
        return Classification(FailureKind.CONTEXT_OVERFLOW, False, TerminalReason.CONTEXT_OVERFLOW)
    # A bare "quota" on a 429 is usually a per-minute limit (retryable); the
    # billing codes are not.
    if _has(text, _HARD_QUOTA) or ("quota" in text and status != 429):
        return Classification(FailureKind.QUOTA, False)
    if _has(text, _CONTENT_FILTER) and (status is None or status < 500):
        return Classification(FailureKind.CONTENT_FILTER, False, TerminalReason.CONTENT_FILTER)
    if status is not None:
        if status == 429:
            return Classification(FailureKind.RATE_LIMITED, True)
        if status in _RETRYABLE_STATUS:
            kind = FailureKind.SERVER_ERROR if status >= 500 else FailureKind.HTTP_RETRYABLE
            return Classification(kind, True)
        if status in _AUTH_STATUS:
            return Classification(FailureKind.AUTH, False)
        if _has(text, _UNSUPPORTED):
            return Classification(FailureKind.UNSUPPORTED, False)
        if status in _VALIDATION_STATUS:
            return Classification(FailureKind.VALIDATION, False)
        if status == 404:
            return Classification(FailureKind.NOT_FOUND, False)
        if status >= 500 and not in_stream:
            retryable = (code or "").lower() in _RETRYABLE_CODES
            return Classification(FailureKind.SERVER_ERROR, retryable)
        if not in_stream:
            return Classification(FailureKind.HTTP_ERROR, False)
    if timeout:
        return Classification(FailureKind.TIMEOUT, True)
    if transport:
        return Classification(FailureKind.TRANSPORT, True)
    if in_stream:
        retryable = (code or "").lower() in _RETRYABLE_CODES or (
            status is not None and (status == 429 or status >= 500)
        )
        return Classification(FailureKind.STREAM_ERROR, retryable)
    if _has(text, _UNSUPPORTED):
        return Classification(FailureKind.UNSUPPORTED, False)
    return Classification(FailureKind.HTTP_ERROR, False)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-trivial secret replaced by ``[REDACTED]``."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def make_call_error(
    message: str,
    classification: Classification,
    *,
    raw: str | None = None,
    secrets: Iterable[str] = (),
) -> LlmCallError:
    """An ``LlmCallError`` for ``classification`` with secrets scrubbed from the text."""
    secrets = tuple(secrets)
    return LlmCallError(
        message=redact(message, secrets),
        retryable=classification.retryable,
        code=classification.kind.value,
        raw=None if raw is None else redact(raw, secrets),
        terminal_reason=classification.terminal_reason,
    )
