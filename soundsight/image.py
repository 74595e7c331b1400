"""Image I/O: probe, load (always RGB), save with provenance, grids.

- ``load_image`` returns an 8-bit RGB ``PIL.Image`` with the EXIF orientation applied. Images
  with transparency (RGBA, LA, PA, palette with a transparent colour) are composited on
  **white**; 16-bit and float greyscale are scaled to 8 bits; CMYK/YCbCr/LAB/1-bit are converted.
- Decompression-bomb guard: an image with more than ``max_pixels()`` pixels is refused from
  its header, before any pixel is decoded. The limit is ``MAX_PIXELS`` (64 million) unless the
  environment variable ``SOUNDSIGHT_MAX_PIXELS`` says otherwise.
- Every problem with an input raises ``InputError`` with one line naming the file.

Pillow is imported inside functions so importing this module stays fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from soundsight.errors import InputError, OutputError
from soundsight.inputs import check_input_file

MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "SOUNDSIGHT_MAX_PIXELS"

#: extension -> Pillow format name for ``save_image``
WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}

_pil_lock = threading.Lock()


def max_pixels() -> int:
    """The pixel limit in force: ``SOUNDSIGHT_MAX_PIXELS`` if set, else ``MAX_PIXELS``."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return int(MAX_PIXELS)
    try:
        value = int(float(raw.replace("_", "")))
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{MAX_PIXELS_ENV} must be a positive whole number, got '{raw}'")
    return value


def _check_file(path) -> Path:
    return check_input_file(path, "image file")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.rstrip(".") or type(exc).__name__


def _check_pixels(path, width: int, height: int) -> None:
    limit = max_pixels()
    n = int(width) * int(height)
    if n > limit:
        raise InputError(
            f"{path} is {width} x {height} = {n} pixels, over the limit of {limit} "
            f"(set {MAX_PIXELS_ENV} to raise it)"
        )


@contextlib.contextmanager
def _open(path):
    """Open lazily (header only) with our own pixel limit in place of Pillow's."""
    from PIL import Image, UnidentifiedImageError

    p = _check_file(path)
    with _pil_lock:  # Pillow's limit is a module global: swap it under a lock
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(p)
        except UnidentifiedImageError:
            raise InputError(f"{path} is not a readable image file") from None
        except Image.DecompressionBombError as exc:  # pragma: no cover - limit disabled above
            raise InputError(f"{path}: {_reason(exc)}") from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise InputError(f"{path} is corrupt or truncated ({_reason(exc)})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    try:
        _check_pixels(path, *im.size)
        yield im
    finally:
        im.close()


def _orientation(im) -> int | None:
    try:
        value = im.getexif().get(0x0112)
    except Exception:
        return None
    return int(value) if value else None


def probe_image(path) -> dict:
    """path, format, width, height, mode, exif_orientation — from the header only.

    ``width``/``height`` are as displayed, i.e. after the EXIF orientation (swapped for
    orientations 5-8). The pixel data is not decoded, so truncation is only found by
    ``load_image``.
    """
    with _open(path) as im:
        w, h = im.size
        orient = _orientation(im)
        if orient in (5, 6, 7, 8):
            w, h = h, w
        return {
            "path": str(path),
            "format": im.format,
            "width": int(w),
            "height": int(h),
            "mode": im.mode,
            "exif_orientation": orient,
        }


def _to_rgb(im):
    """Any Pillow mode -> 8-bit RGB; transparency is composited on white."""
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            top = 1.0 if a.size and np.nanmax(a) <= 1.0 else 255.0
        elif mode == "I" and a.size and a.max() <= 255 and a.min() >= 0:
            top = 255.0
        else:
            top = 65535.0
        a = np.nan_to_num(a, nan=0.0, posinf=top, neginf=0.0)
        g = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(g).convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    if im.mode == "RGBA":
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def load_image(path, *, min_side: int = 8):
    """Load an image as 8-bit RGB ``PIL.Image`` with its EXIF orientation applied.

    The whole image is decoded here, so truncated or corrupt files fail now, not later.
    """
    from PIL import ImageOps

    with _open(path) as im:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im.load()
                out = ImageOps.exif_transpose(im)
                out = _to_rgb(out)
                out.load()
        except InputError:
            raise
        except MemoryError:
            raise InputError(f"{path} is too large to decode in memory") from None
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors…
            raise InputError(f"{path} is corrupt or truncated ({_reason(exc)})") from None
        if out is im:
            out = im.copy()
    w, h = out.size
    if min(w, h) < min_side:
        raise InputError(f"{path} is {w}x{h} pixels; at least {min_side}x{min_side} is needed")
    return out


def image_to_array(img) -> np.ndarray:
    """PIL image (any mode) -> uint8 array (H, W, 3)."""
    if img.mode != "RGB":
        img = _to_rgb(img)
    return np.array(img, dtype=np.uint8, copy=True)


def array_to_image(arr):
    """uint8 or float [0, 1] array -> PIL image: (H, W) -> L, (H, W, 3) -> RGB, (H, W, 4) -> RGBA."""
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError("image array contains NaN or infinite values")
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"integer image array must be within 0..255, got {a.min()}..{a.max()}")
        a = a.astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))  # uint8: (H, W) L, (.., 3) RGB, (.., 4) RGBA


