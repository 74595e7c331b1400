import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import make_png
from soundsight import image
from soundsight.errors import InputError, OutputError
from soundsight.outputs import PNG_KEY, read_provenance, sidecar_path


def _err(fn, *a, **k) -> str:
    with pytest.raises(InputError) as info:
        fn(*a, **k)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "1", "YCbCr"])
def test_modes_become_rgb(tmp_path, mode):
    ext = "jpg" if mode in ("CMYK", "YCbCr") else "png"
    p = make_png(tmp_path / f"m.{ext}", size=(32, 24), mode=mode)
    img = image.load_image(p)
    assert img.mode == "RGB" and img.size == (32, 24)


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((10, 12, 4), np.uint8)
    a[..., 0] = 255  # red
    a[:, :6, 3] = 255  # left half opaque, right half transparent
    p = tmp_path / "rgba.png"
    Image.fromarray(a).save(p)
    arr = image.image_to_array(image.load_image(p))
    assert arr.shape == (10, 12, 3)
    assert (arr[:, :6] == [255, 0, 0]).all() and (arr[:, 6:] == [255, 255, 255]).all()


def test_la_and_palette_transparency(tmp_path):
    la = Image.new("LA", (10, 10), (0, 0))
    la.save(tmp_path / "la.png")
    assert (image.image_to_array(image.load_image(tmp_path / "la.png")) == 255).all()
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.save(tmp_path / "p.png", transparency=0)
    assert (image.image_to_array(image.load_image(tmp_path / "p.png")) == 255).all()


def test_sixteen_bit_grey(tmp_path):
    a = (np.linspace(0, 65535, 16 * 16).reshape(16, 16)).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    arr = image.image_to_array(image.load_image(p))
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    assert np.allclose(arr[..., 0], a / 257.0, atol=1)


