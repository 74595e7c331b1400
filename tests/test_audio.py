import math
import os

import numpy as np
import pytest
import soundfile as sf

from conftest import make_wav, sine
from soundsight import audio, console
from soundsight.errors import InputError, OutputError
from soundsight.outputs import read_provenance


@pytest.fixture(autouse=True)
def _loud():
    console.set_quiet(False)
    yield
    console.set_quiet(False)


def peak_freq(x: np.ndarray, sr: int) -> float:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


# ---------------------------------------------------------------- loading and resampling


def test_load_native(wav_path):
    x, sr = audio.load_audio(wav_path)
    assert sr == 16000 and x.dtype == np.float32 and x.shape == (1, 16000)
    assert np.allclose(x[0], sine()[0], atol=1e-4)


def test_resample_keeps_frequency_and_amplitude(tmp_path):
    src = make_wav(tmp_path / "k.wav", freq=1000, sr=44100, seconds=1.0, subtype="FLOAT")
    x, sr = audio.load_audio(src, sr=16000)
    assert sr == 16000 and x.shape == (1, 16000)
    bin_hz = sr / x.shape[1]
    assert abs(peak_freq(x, sr) - 1000) <= bin_hz
    mid = x[0, 1000:-1000]  # away from the filter's edges
    assert abs(np.max(np.abs(mid)) - 0.5) < 0.01
    assert abs(np.sqrt(np.mean(mid**2)) - 0.5 / math.sqrt(2)) < 0.005


@pytest.mark.parametrize("rate", [8000, 96000])
def test_unusual_rates(tmp_path, rate):
    src = make_wav(tmp_path / f"r{rate}.wav", freq=1000, sr=rate, seconds=0.5)
    x, sr = audio.load_audio(src, sr=22050)
    assert sr == 22050 and abs(x.shape[1] - 11025) <= 1
    assert abs(peak_freq(x, sr) - 1000) <= 2 * sr / x.shape[1]
    info = audio.probe_audio(src)
    assert info["samplerate"] == rate and info["frames"] == rate // 2


def test_downmix_eight_channels(tmp_path):
    freqs = [200 + 100 * i for i in range(8)]
    src = make_wav(tmp_path / "oct.wav", freq=freqs, channels=8, amplitude=0.1, subtype="FLOAT")
    raw, _ = audio.load_audio(src)
    assert raw.shape == (8, 16000)
    mono, _ = audio.load_audio(src, channels=1)
    assert mono.shape == (1, 16000)
    assert np.allclose(mono[0], raw.mean(axis=0), atol=1e-6)
    stereo, _ = audio.load_audio(src, channels=2)
    assert stereo.shape == (2, 16000)
    # FL only reaches the left, FR only the right; LFE (ch 3) nowhere
    spec_l = np.abs(np.fft.rfft(stereo[0]))
    spec_r = np.abs(np.fft.rfft(stereo[1]))
    assert spec_l[200] > 10 * spec_l[300] + 1 and spec_r[300] > 10 * spec_r[200] + 1
    assert spec_l[500] < 1e-3 * spec_l[200] and spec_r[500] < 1e-3 * spec_r[300]
    assert np.max(np.abs(stereo)) <= np.max(np.abs(raw)) + 1e-6


def test_mono_to_stereo_duplicates(wav_path):
    x, _ = audio.load_audio(wav_path, channels=2)
    assert x.shape == (2, 16000) and np.array_equal(x[0], x[1])


@pytest.mark.parametrize("ext", ["flac", "ogg", "mp3"])
def test_compressed_round_trip(tmp_path, ext):
    src = make_wav(tmp_path / f"t.{ext}", freq=1000, sr=44100, seconds=0.5, channels=2)
    x, sr = audio.load_audio(src, sr=16000, channels=1)
    assert sr == 16000 and abs(x.shape[1] - 8000) < 1200  # mp3 adds encoder padding
    assert abs(peak_freq(x, sr) - 1000) <= 2 * sr / x.shape[1]
    assert 0.3 < np.max(np.abs(x)) < 0.7
    out = tmp_path / f"out.{ext}"
    audio.save_audio(out, x, sr)
    y, sr2 = audio.load_audio(out)
    assert sr2 == 16000 and abs(peak_freq(y, sr2) - 1000) <= 2 * sr2 / y.shape[1]


def test_pedalboard_and_ffmpeg_backends_agree(wav_path):
    a, _ = audio.load_audio(wav_path)
    b, _ = audio.load_audio(wav_path, backend="pedalboard")
    c, _ = audio.load_audio(wav_path, backend="ffmpeg")
    assert np.allclose(a, b, atol=1e-4) and np.allclose(a, c, atol=1e-4)


def test_soundtrack_of_video_loads(mp4_path):
    x, sr = audio.load_audio(mp4_path, sr=16000)
    assert sr == 16000 and x.shape[0] == 1 and abs(peak_freq(x, sr) - 440) <= 2


# ---------------------------------------------------------------- bad inputs