def _as_image(img_or_array):
    from PIL import Image

    if isinstance(img_or_array, Image.Image):
        return img_or_array
    return array_to_image(img_or_array)


def save_image(path, img_or_array, *, provenance: dict | None = None, quality: int = 95) -> Path:
    """Write an image atomically; format from the extension.

    PNG carries the provenance inside, as a text chunk under ``outputs.PNG_KEY`` (JSON);
    other formats get a ``<name>.soundsight.json`` sidecar (written first, removed again if
    the image cannot be written). JPEG drops alpha (composited on white).
    """
    from PIL import PngImagePlugin

    from soundsight.outputs import PNG_KEY, atomic_path, sidecar_path, write_sidecar

    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        names = ", ".join(sorted(e for e in WRITE_FORMATS if e not in (".jpeg", ".tif")))
        raise OutputError(f"cannot write an image as '{path.suffix or path.name}' ({path}); use one of {names}")
    img = _as_image(img_or_array)
    kwargs: dict = {}
    if fmt == "JPEG":
        if img.mode not in ("RGB", "L"):
            img = _to_rgb(img)
        kwargs.update(quality=int(quality), subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        kwargs.update(quality=int(quality))
    elif fmt == "PNG" and img.mode not in ("RGB", "RGBA", "L", "LA", "P", "I", "I;16", "1"):
        img = _to_rgb(img)
    elif img.mode not in ("RGB", "RGBA", "L"):
        img = _to_rgb(img)

    sidecar = None
    if provenance is not None:
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_text(PNG_KEY, json.dumps(provenance, sort_keys=True, default=str))
            kwargs["pnginfo"] = info
        else:
            sidecar = write_sidecar(path, provenance)
    try:
        with atomic_path(path) as tmp:
            try:
                img.save(tmp, format=fmt, **kwargs)
            except (OSError, ValueError) as exc:
                raise OutputError(f"could not write {path}: {_reason(exc)}") from None
    except BaseException:
        if sidecar is not None:
            with contextlib.suppress(OSError):
                sidecar_path(path).unlink()
        raise
    return path


def make_grid(
    images: Sequence, rows: int | None = None, cols: int | None = None, pad: int = 2,
    bg: tuple = (255, 255, 255),
):
    """Tile images (PIL or arrays) in a grid, row by row, with ``pad`` pixels between cells
    and around the border. Cells are as large as the largest image; smaller ones are centred.
    With neither ``rows`` nor ``cols`` the grid is as square as possible (cols >= rows).
    """
    from PIL import Image

    imgs = [_to_rgb(_as_image(i)) for i in images]
    n = len(imgs)
    if n == 0:
        raise ValueError("make_grid needs at least one image")
    if pad < 0:
        raise ValueError("pad must be >= 0")
    if rows is None and cols is None:
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
    elif rows is None:
        rows = math.ceil(n / cols)
    elif cols is None:
        cols = math.ceil(n / rows)
    if rows < 1 or cols < 1 or rows * cols < n:
        raise ValueError(f"a {rows}x{cols} grid cannot hold {n} images")
    cw = max(i.width for i in imgs)
    ch = max(i.height for i in imgs)
    W = cols * cw + (cols + 1) * pad
    H = rows * ch + (rows + 1) * pad
    grid = Image.new("RGB", (W, H), tuple(bg))
    for k, im in enumerate(imgs):
        r, c = divmod(k, cols)
        x = pad + c * (cw + pad) + (cw - im.width) // 2
        y = pad + r * (ch + pad) + (ch - im.height) // 2
        grid.paste(im, (x, y))
    return grid
