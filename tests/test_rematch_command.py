"""`soundsight rematch` (acoustic-match): the three ways to get a room end to end on the bundled
real voice (2.6 s), streaming against one-shot, levels, errors, the recipe step.

The model tests use a tiny random AViTAR (helper code in ``avitar.py``) saved to a temporary
``SOUNDSIGHT_HOME``; never the shipped model.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from support import assert_user_error, run_cli

from soundsight_plugins.acoustic_match import acoustics as ac
from soundsight_plugins.acoustic_match import impulse, render
from soundsight_plugins.acoustic_match.rematch import Request, run_rematch

ASSETS = Path(__file__).resolve().parents[1] / "plugins" / "acoustic_match" / "assets"
SR = 44100


def _voice() -> np.ndarray:
    x, sr = sf.read(str(ASSETS / "voice.flac"), dtype="float32")
    assert sr == SR
    return x


def _read(path):
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return y.T, sr


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Stereo 44.1 kHz speech, 16 kHz mono speech, a reverberant reference (RT60 0.9 s), a
    stereo IR at 48 kHz, the room picture."""
    d = tmp_path_factory.mktemp("rematch")
    v = _voice()
    stereo = np.stack([v, 0.7 * np.roll(v, 40)])
    sf.write(str(d / "voice.wav"), stereo.T, SR, subtype="PCM_16")
    from soundsight.audio import resample

    v16 = resample(v[None, :], SR, 16000)[0]
    sf.write(str(d / "voice16.wav"), v16, 16000, subtype="PCM_16")
    h = ac.synthetic_ir(0.9, -6.0, 16000, seed=3)
    speech = np.concatenate([v16, np.zeros(8000, np.float32), v16])
    ref = ac.convolve(speech, h)
    sf.write(str(d / "reference.wav"), 0.5 * ref / np.abs(ref).max(), 16000, subtype="PCM_16")
    h48 = np.stack([ac.synthetic_ir(0.5, 0.0, 48000, seed=1), ac.synthetic_ir(0.5, 0.0, 48000, seed=2)])
    sf.write(str(d / "ir.wav"), 0.5 * h48.T / np.abs(h48).max(), 48000, subtype="FLOAT")
    return d


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory):
    """A SOUNDSIGHT_HOME holding `tiny-avitar`: random weights, its output layer perturbed so
    the model does more than pass the input through (residual models start at identity)."""
    torch = pytest.importorskip("torch")
    from soundsight.registry import save_model
    from soundsight_plugins.acoustic_match.avitar import AViTAR, AViTARConfig

    torch.manual_seed(0)
    cfg = AViTARConfig.preset("tiny")
    model = AViTAR(cfg).eval()
    with torch.no_grad():
        for p in model.decoder.out.parameters():
            p.normal_(0.0, 0.05)
    home = tmp_path_factory.mktemp("home")
    save_model(home / "models" / "tiny-avitar", name="tiny-avitar", task="acoustic-match", architecture="avitar",
               config=cfg.to_dict(), tensors={"model.safetensors": model.state_dict()})
    return home


def _lufs_diff(out, inp) -> float:
    y, sr = _read(out)
    x, _ = _read(inp)
    return abs(ac.loudness_lufs(y, sr) - ac.loudness_lufs(x, sr))


# ------------------------------------------------------------------------------------------ like


def test_like_cli_end_to_end_json_report_sidecar(media, tmp_path):
    out, png = tmp_path / "o.wav", tmp_path / "o.png"
    r = run_cli("rematch", media / "voice.wav", "--like", media / "reference.wav", "--out", out, "--report", png,
                "--json")
    assert r.code == 0, r.err
    rep = json.loads(r.out)
    for key in ("audio", "source", "mode", "model", "mix", "sample_rate", "channels", "input_duration_s",
                "output_duration_s", "tail_s", "loudness", "ir", "estimates", "warnings", "outputs"):
        assert key in rep, key
    assert (rep["source"], rep["mode"], rep["model"], rep["sample_rate"], rep["channels"]) == ("like", "ir", None, SR, 2)
    y, sr = _read(out)
    x, _ = _read(media / "voice.wav")
    ir_n = rep["ir"]["length_samples"]
    assert sr == SR and y.shape == (2, x.shape[1] + ir_n - 1)  # the whole tail is kept
    assert _lufs_diff(out, media / "voice.wav") < 1.0
    est = rep["estimates"]
    ref = rep["ir"]["reference"]
    assert 0.5 < ref["rt60"] < 1.5  # the reference's RT60 is 0.9 s
    # the output is measurably more reverberant than the dry input
    assert est["output"]["rt60"] > est["input"]["rt60"] + 0.25
    assert est["output_vs_input"]["rt60_speech"] > 0.4
    assert abs(est["output_vs_input"]["rt60_speech"] - rep["ir"]["rt60_speech"]) < 0.15
    side = json.loads(Path(str(out) + ".soundsight.json").read_text())
    assert side["params"]["like"].endswith("reference.wav") and side["params"]["mode"] == "ir"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 1000 and "soundsight" in im.text


