"""Typed errors of the core. Each carries a stable snake_case ``code`` for the API's error body
and the HTTP status the API answers with."""

from __future__ import annotations


class KsegError(Exception):
    """Base of every error kseg reports to a user."""

    code: str = "error"
    status: int = 422

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidParameterError(KsegError):
    """A segmentation parameter is out of range or of the wrong kind."""

    code = "invalid_parameter"
    status = 422


class ImageError(KsegError):
    """The uploaded bytes are not an image kseg can segment."""

    code = "invalid_image"
    status = 422


class EmptyImageError(ImageError):
    code = "empty_file"
    status = 422


class UnsupportedImageError(ImageError):
    """Not an image format Pillow can identify."""

    code = "unsupported_image"
    status = 415


class CorruptImageError(ImageError):
    """Identified as an image but it cannot be decoded (truncated or damaged)."""

    code = "corrupt_image"
    status = 422


class ImageTooLargeError(ImageError):
    """More pixels than the configured limit (decompression-bomb guard), checked before decoding."""

    code = "image_too_large"
    status = 413


class QuotaExceededError(KsegError):
    """An owner is over one of its quotas (``shared.quotas``); ``retry_after`` (s) says when
    trying again may succeed (0: not by waiting)."""

    code = "quota_exceeded"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
