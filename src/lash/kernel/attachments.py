"""Attachment references: the lightweight, byte-free handles the kernel stores."""

from __future__ import annotations

import re
from enum import StrEnum

import msgspec

_CONTENT_ID = re.compile(r"^[0-9a-f]{64}$")


class ImageMediaType(StrEnum):
    """Image formats the kernel knows how to name."""

    PNG = "png"
    JPEG = "jpeg"
    GIF = "gif"
    WEBP = "webp"
    BMP = "bmp"

    @classmethod
    def from_mime(cls, mime: str) -> ImageMediaType | None:
        """Parse a MIME type (``image/jpg`` is accepted as JPEG); None for non-images."""
        text = mime.strip().lower()
        if not text.startswith("image/"):
            return None
        sub = text[len("image/") :]
        if sub == "jpg":
            sub = "jpeg"
        try:
            return cls(sub)
        except ValueError:
            return None

    @property
    def canonical_mime(self) -> str:
        """The canonical MIME string, e.g. ``image/jpeg``."""
        return f"image/{self.value}"


def media_type_from_mime(mime: str) -> str:
    """Normalize a MIME type: canonical for images, trimmed and lowercased otherwise."""
    image = ImageMediaType.from_mime(mime)
    if image is not None:
        return image.canonical_mime
    return mime.strip().lower()


def is_content_id(value: str) -> bool:
    """True when ``value`` is a lowercase hex SHA-256 digest (an attachment id)."""
    return bool(_CONTENT_ID.fullmatch(value))


class AttachmentRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A reference to stored attachment bytes, identified by content hash.

    ``id`` is the lowercase hex SHA-256 of the bytes; ``mime`` is canonical.
    """

    id: str
    mime: str
    byte_len: int
    width: int | None = None
    height: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not is_content_id(self.id):
            raise ValueError(f"attachment id {self.id!r} is not a lowercase hex SHA-256 digest")
        if self.byte_len < 0:
            raise ValueError(f"attachment {self.id}: byte_len must be >= 0, got {self.byte_len}")

    @property
    def is_image(self) -> bool:
        """True when the attachment is an image."""
        return ImageMediaType.from_mime(self.mime) is not None