def test_like_equals_one_shot_convolution_and_streams(media, tmp_path):
    """Blocks of 0.37 s give the one-shot result: full convolution with the blind IR, scaled."""
    h, _ = impulse.ir_from_reference(media / "reference.wav", SR)
    outs = []
    for i, block in enumerate((0.37, 100.0)):
        out = tmp_path / f"b{i}.wav"
        run_rematch(Request(audio=str(media / "voice.wav"), like=str(media / "reference.wav"), out=str(out),
                            estimates=False, block_s=block))
        outs.append(_read(out)[0])
    assert outs[0].shape == outs[1].shape
    assert np.max(np.abs(outs[0] - outs[1])) < 2e-4  # 16-bit rounding
    x, _ = _read(media / "voice.wav")
    ref = ac.convolve(x, h)
    g = float(np.dot(outs[1].ravel(), ref.ravel()) / np.dot(ref.ravel(), ref.ravel()))
    assert np.max(np.abs(outs[1] - g * ref)) < 2e-4


# ------------------------------------------------------------------------------------------ ir


def test_measured_ir_per_channel_through_pedalboard(media, tmp_path):
    out = tmp_path / "o.flac"
    rep = run_rematch(Request(audio=str(media / "voice.wav"), ir=str(media / "ir.wav"), out=str(out), estimates=False,
                              block_s=0.5))
    assert rep["ir"]["channels"] == 2 and rep["ir"]["file_rate"] == 48000
    y, sr = _read(out)
    x, _ = _read(media / "voice.wav")
    h, _ = impulse.ir_from_file(media / "ir.wav", SR, 2)  # resampled, its inaudible end (-100 dB) cut
    assert h.shape[1] == rep["ir"]["length_samples"] < 0.7 * SR
    assert sr == SR and y.shape[1] == x.shape[1] + h.shape[1] - 1
    for c in range(2):  # each channel with its own IR
        ref = ac.convolve(x[c], h[c])
        g = float(np.dot(y[c], ref) / np.dot(ref, ref))
        assert np.max(np.abs(y[c] - g * ref)) < 3e-4
    assert _lufs_diff(out, media / "voice.wav") < 1.0


def test_mix_zero_is_the_input_and_half_mix_is_matched(media, tmp_path):
    out = tmp_path / "dry.wav"
    run_rematch(Request(audio=str(media / "voice.wav"), ir=str(media / "ir.wav"), out=str(out), mix=0.0, estimates=False))
    y, _ = _read(out)
    x, _ = _read(media / "voice.wav")
    assert y.shape == x.shape and np.array_equal(y, x)
    half = tmp_path / "half.wav"
    rep = run_rematch(Request(audio=str(media / "voice.wav"), ir=str(media / "ir.wav"), out=str(half), mix=0.5))
    assert _lufs_diff(half, media / "voice.wav") < 1.0
    eff = rep["estimates"]["output_vs_input"]
    assert eff["drr_db"] > 0.0  # half of the level is the direct (dry) sound


def test_peak_over_full_scale_is_lowered_with_a_warning(tmp_path, capsys):
    """A loud input whose wet version peaks higher: lowered, never clipped."""
    # a square wave at 0.9 has a crest factor of 1; through a noise-like IR it becomes Gaussian-
    # like (crest ~4) at the same loudness
    t = np.arange(SR * 2) / SR
    x = (0.9 * np.sign(np.sin(2 * np.pi * 220 * t))).astype(np.float32)
    sf.write(str(tmp_path / "square.wav"), x, SR, subtype="FLOAT")
    h = ac.synthetic_ir(0.1, -10.0, SR, seed=0)
    sf.write(str(tmp_path / "noise_ir.wav"), h, SR, subtype="FLOAT")
    for mix in (1.0, 0.5):  # the wet alone (peak known after pass 1); a mix (found while writing)
        out = tmp_path / f"o{mix}.wav"
        rep = run_rematch(Request(audio=str(tmp_path / "square.wav"), ir=str(tmp_path / "noise_ir.wav"),
                                  out=str(out), mix=mix, estimates=False))
        y, _ = _read(out)
        assert 0.99 < np.max(np.abs(y)) <= 1.0 and rep["loudness"]["limited_db"] > 0
        assert "avoid clipping" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ room


