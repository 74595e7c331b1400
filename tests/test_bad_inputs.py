"""The bad-input corpus: every broken file gives exit 2, one `error:` line, and leaves no file
behind, both from `soundsight info` and inside a `soundsight run` batch. Odd but valid media
(8 channels, 8 kHz, 96 kHz, a video without sound) must simply work."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from support import assert_user_error, run_cli


def sine(sr, seconds=0.5, channels=1, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def make_bad(kind: str, folder: Path) -> tuple[Path, str]:
    """A broken input and a fragment its error line must contain."""
    p = folder / {"directory": "adir.wav", "missing": "missing.wav", "corrupt_png": "bad.png", "truncated_png": "cut.png",
                  "tiny_image": "one.png", "huge_image": "big.png", "text_as_wav": "notes.wav"}.get(kind, f"{kind}.wav")
    if kind == "missing":
        return p, "no such file"
    if kind == "directory":
        p.mkdir()
        return p, "directory"
    if kind == "zero_byte":
        p.write_bytes(b"")
        return p, "empty"
    if kind == "truncated_wav":
        sf.write(p, sine(16000, 1.0), 16000, subtype="PCM_16")
        p.write_bytes(p.read_bytes()[:30])
        return p, str(p.name)
    if kind == "text_as_wav":
        p.write_text("these are my notes, not a sound\n" * 20)
        return p, "not a readable audio file"
    if kind == "nan_samples":
        x = sine(16000)
        x[100] = np.nan
        x[200] = np.inf
        sf.write(p, x, 16000, subtype="FLOAT")
        return p, "nan"
    if kind == "one_sample":
        sf.write(p, np.zeros((1, 1), np.float32) + 0.5, 16000, subtype="PCM_16")
        return p, "too short"
    if kind == "corrupt_png":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
        return p, str(p.name)
    if kind == "truncated_png":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
        p.write_bytes(p.read_bytes()[:400])
        return p, str(p.name)
    if kind == "tiny_image":
        Image.new("RGB", (1, 1)).save(p)
        return p, "1x1"
    if kind == "huge_image":
        Image.new("L", (400, 300)).save(p)  # over the limit the test sets below
        return p, "over the limit"
    raise ValueError(kind)


KINDS = ["missing", "directory", "zero_byte", "truncated_wav", "text_as_wav", "nan_samples", "one_sample",
         "corrupt_png", "truncated_png", "tiny_image", "huge_image"]
LIMIT = {"SOUNDSIGHT_MAX_PIXELS": "100000"}


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("kind", KINDS)
def test_info_rejects_bad_input(tmp_path, kind):
    path, fragment = make_bad(kind, tmp_path)
    before = files_in(tmp_path)
    assert_user_error(run_cli("info", path, env=LIMIT), fragment)
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("kind", KINDS)
def test_run_rejects_bad_input(tmp_path, kind):
    path, fragment = make_bad(kind, tmp_path)
    (tmp_path / "out").mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"version: 1\nsteps:\n  - step: info\n    with: {{input: '{path}', out: out/report.json}}\n")
    before = files_in(tmp_path)
    r = run_cli("run", recipe, env=LIMIT)
    # the batch's one line names the input's own problem; a crash inside the step would also
    # exit 2 here ("1 of 1 item(s) failed: internal error: ..."), so that is ruled out explicitly
    assert_user_error(r, fragment)
    assert "internal error" not in r.err
    if kind != "missing":  # a missing input is refused while the recipe is checked, before running
        assert "1 of 1 item(s) failed" in r.err
    assert files_in(tmp_path) == before


def test_unwritable_output_folder(tmp_path):
    wav = tmp_path / "ok.wav"
    sf.write(wav, sine(16000), 16000)
    if os.geteuid() == 0:  # root writes through permission bits; /proc refuses new files to anyone
        out_dir = Path("/proc")
    else:
        out_dir = tmp_path / "ro"
        out_dir.mkdir()
        out_dir.chmod(0o500)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"version: 1\nsteps:\n  - step: info\n    with: {{input: '{wav}', out: '{out_dir}/report.json'}}\n")
    before = files_in(tmp_path)
    assert_user_error(run_cli("run", recipe))
    assert files_in(tmp_path) == before


def test_malformed_yaml(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps: [ {step: info, with: {input: x\n")
    assert_user_error(run_cli("run", recipe), "not valid YAML")


@pytest.mark.parametrize("channels,sr", [(8, 44100), (1, 8000), (2, 96000)])
def test_odd_but_valid_audio_works(tmp_path, channels, sr):
    path = tmp_path / f"x{channels}_{sr}.wav"
    sf.write(path, sine(sr, channels=channels), sr, subtype="PCM_24")
    r = run_cli("info", path, "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)[0]
    assert (d["channels"], d["samplerate"]) == (channels, sr)
    assert d["duration_s"] == pytest.approx(0.5, abs=1e-3)
    assert d["peak_dbfs"] == pytest.approx(-6.02, abs=0.1)
    assert d["rms_dbfs"] == pytest.approx(-9.03, abs=0.1)


def test_video_without_audio_is_reported(tmp_path):
    from soundsight.video import write_video

    frames = np.zeros((10, 32, 48, 3), np.uint8)
    path = tmp_path / "silent.mp4"
    write_video(path, frames, 10)
    r = run_cli("info", path, "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)[0]
    assert d["has_audio"] is False and (d["width"], d["height"], d["frames"]) == (48, 32, 10)


def test_many_files_one_bad(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, sine(16000), 16000)
    r = run_cli("info", good, tmp_path / "nope.wav")
    assert_user_error(r, "no such file")
    assert "good.wav" in r.out
