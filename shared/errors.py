"""Typed errors of the core. Each carries a stable snake_case ``code`` for the API's error body
and the HTTP status the API answers with, given as class keywords:
``class E(KsegError, code="…", status=422)``."""

from __future__ import annotations

from typing import Any


class KsegError(Exception):
    """Base of every error kseg reports to a user."""

    code: str = "error"
    status: int = 422

    def __init_subclass__(
        cls, *, code: str | None = None, status: int | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidParameterError(KsegError, code="invalid_parameter", status=422):
    """A segmentation parameter is out of range or of the wrong kind."""


class ImageError(KsegError, code="invalid_image", status=422):
    """The uploaded bytes are not an image kseg can segment."""


class EmptyImageError(ImageError, code="empty_file"):
    """No bytes at all."""


class UnsupportedImageError(ImageError, code="unsupported_image", status=415):
    """Not an image format Pillow can identify."""


class CorruptImageError(ImageError, code="corrupt_image"):
    """Identified as an image but it cannot be decoded (truncated or damaged)."""


class ImageTooLargeError(ImageError, code="image_too_large", status=413):
    """More pixels than the configured limit (decompression-bomb guard), checked before decoding."""


class QuotaExceededError(KsegError, code="quota_exceeded", status=429):
    """An owner is over one of its quotas (``kseg.shared.store.quotas``); ``retry_after`` (s)
    says when trying again may succeed (0: not by waiting)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
