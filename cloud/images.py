"""Opening an image someone uploaded (a work-order photo, a resident's face): only the formats asked for, and
never one whose pixel count would make decoding it a memory bomb — checked from its header, before decoding."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

#: the largest image decoded (40 megapixels: any phone camera's photo, not a decompression bomb)
MAX_PIXELS = 40_000_000


class ImageRefused(ValueError):
    """Not an image we take: unreadable, another format, or too many pixels."""


def open_image(data: bytes, formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")) -> Image.Image:
    """The decoded image, or :class:`ImageRefused` with a reason a person can act on."""
    try:
        img = Image.open(io.BytesIO(data), formats=formats)  # no other decoder ever looks at the bytes
    except Image.DecompressionBombError:
        raise ImageRefused(f"the image has too many pixels; at most {MAX_PIXELS // 1_000_000} megapixels") from None
    except (UnidentifiedImageError, OSError):
        raise ImageRefused(f"not an image ({', '.join(formats)} expected)") from None
    if img.format not in formats:
        raise ImageRefused(f"the image must be {' or '.join(formats)}, not {img.format}")
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageRefused(f"the image has {w}×{h} pixels; at most {MAX_PIXELS // 1_000_000} megapixels are taken")
    try:
        img.load()
    except (OSError, Image.DecompressionBombError):
        raise ImageRefused("the image is damaged or cannot be decoded") from None
    return img
