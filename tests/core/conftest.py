"""Fixtures of the core tests: small in-memory images, the seed images, encoding helpers."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

SEED_IMAGES = Path("/work/shared/images")
if not SEED_IMAGES.is_dir():  # checkouts elsewhere keep the images beside the repo
    SEED_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "images"


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    """Encode a Pillow image to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient_rgb(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """A small (H, W, 3) uint8 image with smooth regions and some noise: many colours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 4 % 256],
        axis=2,
    ).astype(np.int16)
    img += rng.integers(-6, 7, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def small_rgb() -> np.ndarray:
    return gradient_rgb()


@pytest.fixture
def small_png(small_rgb: np.ndarray) -> bytes:
    return encode(Image.fromarray(small_rgb))


@pytest.fixture(scope="session")
def baby_bytes() -> bytes:
    path = SEED_IMAGES / "baby.jpg"
    if not path.exists():
        pytest.skip(f"seed image {path} missing")
    return path.read_bytes()


@pytest.fixture(scope="session")
def baby_path() -> Path:
    path = SEED_IMAGES / "baby.jpg"
    if not path.exists():
        pytest.skip(f"seed image {path} missing")
    return path