def test_room_both_modes(media, tiny_home, monkeypatch, tmp_path, capsys):
    """waveform through the CLI (it warns about the band above 8 kHz), ir in-process (keeps it)."""
    out_w, out_i = tmp_path / "waveform.wav", tmp_path / "ir.wav"
    r = run_cli("rematch", media / "voice.wav", "--room", ASSETS / "room27.png", "--model", "tiny-avitar",
                "--mode", "waveform", "--out", out_w, "--json", env={"SOUNDSIGHT_HOME": str(tiny_home)})
    assert r.code == 0, r.err
    assert "above 8 kHz" in r.err
    rep_w = json.loads(r.out)
    assert rep_w["ir"] is None and rep_w["input_above_8khz_db"] > -50 and rep_w["model"] == "tiny-avitar"
    monkeypatch.setenv("SOUNDSIGHT_HOME", str(tiny_home))
    rep_i = run_rematch(Request(audio=str(media / "voice.wav"), room=str(ASSETS / "room27.png"), model="tiny-avitar",
                                mode="ir", out=str(out_i)), device="cpu")
    assert "above 8 kHz" not in capsys.readouterr().err
    assert rep_i["mode"] == "ir" and rep_i["ir"]["source"] == "room"
    assert rep_i["ir"]["estimated"]["sample_rate"] == 16000
    x, _ = _read(media / "voice.wav")
    for out in (out_w, out_i):
        y, sr = _read(out)
        assert sr == SR and y.shape[0] == 2 and y.shape[1] >= x.shape[1]
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
        assert _lufs_diff(out, media / "voice.wav") < 1.0
        side = json.loads(Path(str(out) + ".soundsight.json").read_text())
        assert "tiny-avitar" in side["models"]
    yw, _ = _read(out_w)
    yi, _ = _read(out_i)

    def above_9k(y):  # share of the energy above 9 kHz
        p = np.abs(np.fft.rfft(y[0] - y[0].mean())) ** 2
        return float(p[int(9000 * y.shape[1] / SR):].sum() / p.sum())

    assert above_9k(yi) > 1e-3 and above_9k(yw) < 1e-3 * above_9k(yi)  # ir mode keeps the band above 8 kHz