def _err(fn, *a, **k) -> str:
    with pytest.raises(InputError) as info:
        fn(*a, **k)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    assert _err(audio.load_audio, tmp_path / "nope.wav") == f"no such file: {tmp_path / 'nope.wav'}"


def test_directory(tmp_path):
    assert "is a directory" in _err(audio.load_audio, tmp_path)


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    assert "empty (0 bytes)" in _err(audio.load_audio, p)


def test_text_file_named_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\n" * 20)
    assert _err(audio.load_audio, p) == f"{p} is not a readable audio file"


def test_truncated_wav(tmp_path, wav_path):
    data = wav_path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in _err(audio.load_audio, cut)
    head = tmp_path / "head.wav"
    head.write_bytes(data[:30])
    assert "corrupt or truncated" in _err(audio.load_audio, head)


def test_truncated_flac(tmp_path):
    src = make_wav(tmp_path / "t.flac", seconds=1.0)
    data = src.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in _err(audio.load_audio, cut)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_samples(tmp_path, bad):
    x = sine(seconds=0.1)[0]
    x[100] = bad
    p = tmp_path / "bad.wav"
    sf.write(str(p), x, 16000, subtype="FLOAT")
    assert _err(audio.load_audio, p) == f"{p} contains NaN or infinite samples"
    with pytest.raises(InputError):
        list(audio.stream_audio(p, 0.01))


def test_one_sample(tmp_path):
    p = tmp_path / "one.wav"
    sf.write(str(p), np.array([0.1], np.float32), 16000)
    assert _err(audio.load_audio, p) == f"{p} is too short (1 sample; at least 16 are needed)"
    x, _ = audio.load_audio(p, min_samples=1)
    assert x.shape == (1, 1)


