"""acoustic-match signal processing (plugins/acoustic_match/acoustics.py): no model, no data set.

RT60 / DRR measurement on impulse responses with known answers, deconvolution, synthetic IRs,
streaming and pedalboard convolution against scipy, K-weighted loudness against BS.1770's own
numbers, and the blind estimator on a synthetic IR.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import fftconvolve

from soundsight_plugins.acoustic_match import acoustics as ac

SR = 16000


def exp_ir(rt60: float, sr: int = SR, seconds: float | None = None, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """Gaussian noise under an exponential envelope that loses 60 dB of energy in ``rt60``."""
    rng = np.random.default_rng(seed)
    n = int((seconds or 1.5 * rt60) * sr)
    t = np.arange(n) / sr
    h = rng.standard_normal(n) * 10 ** (-3 * t / rt60)
    if noise:
        h += noise * rng.standard_normal(n)
    return h


def speech_like(seconds: float = 4.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Syllables of a harmonic source through two formant resonators, with pauses (a stand-in
    for speech where espeak-ng is not installed)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n)
    t = 0
    while t < n:
        dur = int(rng.uniform(0.12, 0.3) * sr)
        f0 = rng.uniform(100, 220)
        k = np.arange(min(dur, n - t))
        phase = 2 * np.pi * np.cumsum(np.full(len(k), f0) * (1 + 0.05 * np.sin(2 * np.pi * 3 * k / sr))) / sr
        src = sum(np.sin(h * phase) / h for h in range(1, 30) if h * f0 < sr / 2 - 200)
        src = src + 0.05 * rng.standard_normal(len(k))
        for fc, bw in ((rng.uniform(300, 900), 90), (rng.uniform(900, 2500), 150), (3000, 250)):
            r = math.exp(-math.pi * bw / sr)
            src = lfilter([1 - r], [1, -2 * r * math.cos(2 * math.pi * fc / sr), r * r], src)
        env = np.sin(np.pi * np.arange(len(k)) / len(k)) ** 0.6
        out[t: t + len(k)] += src * env
        t += len(k) + int(rng.choice([rng.uniform(0.02, 0.08), rng.uniform(0.2, 0.45)]) * sr)
    return (0.05 * out / np.sqrt(np.mean(out ** 2))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Schroeder RT60, DRR


@pytest.mark.parametrize("rt60", [0.2, 0.5, 1.2, 2.5])
def test_schroeder_rt60_of_exponential_ir(rt60):
    d = ac.decay_fit(exp_ir(rt60), SR)
    assert d.fit == "T30"
    assert d.rt60 == pytest.approx(rt60, rel=0.05)
    assert ac.rt60_schroeder(exp_ir(rt60, seed=1), SR, band=ac.SPEECH_BAND) == pytest.approx(rt60, rel=0.05)


def test_schroeder_falls_back_to_t20_and_compensates_a_noise_floor():
    h = exp_ir(1.0, seconds=0.55)  # about 33 dB of decay: no room for T30
    d = ac.decay_fit(h, SR, noise_comp=False)
    assert d.fit == "T20"
    assert d.rt60 == pytest.approx(1.0, rel=0.1)
    noisy = exp_ir(0.6, seconds=3.0, noise=1e-3)  # floor at -60 dB re the start
    comp = ac.decay_fit(noisy, SR)
    assert comp.truncated_at_s is not None and 0.4 < comp.truncated_at_s < 0.8
    assert comp.rt60 == pytest.approx(0.6, rel=0.05)


def test_rt60_of_a_delta_is_zero_and_silence_is_nan():
    h = np.zeros(4000)
    h[10] = 1.0
    assert ac.rt60_schroeder(h, SR) == pytest.approx(0.0, abs=0.01)
    assert math.isnan(ac.rt60_schroeder(np.zeros(1000), SR))


def test_drr_of_known_construction():
    rng = np.random.default_rng(0)
    h = np.zeros(SR)
    tail = rng.standard_normal(SR - 200) * 0.01
    h[200:] = tail
    h[100] = 1.0  # the tail starts 100 samples (6 ms) after the peak: outside the 2.5 ms window
    expected = 10 * math.log10(1.0 / np.sum(tail ** 2))
    assert ac.drr_db(h, SR) == pytest.approx(expected, abs=1e-6)


def test_octave_bands_follow_a_per_band_decay():
    target = {250: 1.2, 500: 1.0, 1000: 0.8, 2000: 0.6, 4000: 0.4}
    h = ac.synthetic_ir(target, 0.0, SR, seed=3)
    got = ac.rt60_bands(h, SR, centers=tuple(target))
    for c, v in target.items():
        # octave filters overlap: a band's late decay borrows a little of its slower neighbour's
        assert got[c] == pytest.approx(v, rel=0.15), c


# ----------------------------------------------------------------------------------------------
# deconvolution


def test_estimate_ir_recovers_a_known_ir():
    rng = np.random.default_rng(1)
    ir = ac.synthetic_ir(0.5, 3.0, SR, seed=2)
    x = rng.standard_normal(2 * SR)
    h = ac.estimate_ir(x, fftconvolve(x, ir), length=len(ir))
    assert np.max(np.abs(h - ir)) < 0.01 * np.max(np.abs(ir))
    # from speech: right in the speech band (3 s of a crude harmonic stand-in leaves a small
    # error floor; from real speech on the rooms data set the oracle's RT60 error is ~0.01 s)
    s = speech_like(3.0)
    h2 = ac.estimate_ir(s, fftconvolve(s, ir), length=len(ir))
    assert ac.rt60_schroeder(h2, SR, band=ac.SPEECH_BAND) == pytest.approx(
        ac.rt60_schroeder(ir, SR, band=ac.SPEECH_BAND), rel=0.12)
    # (DRR is not compared here: band-limiting rings the direct sound beyond its +-2.5 ms window)


# ----------------------------------------------------------------------------------------------
# synthetic IR


@pytest.mark.parametrize("rt60,drr", [(0.3, 6.0), (0.9, 0.0), (2.0, -8.0)])
def test_synthetic_ir_meets_its_targets(rt60, drr):
    h = ac.synthetic_ir(rt60, drr, SR, predelay=0.002, seed=0)
    assert h.dtype == np.float32
    assert np.sum(h.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-5)
    assert int(np.argmax(np.abs(h))) == 32
    assert ac.drr_db(h, SR) == pytest.approx(drr, abs=0.01)
    assert ac.rt60_schroeder(h, SR) == pytest.approx(rt60, rel=0.05)
    assert np.array_equal(h, ac.synthetic_ir(rt60, drr, SR, predelay=0.002, seed=0))
    assert not np.array_equal(h, ac.synthetic_ir(rt60, drr, SR, predelay=0.002, seed=1))


def test_synthetic_ir_at_other_rates():
    h = ac.synthetic_ir(0.6, 2.0, 48000, seed=0)
    assert ac.rt60_schroeder(h, 48000) == pytest.approx(0.6, rel=0.05)
    assert ac.drr_db(h, 48000) == pytest.approx(2.0, abs=0.01)


# ----------------------------------------------------------------------------------------------
# convolution


@pytest.mark.parametrize("segment,block", [(None, 4096), (3000, 777), (20000, 50000)])
def test_streaming_convolution_equals_one_shot(segment, block):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, 40000))).astype(np.float32)
    ir = ac.synthetic_ir(0.4, 0.0, SR, seed=1)
    ref = ac.convolve(x, ir)
    assert ref.shape == (2, 40000 + len(ir) - 1)
    got = np.concatenate(list(ac.convolve_stream((x[:, i: i + block] for i in range(0, 40000, block)), ir,
                                                 segment=segment)), axis=1)
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) < 1e-5
    # per-channel IRs and 1-D audio
    irs = np.stack([ir, ac.synthetic_ir(0.2, 3.0, SR, seed=2, length=len(ir) / SR)])
    ref2 = ac.convolve(x, irs)
    conv = ac.StreamingConvolver(irs, 2, segment=segment)
    got2 = np.concatenate([conv.process(x[:, :12345]), conv.process(x[:, 12345:]), conv.flush()], axis=1)
    assert np.max(np.abs(got2 - ref2)) < 1e-5
    mono = ac.convolve(x[0], ir)
    assert mono.ndim == 1 and np.allclose(mono, ref[0], atol=1e-6)


def test_pedalboard_convolution_equals_scipy():
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal((2, 30000))).astype(np.float32)
    ir = np.concatenate([np.zeros(50), ac.synthetic_ir(0.5, 0.0, 44100, seed=4)]).astype(np.float32)
    ref = np.stack([fftconvolve(c.astype(np.float64), ir.astype(np.float64)) for c in x])
    got = ac.convolve_pedalboard(x, 44100, ir)
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) < 1e-5 * max(1.0, np.max(np.abs(ref)))


def test_convolution_rejects_mismatched_channels():
    with pytest.raises(ValueError):
        ac.convolve(np.zeros((2, 100)), np.zeros((3, 10)))


# ----------------------------------------------------------------------------------------------
# loudness


def test_k_weighting_matches_bs1770_at_48k():
    sos = ac.k_weighting_sos(48000)
    np.testing.assert_allclose(sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285,
                                        1.0, -1.69065929318241, 0.73248077421585], atol=1e-6)
    np.testing.assert_allclose(sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], atol=1e-6)


def test_lufs_of_a_sine_and_streaming_meter():
    sr = 48000
    s = 0.1 * np.sin(2 * np.pi * 997 * np.arange(3 * sr) / sr)  # -20 dBFS peak, one channel
    assert ac.loudness_lufs(s, sr) == pytest.approx(-23.01, abs=0.05)
    m = ac.LoudnessMeter(sr, 1)
    for i in range(0, len(s), 7001):
        m.add(s[i: i + 7001])
    assert m.lufs() == pytest.approx(ac.loudness_lufs(s, sr), abs=0.02)
    assert ac.loudness_lufs(np.zeros(sr), sr) == float("-inf")


def test_match_loudness():
    x = speech_like(2.0)
    y = 0.1 * ac.convolve(x, ac.synthetic_ir(0.5, 0.0, SR))
    for method in ("lufs", "rms"):
        z, g = ac.match_loudness(y, x, SR, method=method)
        assert g > 15
        if method == "lufs":
            assert ac.loudness_lufs(z, SR) == pytest.approx(ac.loudness_lufs(x, SR), abs=0.05)
        else:
            assert ac.rms_db(z) == pytest.approx(ac.rms_db(x), abs=0.05)


# ----------------------------------------------------------------------------------------------
# metrics, blind estimation


def test_stft_distance():
    torch = pytest.importorskip("torch")
    x = speech_like(1.0)
    assert ac.stft_distance(x, x) == 0.0
    A = ac.stft_magnitude(x)
    assert A.shape == (1 + len(x) // 128, 257)
    # the magnitudes are torch.stft's (periodic Hann 512, hop 128, centred on zero padding, no
    # normalisation), the distance their mean squared difference: half the level costs A^2 / 4
    ref = torch.stft(torch.from_numpy(x.astype(np.float64)), 512, 128, window=torch.hann_window(512, dtype=torch.float64),
                     center=True, pad_mode="constant", return_complex=True).abs().numpy().T
    np.testing.assert_allclose(A, ref, rtol=1e-6, atol=1e-6 * ref.max())
    assert ac.stft_distance(x, 0.5 * x) == pytest.approx(0.25 * float(np.mean(ref ** 2)), rel=1e-5)
    y = speech_like(1.0, seed=7)
    assert ac.stft_distance(x, y) == pytest.approx(float(np.mean((A - ac.stft_magnitude(y)) ** 2)), rel=1e-9)
    # a shorter signal is zero-padded to the longer one's length, in either order
    short = y[: len(y) // 2]
    padded = np.concatenate([short, np.zeros(len(y) - len(short), short.dtype)])
    assert ac.stft_distance(x, short) == ac.stft_distance(short, x) == pytest.approx(ac.stft_distance(x, padded), rel=1e-12)


def test_blind_estimate_tracks_rt60_on_a_synthetic_room():
    """Long vs short decays are told apart from the reverberant signal alone (the tolerance on
    simulated rooms is in test_rooms.py)."""
    x = speech_like(5.0, seed=2)
    ests = []
    for rt in (0.3, 1.2):
        wet = ac.convolve(x, ac.synthetic_ir(rt, 0.0, SR, seed=5))
        e = ac.blind_estimate(wet, SR)
        assert e.n_decays > 0
        assert set(e.rt60_bands) == set(ac.BLIND_BANDS)
        ests.append(e.rt60)
    assert ests[0] == pytest.approx(0.3, rel=0.5)
    assert ests[1] == pytest.approx(1.2, rel=0.5)
    with pytest.raises(ValueError):
        ac.blind_estimate(np.zeros(SR), SR)
