"""The ``input_reference`` image of an image-to-video request: checked before it is kept."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from cinecloud.api.errors import ApiError

__all__ = ["InputImage", "read_input_image"]

_FORMATS = {
    "PNG": ("image/png", ".png"),
    "JPEG": ("image/jpeg", ".jpg"),
    "WEBP": ("image/webp", ".webp"),
}
MIN_SIDE = 16
PARAM = "input_reference"


@dataclass(frozen=True)
class InputImage:
    data: bytes
    content_type: str
    ext: str
    width: int
    height: int
    sha256: str


def _bad(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, code, message, PARAM)


async def read_input_image(upload: UploadFile, *, max_bytes: int, max_pixels: int) -> InputImage:
    """Check type, byte size, pixel size and that the image decodes."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _bad("image_too_large", f"input_reference is over {max_bytes} bytes", 413)
    if not data:
        raise _bad("invalid_image", "input_reference is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                width, height = img.size
                if fmt not in _FORMATS:
                    raise _bad(
                        "unsupported_image_type",
                        f"input_reference must be PNG, JPEG or WebP (got {fmt or 'unknown'})",
                    )
                if width * height > max_pixels:
                    raise _bad(
                        "image_too_large",
                        f"input_reference is {width}x{height}; the limit is {max_pixels} pixels",
                    )
                if min(width, height) < MIN_SIDE:
                    raise _bad(
                        "image_too_small",
                        f"input_reference is {width}x{height}; each side must be >= {MIN_SIDE}",
                    )
                img.load()  # decode every pixel: a truncated file fails here
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        raise _bad("invalid_image", f"input_reference does not decode as an image: {exc}") from None
    content_type, ext = _FORMATS[fmt]
    return InputImage(data, content_type, ext, width, height, hashlib.sha256(data).hexdigest())