def test_room_waveform_streams_like_one_shot_and_no_warning_at_16k(media, tiny_home, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SOUNDSIGHT_HOME", str(tiny_home))
    outs = []
    for i, block in enumerate((0.3, 100.0)):
        out = tmp_path / f"w{i}.wav"
        run_rematch(Request(audio=str(media / "voice16.wav"), room=str(ASSETS / "room27.png"), model="tiny-avitar",
                            mode="waveform", out=str(out), estimates=False, block_s=block), device="cpu")
        outs.append(_read(out)[0])
    assert outs[0].shape == outs[1].shape
    assert np.max(np.abs(outs[0] - outs[1])) < 2e-4
    assert "above 8 kHz" not in capsys.readouterr().err


def test_model_chunker_equals_one_shot_for_a_causal_filter():
    """Chunks with 2 s of context reproduce a (shorter than the context) causal response."""
    rng = np.random.default_rng(1)
    fir = rng.standard_normal(300) * np.exp(-np.arange(300) / 60.0)
    fn = lambda w: np.convolve(w, fir)[: len(w)].astype(np.float32)  # noqa: E731
    x = rng.standard_normal(5000).astype(np.float32)
    ch = render.ModelChunker(fn, 1000, hop_s=0.7, context_s=0.4, fade_s=0.05)
    outs = []
    for i in range(0, len(x), 333):
        outs += ch.feed(x[i: i + 333])
    outs += ch.finish(len(x) + 400)
    y = np.concatenate(outs)
    ref = np.convolve(np.pad(x, (0, 400)), fir)[: len(x) + 400]
    assert len(y) == len(ref) and np.max(np.abs(y - ref)) < 1e-4


def test_extend_ir_continues_the_band_above_the_model_rate():
    """A 48 kHz room IR seen only at 16 kHz: the extension above 8 kHz decays like the measured
    bands continue (held from 4 kHz), and the trusted band is untouched."""
    true = ac.synthetic_ir({250: 0.9, 1000: 0.8, 4000: 0.6}, -3.0, 48000, seed=4)
    from soundsight.audio import resample

    low = resample(true[None, :], 48000, 16000)[0]
    full, info = impulse.extend_ir(low, 16000, 48000)
    rt8k = ac.rt60_schroeder(full, 48000, band=8000)
    rt1k, rt1k_true = ac.rt60_schroeder(full, 48000, band=1000), ac.rt60_schroeder(true, 48000, band=1000)
    assert abs(rt1k - rt1k_true) < 0.05
    assert 0.45 < rt8k < 0.75
    spec = np.abs(np.fft.rfft(full)) ** 2
    f = np.fft.rfftfreq(len(full), 1 / 48000)
    above, around = spec[(f > 9000) & (f < 20000)].mean(), spec[(f > 3000) & (f < 5000)].mean()
    assert above > 0.1 * around  # the high band is there, at a comparable level


def test_mix_meter_matches_bs1770():
    rng = np.random.default_rng(2)
    d = (rng.standard_normal((2, 48000)) * np.linspace(0.01, 0.3, 48000)).astype(np.float32)
    w = ac.convolve(d, ac.synthetic_ir(0.4, 0.0, 16000, seed=0))[:, : d.shape[1] + 3000]
    m = render.MixMeter(16000, 2)
    for i in range(0, w.shape[1], 7001):  # dry and wet in different block sizes
        m.add_wet(w[:, i: i + 7001])
    for i in range(0, d.shape[1], 5000):
        m.add_dry(d[:, i: i + 5000])
    m.finish()
    dp = np.pad(d, ((0, 0), (0, w.shape[1] - d.shape[1])))
    for a, b in ((1.0, 0.0), (0.0, 1.0), (0.3, 0.8)):
        ref = ac.loudness_lufs(a * dp + b * w, 16000)
        assert abs(m.lufs(a, b) - ref) < 0.05, (a, b)


def test_spool_spills_to_a_file_and_reads_back():
    blocks = [np.random.default_rng(i).standard_normal((2, n)).astype(np.float32) for i, n in enumerate((10, 300, 7))]
    for limit in (1 << 20, 100):
        sp = render.Spool(2, max_memory=limit)
        for b in blocks:
            sp.write(b)
        assert (sp.file is None) == (limit > 1000)
        sp.rewind()
        got = np.concatenate([sp.read(64) for _ in range(6)], axis=1)
        assert np.array_equal(got, np.concatenate(blocks, axis=1))
        sp.close()


# ------------------------------------------------------------------------------------------ errors


def test_error_lines_and_nothing_written(media, tmp_path):
    out = tmp_path / "o.wav"
    voice = media / "voice.wav"
    (tmp_path / "fake.png").write_text("not an image")
    cases = [
        (("rematch", voice, "--like", media / "reference.wav", "--ir", media / "ir.wav"), "exactly one of"),
        (("rematch", voice, "--ir", ASSETS / "room27.png"), "--ir"),
        (("rematch", voice, "--room", tmp_path / "fake.png"), "--room"),
    ]
    for args, needle in cases:
        r = run_cli(*args, "--out", out)
        assert_user_error(r, needle)
        assert not out.exists() and not Path(str(out) + ".soundsight.json").exists()


def test_short_silent_and_bad_values_are_user_errors(media, tmp_path):
    from soundsight.errors import UserError

    sf.write(str(tmp_path / "short.wav"), _voice()[: int(0.3 * SR)], SR)
    sf.write(str(tmp_path / "silent.wav"), np.zeros(SR * 2, np.float32), SR)
    sf.write(str(tmp_path / "tiny_ref.wav"), _voice()[: int(0.6 * SR)], SR)
    out = tmp_path / "o.wav"
    bad = [
        (dict(audio=str(media / "voice.wav")), "exactly one of"),
        (dict(audio=str(media / "voice.wav"), like=str(media / "reference.wav"), mode="waveform"), "waveform"),
        (dict(audio=str(tmp_path / "short.wav"), like=str(media / "reference.wav")), "too short"),
        (dict(audio=str(tmp_path / "silent.wav"), ir=str(media / "ir.wav")), "silent"),
        (dict(audio=str(media / "voice.wav"), like=str(tmp_path / "tiny_ref.wav")), "too short"),
        (dict(audio=str(media / "voice.wav"), ir=str(tmp_path / "silent.wav")), "silent"),
        (dict(audio=str(media / "voice.wav"), ir=str(media / "ir.wav"), mix=1.5), "--mix"),
        (dict(audio=str(media / "voice.wav"), ir=str(media / "ir.wav"), mode="fast"), "--mode"),
    ]
    for kw, needle in bad:
        with pytest.raises(UserError, match=needle):
            run_rematch(Request(out=str(out), **kw))
        assert not out.exists() and not Path(str(out) + ".soundsight.json").exists()
    out.write_bytes(b"x")
    with pytest.raises(UserError, match="exists"):
        run_rematch(Request(audio=str(media / "voice.wav"), ir=str(media / "ir.wav"), out=str(out)))


# ------------------------------------------------------------------------------------------ recipe


def test_recipe_step_runs_and_resumes(media, tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.wav").write_bytes((media / "voice16.wav").read_bytes())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "version: 1\nsteps:\n  - step: rematch\n    for_each: '?.wav'\n    with:\n"
        f"      audio: '{{item}}'\n      ir: '{media / 'ir.wav'}'\n      mix: 0.8\n"
        "      out: 'out/{stem}.wet.flac'\n")
    (tmp_path / "out").mkdir()
    r = run_cli("run", recipe, "--json")
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["done"]) == 2
    # the step forwards its parameters: the same audio as the command itself with --ir and --mix 0.8
    direct = tmp_path / "direct.flac"
    run_rematch(Request(audio=str(tmp_path / "a.wav"), ir=str(media / "ir.wav"), mix=0.8, out=str(direct),
                        estimates=False))
    y_direct, _ = _read(direct)
    for name in ("a", "b"):
        y, sr = _read(tmp_path / "out" / f"{name}.wet.flac")
        assert sr == 16000 and y.shape[0] == 1
        np.testing.assert_array_equal(y, y_direct)  # a.wav and b.wav hold the same voice
    full_wet = tmp_path / "wet.flac"
    run_rematch(Request(audio=str(tmp_path / "a.wav"), ir=str(media / "ir.wav"), mix=1.0, out=str(full_wet),
                        estimates=False))
    assert np.abs(_read(full_wet)[0] - y_direct).max() > 1e-2  # mix 0.8 is not the default 1.0
    r2 = run_cli("run", recipe, "--json")
    assert r2.code == 0, r2.err
    again = json.loads(r2.out)  # resumed: both items skipped, nothing redone
    assert (len(again["done"]), len(again["skipped"])) == (0, 2), again