def test_silence_is_not_an_error(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(str(p), np.zeros(1600, np.float32), 16000)
    x, _ = audio.load_audio(p)
    assert not x.any()
    assert audio.level_stats(x) == {"peak": 0.0, "peak_dbfs": None, "rms": 0.0, "rms_dbfs": None}


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize("sr,channels", [(None, None), (16000, 1), (48000, 2)])
def test_stream_equals_load(tmp_path, sr, channels):
    src = make_wav(tmp_path / "s.wav", freq=[300, 500], sr=44100, seconds=2.0, channels=2)
    whole, _ = audio.load_audio(src, sr, channels)
    blocks = list(audio.stream_audio(src, 0.25, sr, channels))
    rate = sr or 44100
    assert all(b.shape[1] == round(0.25 * rate) for b in blocks[:-1])
    streamed = np.concatenate(blocks, axis=1)
    assert streamed.shape == whole.shape
    assert np.allclose(streamed, whole, atol=1e-5)


def test_stream_checks_eagerly(tmp_path):
    with pytest.raises(InputError):
        audio.stream_audio(tmp_path / "missing.wav", 1.0)


# ---------------------------------------------------------------- mixes


@pytest.fixture
def cwd_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["a.wav", "b.wav", "c.wav", "a+b.wav", "x*2.wav"]:
        make_wav(tmp_path / name, seconds=0.1)
    return tmp_path


def test_parse_mix_gains(cwd_files):
    assert audio.parse_mix("a.wav") == [("a.wav", 1.0)]
    assert audio.parse_mix("a.wav*2+c.wav*0.5") == [("a.wav", 2.0), ("c.wav", 0.5)]
    assert audio.parse_mix("a.wav*1e-1+c.wav") == [("a.wav", 0.1), ("c.wav", 1.0)]
    assert audio.parse_mix("a.wav*1e+1") == [("a.wav", 10.0)]
    assert audio.parse_mix(" a.wav + c.wav * 3 ") == [("a.wav", 1.0), ("c.wav", 3.0)]


def test_parse_mix_existing_names_win(cwd_files):
    assert audio.parse_mix("a+b.wav") == [("a+b.wav", 1.0)]
    assert audio.parse_mix("a+b.wav+c.wav") == [("a+b.wav", 1.0), ("c.wav", 1.0)]
    assert audio.parse_mix("c.wav+a+b.wav*2") == [("c.wav", 1.0), ("a+b.wav", 2.0)]
    assert audio.parse_mix("x*2.wav") == [("x*2.wav", 1.0)]
    assert audio.parse_mix("x*2.wav*3") == [("x*2.wav", 3.0)]


@pytest.mark.parametrize(
    "expr,expected",
    [
        ("a.wav*0", "bad gain '0' in 'a.wav*0': must be a positive number"),
        ("a.wav*-2", "bad gain '-2' in 'a.wav*-2': must be a positive number"),
        ("a.wav*nan", "bad gain 'nan' in 'a.wav*nan': must be a positive number"),
        ("a.wav*loud", "bad gain 'loud' in 'a.wav*loud': not a number"),
        ("a.wav+", "empty source in mix expression 'a.wav+'"),
        ("a.wav++b.wav", "empty source in mix expression 'a.wav++b.wav'"),
        ("a.wav+missing.wav", "no such file: missing.wav"),
        ("missing.wav*2", "no such file: missing.wav"),
        ("*2", "missing file name before '*' in '*2'"),
        ("", "empty mix expression"),
    ],
)
def test_parse_mix_errors(cwd_files, expr, expected):
    assert _err(audio.parse_mix, expr) == expected


def test_load_mix(tmp_path):
    a = make_wav(tmp_path / "a.wav", freq=300, seconds=0.5, amplitude=0.2)
    b = make_wav(tmp_path / "b.wav", freq=700, seconds=1.0, amplitude=0.2, sr=44100, channels=2)
    x, sr = audio.load_mix(f"{a}*2+{b}*0.5", 16000)
    assert sr == 16000 and x.shape == (1, 16000)
    ya, _ = audio.load_audio(a, 16000, 1)
    yb, _ = audio.load_audio(b, 16000, 1)
    expect = 0.5 * yb
    expect[:, : ya.shape[1]] += 2 * ya
    assert np.allclose(x, expect, atol=1e-6)
    lin, _ = audio.load_mix(f"{a}", 16000, gain=2.0)
    db, _ = audio.load_mix(f"{a}", 16000, gain_db=6.0206)
    assert np.allclose(lin, 2 * ya, atol=1e-6) and np.allclose(db, lin, atol=1e-4)
    with pytest.raises(InputError, match="not both"):
        audio.load_mix(f"{a}", 16000, gain=2.0, gain_db=3.0)
    with pytest.raises(InputError, match="positive"):
        audio.load_mix(f"{a}", 16000, gain=0.0)


# ---------------------------------------------------------------- levels and saving


def test_level_stats():
    s = audio.level_stats(sine(amplitude=0.5))
    assert abs(s["peak"] - 0.5) < 1e-3 and abs(s["peak_dbfs"] - (-6.0206)) < 0.01
    assert abs(s["rms_dbfs"] - (-9.031)) < 0.01


def test_save_limits_peaks(tmp_path, capsys):
    loud = sine(amplitude=2.0)
    out = audio.save_audio(tmp_path / "loud.wav", loud, 16000)
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "6.02 dB" in err
    y, _ = audio.load_audio(out)
    assert np.max(np.abs(y)) <= 1.0 and np.max(np.abs(y)) > 0.99
    assert np.allclose(y, loud * (0.999 / 2.0), atol=1e-3)  # scaled, not clipped


def test_save_warn_policy_clips_loudly(tmp_path, capsys):
    audio.save_audio(tmp_path / "c.wav", sine(amplitude=1.5), 16000, peak_policy="warn")
    assert "clipping" in capsys.readouterr().err
    with pytest.raises(OutputError):
        audio.save_audio(tmp_path / "e.wav", sine(amplitude=1.5), 16000, peak_policy="error")


def test_save_quiet_suppresses_warning(tmp_path, capsys):
    console.set_quiet(True)
    audio.save_audio(tmp_path / "q.wav", sine(amplitude=2.0), 16000)
    assert capsys.readouterr().err == ""


def test_save_shapes_formats_and_provenance(tmp_path):
    prov = {"command": "soundsight test", "seed": 1}
    out = audio.save_audio(tmp_path / "o.flac", sine(channels=2)[0], 16000, provenance=prov)
    assert read_provenance(out) == prov
    info = audio.probe_audio(out)
    assert info["format"] == "FLAC" and info["channels"] == 1
    out2 = audio.save_audio(tmp_path / "st.wav", sine(channels=2), 16000, subtype="FLOAT")
    assert audio.probe_audio(out2)["subtype"] == "FLOAT"
    with pytest.raises(OutputError):
        audio.save_audio(tmp_path / "x.xyz", sine(), 16000)
    with pytest.raises(ValueError):
        audio.save_audio(tmp_path / "n.wav", np.full(100, np.nan, np.float32), 16000)
    assert not (tmp_path / "n.wav").exists()


def test_save_is_atomic(tmp_path, monkeypatch):
    def broken(path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"RIFF half")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sf, "write", broken)
    with pytest.raises(OutputError):
        audio.save_audio(tmp_path / "x.wav", sine(), 16000, provenance={"a": 1})
    assert os.listdir(tmp_path) == []


def test_save_keeps_existing_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "keep.wav"
    audio.save_audio(target, sine(), 16000)
    before = target.read_bytes()
    monkeypatch.setattr(sf, "write", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        audio.save_audio(target, sine(freq=880), 16000)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.wav"]


def test_bad_mp3_is_one_clean_error(tmp_path, capfd):
    p = tmp_path / "fake.mp3"
    p.write_text("not an mp3 at all " * 50)
    assert _err(audio.load_audio, p) == f"{p} is not a readable audio file"
    assert capfd.readouterr().err == ""  # no decoder chatter from the C libraries


def test_png_as_audio(tmp_path, png_path):
    assert _err(audio.load_audio, png_path) == f"{png_path} has no audio track"
