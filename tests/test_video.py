import os

import numpy as np
import pytest

from conftest import sine
from soundsight import video
from soundsight.errors import InputError, OutputError
from soundsight.outputs import read_provenance


def _err(fn, *a, **k) -> str:
    with pytest.raises(InputError) as info:
        fn(*a, **k)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def smooth_frames(t=20, h=48, w=48) -> np.ndarray:
    """Frames that compress well: a gradient whose brightness steps with the frame index."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (xx * 200 // max(w - 1, 1))
        out[i, ..., 1] = (yy * 200 // max(h - 1, 1))
        out[i, ..., 2] = 10 * i
    return out


def test_probe(mp4_path, mp4_no_audio):
    info = video.probe_video(mp4_path)
    assert info["fps"] == 10 and info["frames"] == 20 and abs(info["duration"] - 2.0) < 0.05
    assert (info["width"], info["height"]) == (48, 48)
    assert info["has_audio"] and info["audio_samplerate"] == 16000
    silent = video.probe_video(mp4_no_audio)
    assert silent["has_audio"] is False and silent["audio_samplerate"] is None


def test_read_frames_native_and_resampled(mp4_path):
    frames, fps = video.read_frames(mp4_path)
    assert fps == 10 and frames.shape == (20, 48, 48, 3) and frames.dtype == np.uint8
    fast, fps2 = video.read_frames(mp4_path, fps=25, size=(32, 24))
    assert fps2 == 25 and fast.shape == (50, 24, 32, 3)
    slow, _ = video.read_frames(mp4_path, fps=5)
    assert slow.shape[0] == 10
    assert np.array_equal(slow[3], frames[6])  # t = 0.6 s shows source frame 6
    part, _ = video.read_frames(mp4_path, start=1.0, max_frames=4)
    assert part.shape[0] == 4 and np.array_equal(part[0], frames[10])
    keep_aspect, _ = video.read_frames(mp4_path, size=(24, None), max_frames=1)
    assert keep_aspect.shape == (1, 24, 24, 3)
    assert len(list(video.iter_frames(mp4_path, max_frames=3))) == 3
    with pytest.raises(InputError, match="past the end"):
        video.read_frames(mp4_path, start=5.0)


def test_read_audio_track(mp4_path, mp4_no_audio):
    a = video.read_audio_track(mp4_path, 16000)
    assert a.dtype == np.float32 and a.shape[0] == 1 and abs(a.shape[1] - 32000) < 1100
    ref = sine(440, 16000, a.shape[1] / 16000)[0]
    corr = np.abs(np.correlate(a[0, 2000:6000], ref[:800], mode="valid")).max()
    assert corr / (np.linalg.norm(a[0, 2000:2800]) * np.linalg.norm(ref[:800])) > 0.9
    st = video.read_audio_track(mp4_path, 8000, channels=2)
    assert st.shape[0] == 2
    assert _err(video.read_audio_track, mp4_no_audio, 16000) == f"{mp4_no_audio} has no audio track"


def test_write_and_read_back(tmp_path):
    frames = smooth_frames()
    tone = sine(440, 16000, 2.5)  # longer than the video: trimmed to 2.0 s
    prov = {"command": "soundsight test", "seed": 0}
    out = video.write_video(tmp_path / "out.mp4", frames, 10, audio=tone, sr=16000, provenance=prov)
    assert read_provenance(out) == prov
    assert sorted(os.listdir(tmp_path)) == ["out.mp4", "out.mp4.soundsight.json"]
    info = video.probe_video(out)
    assert info["fps"] == 10 and info["frames"] == 20 and info["has_audio"]
    assert (info["width"], info["height"]) == (48, 48)
    back, _ = video.read_frames(out)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 4
    a = video.read_audio_track(out, 16000)
    assert abs(a.shape[1] - 32000) < 1100
    spec = np.abs(np.fft.rfft(a[0, 4000:20000]))
    assert abs(np.argmax(spec) * 16000 / 16000 - 440) <= 2


def test_write_odd_size_float_frames_short_audio(tmp_path, capsys):
    frames = smooth_frames(t=12, h=33, w=47).astype(np.float32) / 255.0
    out = video.write_video(tmp_path / "odd.mp4", frames, 12, audio=sine(seconds=0.3, amplitude=1.5), sr=16000)
    info = video.probe_video(out)
    assert (info["width"], info["height"]) == (48, 34) and info["frames"] == 12
    assert "lowered the level" in capsys.readouterr().err  # audio peak limited, not clipped
    back, _ = video.read_frames(out)
    assert np.abs(back[:, :33, :47].astype(int) - np.rint(frames * 255).astype(int)).mean() < 4
    assert video.read_audio_track(out, 16000).shape[1] >= 15000  # padded to the 1 s video


def test_write_silent_and_quiet(tmp_path, capfd):
    out = video.write_video(tmp_path / "s.mp4", smooth_frames(t=5), 5)
    assert not video.probe_video(out)["has_audio"]
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_write_errors_leave_nothing(tmp_path):
    with pytest.raises(OutputError):
        video.write_video(tmp_path / "x.gif", smooth_frames(t=2), 5)
    bad = [np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(ValueError):
        video.write_video(tmp_path / "x.mp4", bad, 5, provenance={"a": 1})
    assert os.listdir(tmp_path) == []


def test_bad_inputs(tmp_path, mp4_path):
    assert _err(video.probe_video, tmp_path / "no.mp4") == f"no such file: {tmp_path / 'no.mp4'}"
    assert "is a directory" in _err(video.probe_video, tmp_path)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4000))
    assert "is not a readable video file" in _err(video.probe_video, garbage)
    data = mp4_path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    msg = _err(video.read_frames, cut)
    assert "not a readable video file" in msg or "truncated" in msg
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(str(wav), sine()[0], 16000)
    assert _err(video.probe_video, wav) == f"{wav} has no video stream"


def test_truncated_after_header(tmp_path):
    # moov atom first (+faststart), then half the frame data: the header reads fine,
    # decoding runs out of pictures
    full = video.write_video(tmp_path / "full.mp4", (np.random.default_rng(0).random((40, 48, 48, 3)) * 255).astype(np.uint8), 10)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in _err(video.read_frames, cut)