# ------------------------------------------------------------------------------------------ demo


def test_demo_part(tmp_path):
    """The demo makes its inputs from the bundled assets; --ir reproduces the room's RT60."""
    from soundsight import registry
    from soundsight.errors import ModelError
    from soundsight_plugins.acoustic_match.plugin import DEFAULT_PARAMS_MODEL, _demo

    try:
        registry.resolve(DEFAULT_PARAMS_MODEL, task="room-acoustics")
        has_model = True
    except ModelError:
        has_model = False
    written = _demo(tmp_path)
    assert all(Path(p).exists() for p in written)
    rep = json.loads((tmp_path / "rematch.json").read_text())
    assert ("room" in rep) == has_model
    if has_model:  # the default --room mode; the picture of a 0.94 s room gives a reverberant IR
        assert rep["room"]["mode"] == "params" and 0.5 < rep["room"]["ir"]["rt60_speech"] < 1.5
    truth = rep["room_description"]["ir_rt60_speech"]  # the bundled IR's speech-band RT60 (0.94 s)
    assert abs(rep["ir"]["estimates"]["output_vs_input"]["rt60_speech"] - truth) < 0.1
    assert 0.4 < rep["like"]["estimates"]["output_vs_input"]["rt60_speech"] < 1.4
    y, sr = _read(tmp_path / "voice.ir.wav")
    assert sr == SR and y.shape[0] == 1

