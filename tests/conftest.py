"""Shared fixtures: test media made on the fly (small and fast).

Helpers (importable as ``from conftest import make_wav`` or via the ``media`` fixture):

- ``make_wav(path, freq=440, sr=16000, seconds=1.0, channels=1, amplitude=0.5, subtype=None)``
  writes a sine; the format follows the extension (.wav/.flac/.ogg/.mp3). ``freq`` may be a
  list with one frequency per channel.
- ``make_png(path, size=(32, 24), mode="RGB")`` writes a smooth gradient image (any Pillow
  mode; PNG/JPEG/... from the extension).
- ``make_video(path, frames=20, fps=10, size=(48, 48), audio=True, sr=16000, freq=440)``
  writes an H.264 mp4 (moving gradient + optional AAC sine) with the imageio-ffmpeg binary,
  independently of ``soundsight.video``.

Fixtures: ``wav_path`` (1 s, 16 kHz, mono, 440 Hz), ``stereo_wav`` (1 s, 44.1 kHz, 2 ch),
``png_path`` (32x24 RGB), ``jpeg_path``, ``mp4_path`` (2 s, 10 fps, 48x48, 16 kHz mono 440 Hz
audio), ``mp4_no_audio`` and ``media`` (a namespace with the three helpers).
The mp4 fixtures are session-scoped: treat them as read-only.
"""

from __future__ import annotations

import subprocess
import types
from pathlib import Path

import numpy as np
import pytest


def sine(freq=440.0, sr=16000, seconds=1.0, channels=1, amplitude=0.5) -> np.ndarray:
    """float32 (channels, n) sine; ``freq`` a number or one per channel."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    freqs = list(freq) if isinstance(freq, (list, tuple)) else [freq] * channels
    if len(freqs) != channels:
        raise ValueError("one frequency per channel")
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def make_wav(path, freq=440.0, sr=16000, seconds=1.0, channels=1, amplitude=0.5, subtype=None) -> Path:
    import soundfile as sf

    path = Path(path)
    x = sine(freq, sr, seconds, channels, amplitude)
    sf.write(str(path), x.T, sr, subtype=subtype)
    return path


def make_png(path, size=(32, 24), mode="RGB", **save_kwargs) -> Path:
    from PIL import Image

    path = Path(path)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack(
        [xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 128)], axis=-1
    ).astype(np.uint8)
    img = Image.fromarray(rgb)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, **save_kwargs)
    return path


def make_video(path, frames=20, fps=10, size=(48, 48), audio=True, sr=16000, freq=440.0) -> Path:
    import imageio_ffmpeg

    path = Path(path)
    w, h = size
    seconds = frames / fps
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}:duration={seconds}",
    ]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={sr}:duration={seconds}",
                "-c:a", "aac", "-b:a", "96k"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-frames:v", str(frames), str(path)]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return path


@pytest.fixture
def media():
    return types.SimpleNamespace(make_wav=make_wav, make_png=make_png, make_video=make_video, sine=sine)


@pytest.fixture
def wav_path(tmp_path) -> Path:
    return make_wav(tmp_path / "tone.wav")


@pytest.fixture
def stereo_wav(tmp_path) -> Path:
    return make_wav(tmp_path / "stereo.wav", freq=[440, 660], sr=44100, channels=2)


@pytest.fixture
def png_path(tmp_path) -> Path:
    return make_png(tmp_path / "image.png")


@pytest.fixture
def jpeg_path(tmp_path) -> Path:
    return make_png(tmp_path / "image.jpg", size=(40, 30), quality=95)


@pytest.fixture(scope="session")
def mp4_path(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="session")
def mp4_no_audio(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "silent.mp4", audio=False)


@pytest.fixture(scope="session")
def scene_models(tmp_path_factory):
    """Tiny scene-gen models under their default names in a SOUNDSIGHT_HOME (tests/scene_fixtures.py)."""
    from scene_fixtures import build_scene_models

    return build_scene_models(tmp_path_factory.mktemp("scene-models"))