def test_exif_orientation(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = [255, 0, 0]  # left half red, right half blue, stored 40 wide x 20 high
    a[:, 20:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "rot.jpg"
    Image.fromarray(a).save(p, exif=exif.tobytes(), quality=95)
    info = image.probe_image(p)
    assert info["exif_orientation"] == 6 and (info["width"], info["height"]) == (20, 40)
    arr = image.image_to_array(image.load_image(p))
    assert arr.shape == (40, 20, 3)
    # after rotating clockwise, the stored left (red) is on top
    assert arr[2, 10, 0] > 200 and arr[2, 10, 2] < 60
    assert arr[-3, 10, 2] > 200 and arr[-3, 10, 0] < 60


def test_probe(png_path):
    assert image.probe_image(png_path) == {
        "path": str(png_path), "format": "PNG", "width": 32, "height": 24, "mode": "RGB",
        "exif_orientation": None,
    }


# ---------------------------------------------------------------- bad inputs


def test_missing_directory_empty(tmp_path):
    assert _err(image.load_image, tmp_path / "no.png") == f"no such file: {tmp_path / 'no.png'}"
    assert "is a directory" in _err(image.load_image, tmp_path)
    (tmp_path / "e.png").write_bytes(b"")
    assert "empty" in _err(image.load_image, tmp_path / "e.png")
    (tmp_path / "t.png").write_text("hello")
    assert _err(image.load_image, tmp_path / "t.png") == f"{tmp_path / 't.png'} is not a readable image file"


def test_corrupt_png(tmp_path, png_path):
    data = bytearray(png_path.read_bytes())
    idat = data.index(b"IDAT")
    for i in range(idat + 4, min(idat + 40, len(data) - 12)):
        data[i] ^= 0xFF
    p = tmp_path / "bad.png"
    p.write_bytes(bytes(data))
    assert "corrupt or truncated" in _err(image.load_image, p)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated(tmp_path, ext):
    src = make_png(tmp_path / f"big.{ext}", size=(64, 64))
    data = src.read_bytes()
    p = tmp_path / f"cut.{ext}"
    p.write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in _err(image.load_image, p)


def test_too_small(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    assert _err(image.load_image, tmp_path / "dot.png") == (
        f"{tmp_path / 'dot.png'} is 1x1 pixels; at least 8x8 is needed"
    )
    Image.new("RGB", (100, 4)).save(tmp_path / "thin.png")
    assert "is 100x4 pixels" in _err(image.load_image, tmp_path / "thin.png")
    assert image.load_image(tmp_path / "thin.png", min_side=4).size == (100, 4)


def test_pixel_limit_from_env(png_path, monkeypatch):
    monkeypatch.setenv("SOUNDSIGHT_MAX_PIXELS", "500")
    msg = _err(image.load_image, png_path)
    assert msg == (
        f"{png_path} is 32 x 24 = 768 pixels, over the limit of 500 "
        "(set SOUNDSIGHT_MAX_PIXELS to raise it)"
    )
    assert "over the limit" in _err(image.probe_image, png_path)
    monkeypatch.setenv("SOUNDSIGHT_MAX_PIXELS", "1000")
    assert image.load_image(png_path).size == (32, 24)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_header_claims_huge_size(tmp_path):
    # 100000 x 100000 RGB in the header, a few bytes of data: must fail before decoding
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
           + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _png_chunk(b"IEND", b""))
    p = tmp_path / "bomb.png"
    p.write_bytes(png)
    assert "100000 x 100000 = 10000000000 pixels, over the limit of 64000000" in _err(image.load_image, p)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard restored


def test_raising_limit_beyond_pillows(tmp_path, monkeypatch):
    ihdr = struct.pack(">IIBBBBB", 20_000, 10_000, 8, 0, 0, 0, 0)  # 200 M grey pixels
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
           + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _png_chunk(b"IEND", b""))
    p = tmp_path / "wide.png"
    p.write_bytes(png)
    monkeypatch.setenv("SOUNDSIGHT_MAX_PIXELS", str(300_000_000))
    info = image.probe_image(p)  # header only: allowed now, Pillow's 179 M cap does not apply
    assert (info["width"], info["height"]) == (20_000, 10_000)


def test_bad_env_limit(png_path, monkeypatch):
    monkeypatch.setenv("SOUNDSIGHT_MAX_PIXELS", "lots")
    assert "SOUNDSIGHT_MAX_PIXELS" in _err(image.load_image, png_path)


# ---------------------------------------------------------------- arrays, saving, grids


def test_array_round_trip():
    a = (np.random.default_rng(0).random((9, 11, 3)) * 255).astype(np.uint8)
    assert np.array_equal(image.image_to_array(image.array_to_image(a)), a)
    f = image.array_to_image(np.full((4, 5, 3), 0.5))
    assert image.image_to_array(f)[0, 0, 0] == 128
    assert image.array_to_image(np.zeros((4, 5))).mode == "L"
    with pytest.raises(ValueError):
        image.array_to_image(np.zeros((4, 5, 2)))


def test_png_provenance_round_trip(tmp_path):
    prov = {"command": "soundsight imagine a.wav", "seed": 3, "models": {"m": "abc"}}
    out = image.save_image(tmp_path / "o.png", np.zeros((8, 8, 3), np.uint8), provenance=prov)
    assert read_provenance(out) == prov
    assert json.loads(Image.open(out).text[PNG_KEY]) == prov
    assert not sidecar_path(out).exists()
    assert sorted(os.listdir(tmp_path)) == ["o.png"]


def test_jpeg_gets_sidecar(tmp_path):
    prov = {"seed": 1}
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    out = image.save_image(tmp_path / "o.jpg", rgba, provenance=prov)
    assert read_provenance(out) == prov and sidecar_path(out).exists()
    assert image.image_to_array(image.load_image(out)).min() > 240  # alpha -> white


def test_save_image_atomic(tmp_path, monkeypatch):
    def broken(self, fp, *a, **k):
        open(fp, "wb").write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OutputError):
        image.save_image(tmp_path / "x.jpg", np.zeros((8, 8, 3), np.uint8), provenance={"a": 1})
    assert os.listdir(tmp_path) == []
    with pytest.raises(OutputError):
        image.save_image(tmp_path / "x.gifx", np.zeros((8, 8, 3), np.uint8))


def test_make_grid():
    imgs = [np.full((10, 20, 3), i * 40, np.uint8) for i in range(5)]
    g = image.make_grid(imgs, pad=2)
    assert g.size == (3 * 20 + 4 * 2, 2 * 10 + 3 * 2)
    strip = image.make_grid(imgs, rows=1, pad=0)
    assert strip.size == (100, 10)
    a = image.image_to_array(strip)
    assert a[0, 25, 0] == 40 and a[0, 85, 0] == 160
    mixed = image.make_grid([Image.new("RGB", (4, 4), (0, 0, 0)), Image.new("RGB", (8, 6))], cols=2, pad=1)
    assert mixed.size == (2 * 8 + 3, 6 + 2)
    with pytest.raises(ValueError):
        image.make_grid(imgs, rows=1, cols=2)
    with pytest.raises(ValueError):
        image.make_grid([])
