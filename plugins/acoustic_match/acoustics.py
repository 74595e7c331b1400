"""Room-acoustics signal processing for acoustic-match (no learned model).

Arrays follow soundsight's conventions: audio is float32 ``(channels, n)`` or ``(n,)``; impulse
responses (IRs) are 1-D float arrays (or ``(channels, n)`` for per-channel IRs). Everything here
is numpy/scipy; nothing imports torch.

Measurement
    ``energy_decay_curve``, ``decay_fit`` / ``rt60_schroeder`` (Schroeder backward integration,
    line fit on the energy decay curve from -5 dB: T30 = -5..-35 dB, falling back to T20 / T10
    when the curve does not reach that far; optional noise-floor truncation with tail
    compensation in the spirit of Lundeby et al. 1995 for measured or estimated IRs),
    ``rt60_bands`` (octave bands), ``drr_db`` (direct window +-2.5 ms around the peak),
    ``estimate_ir`` (regularised / Wiener deconvolution of a wet recording by its dry source),
    ``effective_rt60``.

Blind estimation (no dry reference)
    ``blind_estimate``: RT60 (speech band and per octave) and DRR from a reverberant recording
    alone: decay-rate distributions of sub-band energy envelopes, envelope range and modulation
    statistics, mapped by a ridge regression fitted on simulated rooms (the weights are a small
    JSON asset); the method is in its docstring, its cross-validated error in the asset, its
    unseen-room error in the table of ``python -m soundsight_train.eval_rematch``.

Synthesis
    ``synthetic_ir``: a direct impulse plus exponentially decaying noise, per octave band,
    scaled to a requested DRR and normalised to unit energy (the "blind reverberator").

Convolution
    ``convolve`` (one shot), ``StreamingConvolver`` / ``convolve_stream`` (overlap-add in blocks,
    memory bounded by block + IR length, tail kept), ``convolve_pedalboard`` (JUCE's partitioned
    convolution through pedalboard, with pedalboard's own IR normalisation undone).

Loudness
    ``k_weighting_sos``, ``LoudnessMeter`` (ITU-R BS.1770 integrated loudness with gating, fed in
    blocks), ``loudness_lufs``, ``rms_db``, ``match_loudness``.

Metrics
    ``stft_magnitude``, ``stft_distance`` (mean squared error of linear STFT magnitudes:
    Hann window 512, hop 128, FFT 512, no normalisation; at 16 kHz that is 32 ms / 8 ms).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

#: Octave-band centre frequencies (Hz) used for per-band RT60s.
OCTAVE_CENTERS = (125, 250, 500, 1000, 2000, 4000, 8000)
#: The band used for "speech-band" RT60: the 250 Hz .. 4 kHz octaves (edges 177 Hz .. 5.66 kHz).
#: Speech has little energy outside it, so an IR estimated from speech is only reliable here.
SPEECH_BAND = (250 / math.sqrt(2), 4000 * math.sqrt(2))
#: Half-width of the direct-sound window for DRR (seconds).
DIRECT_WINDOW_S = 0.0025
#: Fit ranges (dB below the start of the energy decay curve), tried in this order.
FIT_RANGES = {"T30": (-5.0, -35.0), "T20": (-5.0, -25.0), "T10": (-5.0, -15.0)}
_LN10 = math.log(10.0)


# =============================================================================================
# helpers


def _as_1d(x, name: str = "signal") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    elif a.ndim == 2 and a.shape[0] <= 64:
        a = a.mean(axis=0)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D or (channels, n); got shape {np.shape(x)}")
    return a


def _as_2d(x) -> tuple[np.ndarray, bool]:
    """(n,) or (C, n) -> (C, n) float64 and whether the input was 1-D."""
    a = np.asarray(x)
    if a.ndim == 1:
        return a[None, :].astype(np.float64), True
    if a.ndim != 2 or a.shape[0] > 64:
        raise ValueError(f"audio must be (channels, n) or (n,); got shape {a.shape}")
    return a.astype(np.float64), False


def _band_sos(sr: int, band, order: int = 4):
    """Butterworth band-pass (lo, hi) in Hz as second-order sections; None if the band is empty.

    The upper edge is dropped (high-pass only) when it is at or above 0.95 x Nyquist."""
    from scipy.signal import butter

    lo, hi = float(band[0]), float(band[1])
    nyq = sr / 2.0
    if lo >= 0.95 * nyq:
        return None
    if hi >= 0.95 * nyq:
        return butter(order, lo, btype="highpass", fs=sr, output="sos")
    return butter(order, [lo, hi], btype="bandpass", fs=sr, output="sos")


def octave_band(center: float) -> tuple[float, float]:
    return (center / math.sqrt(2.0), center * math.sqrt(2.0))


def band_filter(ir, sr: int, band) -> np.ndarray:
    """Zero-phase band-pass of an IR (order 4 each way), zero-padded so nothing wraps."""
    from scipy.signal import sosfiltfilt

    h = _as_1d(ir, "ir")
    sos = _band_sos(sr, band, order=4)
    if sos is None:
        return np.zeros_like(h)
    pad = int(0.05 * sr)
    y = sosfiltfilt(sos, np.pad(h, (pad, pad)), padtype=None)
    return y[pad: pad + len(h)]


# =============================================================================================
# Schroeder decay analysis


def energy_decay_curve(ir, *, tail_energy: float = 0.0) -> np.ndarray:
    """Schroeder backward integral of ``ir**2`` in dB, 0 dB at the first sample.

    ``tail_energy`` is added to every value (the energy beyond a truncation point)."""
    h = _as_1d(ir, "ir")
    e = np.cumsum((h * h)[::-1])[::-1] + float(tail_energy)
    if e[0] <= 0:
        return np.full(len(h), -np.inf)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(e / e[0])


@dataclass
class DecayFit:
    rt60: float  # seconds (nan if the IR has no decay to measure)
    fit: str  # "T30", "T20", "T10" or "none"
    slope_db_s: float  # fitted decay rate, dB per second (negative)
    dynamic_range_db: float  # how far the energy decay curve falls (dB)
    truncated_at_s: float | None  # noise-floor truncation point, if any
    edt: float  # early decay time (0 .. -10 dB, x6), seconds


def _noise_truncation(h: np.ndarray, sr: int) -> tuple[int, float] | None:
    """Where a decaying IR meets its noise floor, and the energy it would have had beyond.

    Simplified Lundeby iteration: the noise floor is the mean power of the last 10 %; a line
    fitted to the 10 ms-smoothed envelope (from its peak down to 10 dB above the noise) gives
    the crossing point with the noise level; the noise estimate is then refreshed from the part
    after the crossing (plus a margin) and the fit repeated. Returns ``None`` when the tail is
    still decaying (no floor: a simulated IR), else ``(crossing sample, tail energy)`` where the
    tail energy extrapolates the fitted decay past the crossing (Lundeby's compensation).
    """
    p = h * h
    n = len(p)
    if n < int(0.1 * sr):
        return None
    last = p[int(0.9 * n):].mean()
    before = p[int(0.8 * n): int(0.9 * n)].mean()
    if last <= 0 or before > last * 10 ** 0.6:  # still falling by > 6 dB per 10 %: no floor
        return None
    win = max(1, int(round(0.01 * sr)))
    nb = n // win
    if nb < 8:
        return None
    env = p[: nb * win].reshape(nb, win).mean(axis=1) + 1e-300
    i_peak = int(np.argmax(env))
    env_db = 10 * np.log10(np.convolve(env, np.ones(5) / 5.0, mode="same") + 1e-300)  # 50 ms smoothing
    noise = last
    cross = None
    slope = None
    for _ in range(5):
        noise_db = 10 * np.log10(noise + 1e-300)
        # the decay: the run of blocks from the peak on that stays 10 dB above the noise
        below = np.nonzero(env_db[i_peak:] <= noise_db + 10.0)[0]
        run = int(below[0]) if len(below) else nb - i_peak
        if run < 4:
            if cross is None:
                # the envelope meets the floor within 30 ms of the peak: no decay to measure
                # beyond the peak itself (a dry, delta-like IR)
                return (i_peak + 1) * win, 0.0
            break
        i_end = i_peak + run
        t = np.arange(i_peak, i_end)
        slope, icpt = np.polyfit(t, env_db[i_peak:i_end], 1)
        if slope >= 0:
            return None
        cross_b = (noise_db - icpt) / slope
        cross = int(min(max(cross_b, i_peak + 1), nb)) * win
        # 5 dB of decay past the crossing before the noise is measured again
        margin = int(-5.0 / slope) * win
        start = min(cross + margin, int(0.9 * n))
        if n - start < int(0.1 * n):
            start = int(0.9 * n)
        new_noise = p[start:].mean()
        if abs(10 * np.log10((new_noise + 1e-300) / (noise + 1e-300))) < 0.5:
            noise = new_noise
            break
        noise = new_noise
    if cross is None or slope is None or cross >= n:
        return None
    # power at the crossing from the fitted line, decaying at `slope` dB per block afterwards
    p_cross = 10 ** ((icpt + slope * (cross / win)) / 10.0)
    tail = p_cross * win * 10.0 / (-slope * _LN10)
    return cross, float(tail)


def _fit_range(edc: np.ndarray, sr: int, top: float, bottom: float):
    below_top = np.nonzero(edc <= top)[0]
    below_bot = np.nonzero(edc <= bottom)[0]
    if len(below_top) == 0 or len(below_bot) == 0:
        return None
    i0, i1 = int(below_top[0]), int(below_bot[0])
    if i1 - i0 < 2:
        # an (almost) instantaneous drop: a delta-like IR. Slope from the two points.
        i1 = i0 + 2 if i0 + 2 < len(edc) else i1
        if i1 - i0 < 2 or not np.isfinite(edc[i1]):
            return -np.inf
    t = np.arange(i0, i1) / sr
    y = edc[i0:i1]
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return -np.inf
    slope = np.polyfit(t[ok], y[ok], 1)[0]
    return float(slope)


def decay_fit(
    ir, sr: int, *, band=None, fit: str = "T30", noise_comp: bool = True,
) -> DecayFit:
    """Schroeder decay analysis of an impulse response.

    ``band``: None (broadband), an (lo, hi) pair in Hz, or an octave centre frequency.
    ``fit``: the preferred range ("T30", "T20" or "T10"); when the energy decay curve does not
    fall far enough, the next shorter range is used (reported in ``.fit``). The line is fitted
    by least squares to every sample of the EDC between the two levels, and RT60 = -60 / slope.
    ``noise_comp``: truncate at the noise floor and add the extrapolated tail energy (only
    when a floor is found: a simulated IR that decays to the end is used as it is).
    """
    if fit not in FIT_RANGES:
        raise ValueError(f"fit must be one of {tuple(FIT_RANGES)}, got {fit!r}")
    h = _as_1d(ir, "ir")
    if band is not None:
        if np.isscalar(band):
            band = octave_band(float(band))
        h = band_filter(h, sr, band)
    if not np.any(h):
        return DecayFit(float("nan"), "none", float("nan"), 0.0, None, float("nan"))
    tail = 0.0
    trunc = None
    if noise_comp:
        found = _noise_truncation(h, sr)
        if found is not None:
            trunc, tail = found
            h = h[:trunc]
    edc = energy_decay_curve(h, tail_energy=tail)
    finite = edc[np.isfinite(edc)]
    dyn = float(-finite.min()) if len(finite) else 0.0
    if np.any(edc == -np.inf):  # the energy runs out exactly: the decay is complete
        dyn = float("inf")
    # The EDC of an IR that is cut off (or truncated at a noise floor) plunges towards -inf at the
    # end, which says nothing about the decay. Trust it only as far as the IR itself decays: from
    # the power where the fit starts (-5 dB on the EDC) to the power of its last 30 ms (10 dB
    # more when the truncated tail was compensated).
    win = max(1, int(round(0.01 * sr)))
    nb = len(h) // win
    if nb >= 6:
        env = (h[: nb * win] ** 2).reshape(nb, win).mean(axis=1)
        i5 = int(np.argmax(edc <= -5.0)) // win if np.any(edc <= -5.0) else 0
        start_p = env[min(i5, nb - 1)]
        end_p = env[-3:].mean()
        if start_p > 0 and end_p > 0:
            dyn = min(dyn, 10 * math.log10(start_p / end_p) + 5.0 + (10.0 if tail > 0 else 0.0))
    names = list(FIT_RANGES)
    chosen, slope = "none", float("nan")
    for name in names[names.index(fit):]:
        top, bottom = FIT_RANGES[name]
        if dyn >= -bottom:
            s = _fit_range(edc, sr, top, bottom)
            if s is not None:
                chosen, slope = name, s
                break
    if chosen == "none":
        rt60 = float("nan")
    elif slope == -np.inf:
        rt60 = 0.0  # an (almost) instantaneous decay: a delta-like IR
    else:
        rt60 = float(-60.0 / slope) if slope < 0 else float("nan")
    s_edt = _fit_range(edc, sr, 0.0, -10.0) if dyn >= 10 else None
    edt = float(-60.0 / s_edt) if s_edt is not None and s_edt < 0 and np.isfinite(s_edt) else (
        0.0 if s_edt == -np.inf else float("nan"))
    return DecayFit(rt60, chosen, float(slope), dyn, None if trunc is None else trunc / sr, edt)


def rt60_schroeder(ir, sr: int, *, band=None, fit: str = "T30", noise_comp: bool = True) -> float:
    """RT60 (seconds) of an impulse response by Schroeder integration; see ``decay_fit``."""
    return decay_fit(ir, sr, band=band, fit=fit, noise_comp=noise_comp).rt60


def rt60_bands(ir, sr: int, centers: Sequence[float] = OCTAVE_CENTERS, **kw) -> dict[int, float]:
    """T30 per octave band (bands whose lower edge is above 0.95 x Nyquist are left out)."""
    out = {}
    for c in centers:
        if c / math.sqrt(2) >= 0.95 * sr / 2:
            continue
        out[int(c)] = rt60_schroeder(ir, sr, band=c, **kw)
    return out


def drr_db(ir, sr: int, *, window_s: float = DIRECT_WINDOW_S) -> float:
    """Direct-to-reverberant ratio (dB): energy within +-``window_s`` of the absolute peak over
    the energy of everything else."""
    h = _as_1d(ir, "ir")
    p = h * h
    total = p.sum()
    if total <= 0:
        return float("nan")
    k = int(np.argmax(np.abs(h)))
    w = int(round(window_s * sr))
    direct = p[max(0, k - w): k + w + 1].sum()
    rest = total - direct
    if rest <= total * 1e-15:
        return float("inf")
    return float(10 * np.log10(direct / rest))


# =============================================================================================
# deconvolution


def estimate_ir(dry, wet, *, length: int | None = None, reg: float = 1e-4, smooth_hz: float = 30.0,
                floor: float = 1e-6, sr: int = 16000) -> np.ndarray:
    """Effective impulse response h with ``wet ~= dry * h`` by regularised deconvolution.

    Frequency domain, Tikhonov / Wiener form ``H = Y X^* / (|X|^2 + lambda)`` with FFTs long
    enough that nothing wraps (``len(dry) + len(wet)``). ``lambda(f) = reg * S(f) + floor *
    mean|X|^2`` where S is |X|^2 averaged over ``smooth_hz`` (so the regularisation follows the
    dry signal's spectral envelope: a fixed fraction of a speech periodogram's bins fall in
    chance dips, and with one global lambda those bins leave an error floor near
    -10 log10(1/reg) dB that hides the late decay; relative to the local level the floor sits
    near -40 dB with the defaults). ``floor`` caps the gain where the dry signal has no energy at
    all. Where the dry signal is weak (below ~100 Hz and above ~7 kHz for speech) H is unreliable,
    so measure such an IR in the band the dry signal covers (``SPEECH_BAND`` for speech).
    ``length``: samples to return (default ``len(wet)``). ``sr`` only sets the smoothing width.
    Multi-channel inputs are averaged to mono.
    """
    from scipy.fft import irfft, next_fast_len, rfft
    from scipy.ndimage import uniform_filter1d

    x = _as_1d(dry, "dry")
    y = _as_1d(wet, "wet")
    if not np.any(x):
        raise ValueError("the dry signal is silent; nothing to deconvolve")
    n = next_fast_len(len(x) + len(y))
    X = rfft(x, n)
    Y = rfft(y, n)
    pxx = X.real ** 2 + X.imag ** 2
    k = max(1, int(round(smooth_hz * n / sr)))
    lam = float(reg) * uniform_filter1d(pxx, k, mode="nearest") + float(floor) * pxx.mean()
    h = irfft(Y * np.conj(X) / (pxx + lam), n)
    return h[: (len(y) if length is None else int(length))]


def effective_rt60(dry, wet, sr: int, *, band=SPEECH_BAND, max_ir_s: float = 4.0) -> float:
    """RT60 of the effective IR between a dry signal and a processed one (see ``estimate_ir``)."""
    h = estimate_ir(dry, wet, length=min(len(_as_1d(wet)), int(max_ir_s * sr)), sr=sr)
    return rt60_schroeder(h, sr, band=band)


# =============================================================================================
# synthetic impulse responses (the "blind reverberator")


def _band_masks(freqs: np.ndarray, centers: Sequence[float]) -> np.ndarray:
    """Power-complementary octave masks on a frequency axis: sum of squares == 1 everywhere.

    Crossovers are half-cosine in log2-frequency between neighbouring centres; the first band
    extends to DC, the last to Nyquist."""
    c = np.log2(np.asarray(centers, dtype=np.float64))
    lf = np.log2(np.maximum(freqs, 1e-3))
    nb = len(c)
    m = np.zeros((nb, len(freqs)))
    if nb == 1:
        m[0] = 1.0
        return m
    # position between centre k and k+1 in [0, 1]
    for k in range(nb):
        w = np.zeros(len(freqs))
        if k == 0:
            w[lf <= c[0]] = 1.0
        if k == nb - 1:
            w[lf >= c[-1]] = 1.0
        if k > 0:
            seg = (lf > c[k - 1]) & (lf < c[k])
            u = (lf[seg] - c[k - 1]) / (c[k] - c[k - 1])
            w[seg] = np.sin(0.5 * np.pi * u)
        if k < nb - 1:
            seg = (lf >= c[k]) & (lf < c[k + 1])
            u = (lf[seg] - c[k]) / (c[k + 1] - c[k])
            w[seg] = np.cos(0.5 * np.pi * u)
        w[lf == c[k]] = 1.0
        m[k] = w
    return m


def _rt60_per_band(rt60, centers: Sequence[float]) -> np.ndarray:
    """A scalar, a {centre: seconds} mapping or a sequence aligned with ``centers``."""
    if isinstance(rt60, Mapping):
        known = sorted((float(k), float(v)) for k, v in rt60.items() if v is not None and np.isfinite(v) and v > 0)
        if not known:
            raise ValueError("rt60 mapping has no usable value")
        kf = np.log2([k for k, _ in known])
        kv = np.log([v for _, v in known])
        # interpolate in log-log; hold the end values outside the known range
        return np.exp(np.interp(np.log2(centers), kf, kv))
    if np.isscalar(rt60):
        return np.full(len(centers), float(rt60))
    arr = np.asarray(rt60, dtype=np.float64)
    if arr.shape != (len(centers),):
        raise ValueError(f"rt60 needs one value per band ({len(centers)}), got {arr.shape}")
    return arr


def synthetic_ir(
    rt60, drr: float, sr: int, *, predelay: float = 0.0, onset: float = 0.004,
    length: float | None = None, seed: int | None = 0,
    centers: Sequence[float] = OCTAVE_CENTERS,
) -> np.ndarray:
    """A direct impulse followed by exponentially decaying noise: the blind reverberator's IR.

    ``rt60``: seconds, either one value or per octave band (a mapping ``{centre_hz: seconds}``,
    interpolated log-log and held constant beyond its ends, or a sequence aligned with
    ``centers``). Each band of Gaussian noise (power-complementary octave masks) gets the
    amplitude envelope ``10 ** (-3 t / rt60_band)`` (60 dB of energy decay at ``rt60_band``),
    so the tail decays band by band. The tail starts ``onset`` seconds after the direct sound
    with a raised-cosine fade-in of the same length (the gap before the first reflections).
    ``drr`` (dB) is met exactly as ``drr_db`` measures it (a +-2.5 ms window around the direct
    impulse). ``predelay`` (s) places the direct impulse. The result is float32, normalised to
    unit energy; ``length`` (s) defaults to the time the slowest band takes to fall 80 dB.
    """
    if not (sr > 0):
        raise ValueError("sample rate must be positive")
    centers = [c for c in centers if c / math.sqrt(2) < sr / 2] or [min(centers)]
    rts = np.clip(_rt60_per_band(rt60, centers), 0.02, 30.0)
    if not np.isfinite(drr):
        raise ValueError("drr must be finite")
    d0 = int(round(max(0.0, predelay) * sr))
    n_tail = int(round((length if length is not None else rts.max() * 80.0 / 60.0) * sr))
    n_tail = max(n_tail, int(0.02 * sr))
    n = d0 + n_tail
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(n_tail)
    from scipy.fft import irfft, rfft

    spec = rfft(noise)
    freqs = np.fft.rfftfreq(n_tail, 1.0 / sr)
    masks = _band_masks(freqs, centers)
    t = np.arange(n_tail) / sr
    tail = np.zeros(n_tail)
    for k in range(len(centers)):
        env = 10.0 ** (-3.0 * t / rts[k])
        tail += irfft(spec * masks[k], n_tail) * env
    n_on = max(1, int(round(onset * sr)))
    fade = np.zeros(n_tail)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_on) / n_on)
    fade[n_on: 2 * n_on] = ramp[: max(0, min(n_on, n_tail - n_on))]
    fade[2 * n_on:] = 1.0
    tail *= fade
    h_tail = np.zeros(n)
    h_tail[d0:] = tail
    # scale the tail so drr_db(direct + g * tail) == drr, with drr_db's own window
    w = int(round(DIRECT_WINDOW_S * sr))
    lo, hi = max(0, d0 - w), d0 + w + 1
    p = h_tail * h_tail
    a = p[lo:hi].sum()  # tail energy inside the direct window
    b = p.sum() - a
    D = 10.0 ** (drr / 10.0)
    denom = D * b - a
    if b <= 0 or denom <= 0:
        raise ValueError(f"cannot reach DRR {drr:.1f} dB with onset {onset * 1e3:.1f} ms")
    g = 1.0 / math.sqrt(denom)
    h = g * h_tail
    h[d0] += 1.0
    h /= math.sqrt(np.sum(h * h))
    return h.astype(np.float32)


# =============================================================================================
# blind estimation from a reverberant recording


BLIND_SR = 16000
_BLIND_NFFT = 256  # 16 ms
_BLIND_HOP = 64  # 4 ms
BLIND_BANDS = (250, 500, 1000, 2000, 4000)
#: band groups whose energy envelopes are analysed (Hz)
BLIND_GROUPS = {"speech": SPEECH_BAND, "low": (177.0, 700.0), "mid": (700.0, 2000.0), "high": (2000.0, 5657.0)}
BLIND_WINDOWS = (10, 20, 40, 80, 160)  # decay-fit windows, frames of 4 ms (40 .. 640 ms)
BLIND_PERCENTILES = (2, 5, 10, 25, 50)
BLIND_MAX_S = 60.0  # longer references are analysed over their first minute
BLIND_MIN_S = 1.0
BLIND_MODEL_PATH = Path(__file__).resolve().parent / "assets" / "blind_estimator.json"
_blind_model_cache: dict = {}


@dataclass
class BlindEstimate:
    rt60: float  # speech-band RT60, seconds
    rt60_bands: dict  # {octave centre: seconds}
    drr_db: float
    n_decays: int  # falling windows seen in the speech band (few: the estimate leans on priors)
    features: dict = field(default_factory=dict)


def _stft_power(x: np.ndarray, nfft: int, hop: int) -> np.ndarray:
    """(frames, nfft//2+1) power spectrogram, periodic Hann window, frames centred with zero
    padding (``1 + len(x) // hop`` frames)."""
    win = np.hanning(nfft + 1)[:-1]
    xp = np.pad(x, (nfft // 2, nfft // 2))
    n_frames = 1 + (len(xp) - nfft) // hop
    idx = np.arange(nfft)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.fft.rfft(xp[idx] * win, axis=1)
    return spec.real ** 2 + spec.imag ** 2


def blind_features(x, sr: int) -> dict:
    """The statistics ``blind_estimate`` maps to RT60 and DRR, by name (see its docstring)."""
    from numpy.lib.stride_tricks import sliding_window_view

    from soundsight.audio import resample

    a = _as_1d(x, "signal").astype(np.float32)
    if len(a) < BLIND_MIN_S * sr:
        raise ValueError(f"the recording is too short for blind estimation ({len(a) / sr:.2f} s; "
                         f"at least {BLIND_MIN_S:g} s, better a few seconds of speech with pauses)")
    a = a[: int(BLIND_MAX_S * sr)]
    if sr != BLIND_SR:
        a = resample(a[None, :], sr, BLIND_SR)[0]
    a = a.astype(np.float64)
    if not np.any(a):
        raise ValueError("the recording is silent")
    P = _stft_power(a, _BLIND_NFFT, _BLIND_HOP)
    freqs = np.fft.rfftfreq(_BLIND_NFFT, 1.0 / BLIND_SR)
    hop_s = _BLIND_HOP / BLIND_SR
    feats: dict = {}
    n_decays = 0
    for gname, (lo, hi) in BLIND_GROUPS.items():
        e = P[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
        e = np.convolve(e, np.ones(3) / 3.0, mode="same")
        if e.max() <= 0:
            continue
        L = 10 * np.log10(e + e.max() * 1e-10)
        top = L.max()
        for K in BLIND_WINDOWS:
            if len(L) < K + 2:
                continue
            t = np.arange(K) - (K - 1) / 2.0
            win = sliding_window_view(L, K)
            slope = (win @ t) / float(np.sum(t * t)) / hop_s  # dB per second
            neg = slope[(win[:, 0] > top - 45.0) & (slope < 0)]
            if gname == "speech" and K == 40:
                n_decays = int(len(neg))
            if len(neg) < 6:
                continue
            for p in BLIND_PERCENTILES:
                q = float(np.percentile(neg, p))
                feats[f"{gname}_k{K}_p{p}"] = math.log(60.0 / max(-q, 1.0))  # log of a raw RT60
            feats[f"{gname}_k{K}_std"] = math.log(float(np.std(neg)) + 1.0)
        act = L > top - 50.0
        feats[f"{gname}_range"] = float(np.percentile(L[act], 95) - np.percentile(L[act], 10)) / 10.0
        env = e / (e.mean() + 1e-30)
        M = np.abs(np.fft.rfft(env - env.mean())) ** 2
        mf = np.fft.rfftfreq(len(env), hop_s)

        def band(f0, f1):
            return float(M[(mf >= f0) & (mf < f1)].sum()) + 1e-12

        ref = band(1.0, 4.0)
        feats[f"{gname}_mod4"] = math.log(band(4.0, 8.0) / ref)
        feats[f"{gname}_mod8"] = math.log(band(8.0, 16.0) / ref)
        feats[f"{gname}_mod16"] = math.log(band(16.0, 32.0) / ref)
    feats["_n_decays"] = n_decays
    return feats


def load_blind_model(path=None) -> dict:
    """The ridge-regression weights of the blind estimator (a small JSON asset)."""
    p = Path(path) if path else BLIND_MODEL_PATH
    key = str(p)
    if key not in _blind_model_cache:
        if not p.exists():
            raise FileNotFoundError(f"blind estimator weights not found: {p} "
                                    "(python -m soundsight_train.eval_rematch calibrate writes them)")
        _blind_model_cache[key] = json.loads(p.read_text())
    return _blind_model_cache[key]


def _predict(model: dict, feats: dict) -> dict:
    names = model["features"]
    mean = np.asarray(model["mean"])
    std = np.asarray(model["std"])
    x = np.array([feats.get(n, np.nan) for n in names], dtype=np.float64)
    x = np.where(np.isfinite(x), x, mean)  # a missing statistic takes its training mean
    z = (x - mean) / std
    out = {}
    for target, tw in model["targets"].items():
        v = float(tw["b"] + np.dot(tw["w"], z))
        out[target] = math.exp(v) if tw.get("log") else v
    return out


def blind_estimate(x, sr: int, *, model=None) -> BlindEstimate:
    """RT60 (speech band and per octave 250 Hz .. 4 kHz) and DRR from a reverberant recording
    alone (no dry reference).

    Method: decay-rate distributions (after Wen, Habets & Naylor 2008; Eaton, Gaubitch & Naylor
    2013) plus envelope statistics, mapped by ridge regression. The recording (mono, 16 kHz, at
    most a minute) is analysed in four band groups (the speech band 177 Hz .. 5.7 kHz, and
    177-700, 700-2000, 2000-5657 Hz) as energy envelopes in dB (STFT 16 ms Hann, 4 ms hop, 3
    frames smoothing). Over sliding windows of 40, 80, 160, 320 and 640 ms the least-squares
    decay rate is taken wherever the window starts within 45 dB of the maximum; the negative
    rates form the decay-rate distribution. A room can never decay faster than its own RT60
    allows, and after speech offsets the envelope falls at about that rate, so the fast end of
    the distribution (its 2, 5, 10, 25, 50th percentiles, as log(-60 / rate)) and its spread
    track RT60. Added per group: the envelope's 95-10 percentile range (reverberation fills the
    pauses) and modulation-energy ratios 4-8, 8-16, 16-32 Hz over 1-4 Hz (reverberation
    low-passes the envelope, as in the STI / SRMR). Standardised, these ~110 numbers map to log
    RT60 (speech band and each octave) and to DRR (dB) through a ridge regression fitted on
    simulated seen rooms of the rooms dataset (weights in ``assets/blind_estimator.json``,
    written by ``python -m soundsight_train.eval_rematch calibrate``, which also records the
    cross-validated error; the unseen-room error is in the evaluation table).
    Needs a few seconds of speech with pauses; noise, music and far-from-training speech
    (other languages, singing) are outside what it was fitted on.
    """
    m = model if isinstance(model, dict) else load_blind_model(model)
    f = blind_features(x, sr)
    pred = _predict(m, f)
    rt = float(np.clip(pred["rt60"], 0.05, 20.0))
    bands = {c: float(np.clip(pred.get(f"rt60_{c}", rt), 0.05, 20.0)) for c in BLIND_BANDS}
    return BlindEstimate(rt, bands, float(pred["drr"]), int(f.get("_n_decays", 0)), features=f)


def fit_blind_model(features: list[dict], targets: list[dict], *, lam: float = 30.0, info: dict | None = None) -> dict:
    """Ridge regression from ``blind_features`` dicts to targets (``{"rt60": s, "rt60_250": s,
    ..., "drr": dB}``; names starting with ``rt60`` are fitted in log). Returns the JSON-able
    model ``blind_estimate`` uses."""
    names = sorted({k for f in features for k in f if not k.startswith("_")})
    X = np.array([[f.get(n, np.nan) for n in names] for f in features], dtype=np.float64)
    mean = np.nanmean(X, axis=0)
    X = np.where(np.isfinite(X), X, mean)
    std = X.std(axis=0) + 1e-9
    Z = (X - mean) / std
    model = {"features": names, "mean": mean.tolist(), "std": std.tolist(), "targets": {}, "lambda": lam,
             "info": info or {}}
    for t in targets[0]:
        y = np.array([tt[t] for tt in targets], dtype=np.float64)
        log = t.startswith("rt60")
        if log:
            y = np.log(y)
        b = float(y.mean())
        w = np.linalg.solve(Z.T @ Z + lam * np.eye(Z.shape[1]), Z.T @ (y - b))
        model["targets"][t] = {"b": b, "w": w.tolist(), "log": log}
    return model


# =============================================================================================
# convolution


def _ir_2d(ir, channels: int) -> np.ndarray:
    h = np.asarray(ir, dtype=np.float64)
    if h.ndim == 1:
        h = h[None, :]
    if h.ndim != 2 or h.shape[1] == 0:
        raise ValueError(f"impulse response must be (n,) or (channels, n); got shape {np.shape(ir)}")
    if h.shape[0] not in (1, channels):
        raise ValueError(f"impulse response has {h.shape[0]} channels, the audio {channels}")
    return h


def convolve(x, ir) -> np.ndarray:
    """Full linear convolution (length n + len(ir) - 1, the tail kept) of (C, n) or (n,) audio
    with an IR (n_ir,) (every channel) or (C, n_ir) (channel by channel). float32 out."""
    from scipy.signal import fftconvolve

    a, one_d = _as_2d(x)
    h = _ir_2d(ir, a.shape[0])
    y = fftconvolve(a, np.broadcast_to(h, (a.shape[0], h.shape[1])), axes=1)
    y = y.astype(np.float32)
    return y[0] if one_d else y


class StreamingConvolver:
    """Overlap-add FFT convolution fed in blocks of any size, with bounded memory.

    ``process(block)`` returns as many samples as it was given; ``flush()`` returns the
    remaining ``len(ir) - 1`` samples of tail. Concatenated, the outputs equal ``convolve``
    (float64 arithmetic inside). Memory is O(channels x (segment + len(ir))): input is cut into
    segments of ``segment`` samples (default: max(len(ir), 16384)), each convolved with one
    FFT of ``next_fast_len(segment + len(ir) - 1)`` points.
    """

    def __init__(self, ir, channels: int = 1, *, segment: int | None = None):
        from scipy.fft import next_fast_len, rfft

        self.channels = int(channels)
        self.h = _ir_2d(ir, self.channels)
        self.L = self.h.shape[1]
        self.segment = int(segment) if segment else max(self.L, 16384)
        self.nfft = next_fast_len(self.segment + self.L - 1, real=True)
        self.H = rfft(self.h, self.nfft, axis=1)
        self.tail = np.zeros((self.channels, self.L - 1))
        self.closed = False

    def _segment(self, seg: np.ndarray) -> np.ndarray:
        from scipy.fft import irfft, rfft

        m = seg.shape[1]
        y = irfft(rfft(seg, self.nfft, axis=1) * self.H, self.nfft, axis=1)[:, : m + self.L - 1]
        y[:, : self.L - 1] += self.tail
        self.tail = y[:, m:].copy()
        return y[:, :m]

    def process(self, block) -> np.ndarray:
        if self.closed:
            raise RuntimeError("process() after flush()")
        a, one_d = _as_2d(block)
        if a.shape[0] != self.channels:
            raise ValueError(f"block has {a.shape[0]} channels, expected {self.channels}")
        outs = [self._segment(a[:, i: i + self.segment]) for i in range(0, a.shape[1], self.segment)]
        y = np.concatenate(outs, axis=1) if outs else np.zeros((self.channels, 0))
        y = y.astype(np.float32)
        return y[0] if one_d else y

    def flush(self) -> np.ndarray:
        self.closed = True
        return self.tail.astype(np.float32)


def convolve_stream(blocks: Iterable, ir, *, segment: int | None = None) -> Iterator[np.ndarray]:
    """Convolve a stream of (C, m) blocks with ``ir``; yields one output block per input block
    (same length) and finally the tail (len(ir) - 1 samples)."""
    conv = None
    for b in blocks:
        b = np.asarray(b)
        if b.ndim == 1:
            b = b[None, :]
        if conv is None:
            conv = StreamingConvolver(ir, b.shape[0], segment=segment)
        yield conv.process(b)
    if conv is not None:
        yield conv.flush()


def convolve_pedalboard(x, sr: int, ir) -> np.ndarray:
    """Full convolution through ``pedalboard.Convolution`` (JUCE, partitioned, multi-threaded).

    pedalboard scales the IR to 0.125 / ||ir||_2; that gain is measured with a probe impulse
    and undone, so the result equals ``convolve(x, ir)`` (float32 rounding). ``ir`` must be
    at the audio's rate (resample a measured IR first). Mono IR only (applied to every
    channel); the input is zero-padded by len(ir) - 1 to keep the tail."""
    import pedalboard

    a, one_d = _as_2d(x)
    h = _as_1d(ir, "ir").astype(np.float32)
    conv = pedalboard.Convolution(h, sample_rate=float(sr))
    probe = np.zeros((1, len(h)), np.float32)
    probe[0, 0] = 1.0
    hp = pedalboard.Convolution(h, sample_rate=float(sr)).process(probe, float(sr))[0].astype(np.float64)
    k = float(np.dot(hp, h) / np.dot(h, h))
    if not (k > 0):
        raise RuntimeError("pedalboard.Convolution returned silence for the probe impulse")
    pad = np.pad(a.astype(np.float32), ((0, 0), (0, len(h) - 1)))
    y = conv.process(pad, float(sr)).astype(np.float64) / k
    y = y.astype(np.float32)
    return y[0] if one_d else y


# =============================================================================================
# loudness


def k_weighting_sos(sr: int) -> np.ndarray:
    """ITU-R BS.1770 K-weighting (shelf + RLB high-pass) for any sample rate, as SOS (2, 6).

    The two biquads come from their analogue parameters by the bilinear transform (shelf
    ~1682 Hz, +4 dB; high-pass ~38 Hz, Q 0.5); at 48 kHz they reproduce the coefficients
    printed in the standard to 1e-6."""
    # stage 1: high shelf
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sr)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    b1 = [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]
    a1 = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    # stage 2: RLB high-pass
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sr)
    a0 = 1.0 + k / q + k * k
    b2 = [1.0, -2.0, 1.0]
    a2 = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([b1 + a1, b2 + a2])


class LoudnessMeter:
    """Integrated loudness (LUFS, BS.1770-4 gating) of audio fed block by block.

    Keeps the K-weighting filter state and one mean square per channel per 100 ms, so memory
    grows by 80 bytes per second per channel (a one-hour file: under 3 MB)."""

    def __init__(self, sr: int, channels: int = 1):
        from scipy.signal import sosfilt_zi

        self.sr = int(sr)
        self.channels = int(channels)
        self.sos = k_weighting_sos(self.sr)
        self.zi = np.repeat(sosfilt_zi(self.sos)[None] * 0.0, self.channels, axis=0)  # (C, 2, 2)
        self.step = max(1, int(round(0.1 * self.sr)))
        self.pending = np.zeros((self.channels, 0))
        self.ms: list[np.ndarray] = []  # per 100 ms: (C,) mean squares
        self.total_sq = np.zeros(self.channels)
        self.total_n = 0
        self.raw_sq = 0.0

    def add(self, block) -> None:
        from scipy.signal import sosfilt

        a, _ = _as_2d(block)
        if a.shape[0] != self.channels:
            raise ValueError(f"block has {a.shape[0]} channels, expected {self.channels}")
        self.raw_sq += float(np.sum(a * a))
        y = np.empty_like(a)
        for c in range(self.channels):
            y[c], self.zi[c] = sosfilt(self.sos, a[c], zi=self.zi[c])
        self.total_sq += np.sum(y * y, axis=1)
        self.total_n += a.shape[1]
        buf = np.concatenate([self.pending, y], axis=1)
        n_full = buf.shape[1] // self.step
        if n_full:
            seg = buf[:, : n_full * self.step].reshape(self.channels, n_full, self.step)
            self.ms.extend(np.mean(seg * seg, axis=2).T)
        self.pending = buf[:, n_full * self.step:]

    def lufs(self) -> float:
        """Integrated loudness; ``-inf`` for silence. Audio shorter than one 400 ms block is
        measured ungated over its whole length."""
        if self.total_n == 0:
            return float("-inf")
        if len(self.ms) < 4:
            z = self.total_sq / self.total_n
            s = float(np.sum(z))
            return -0.691 + 10 * math.log10(s) if s > 0 else float("-inf")
        ms = np.asarray(self.ms)  # (n, C)
        blocks = (ms[:-3] + ms[1:-2] + ms[2:-1] + ms[3:]) / 4.0  # 400 ms, 75 % overlap
        power = blocks.sum(axis=1)
        with np.errstate(divide="ignore"):
            lk = -0.691 + 10 * np.log10(power)
        g1 = lk > -70.0
        if not g1.any():
            return float("-inf")
        rel = -0.691 + 10 * math.log10(power[g1].mean()) - 10.0
        g2 = g1 & (lk > rel)
        return float(-0.691 + 10 * math.log10(power[g2].mean()))

    def rms_db(self) -> float:
        if self.total_n == 0 or self.raw_sq <= 0:
            return float("-inf")
        return float(10 * math.log10(self.raw_sq / (self.total_n * self.channels)))


def loudness_lufs(x, sr: int) -> float:
    a, _ = _as_2d(x)
    m = LoudnessMeter(sr, a.shape[0])
    m.add(a)
    return m.lufs()


def rms_db(x) -> float:
    a = np.asarray(x, dtype=np.float64)
    ms = float(np.mean(a * a)) if a.size else 0.0
    return 10 * math.log10(ms) if ms > 0 else float("-inf")


def loudness_gain_db(y, ref, sr: int, *, method: str = "lufs") -> float:
    """Gain (dB) that brings ``y`` to the loudness of ``ref`` (``lufs`` or ``rms``)."""
    if method == "rms":
        ly, lr = rms_db(y), rms_db(ref)
        return float(lr - ly) if np.isfinite(ly) and np.isfinite(lr) else 0.0
    if method != "lufs":
        raise ValueError(f"method must be 'lufs' or 'rms', got {method!r}")
    lr = loudness_lufs(ref, sr)
    ly = loudness_lufs(y, sr)
    if not (np.isfinite(ly) and np.isfinite(lr)):
        return 0.0
    # the absolute gate (-70 LUFS) is not scale invariant: refine until the level lands
    g = lr - ly
    yy = np.asarray(y, dtype=np.float64)
    for _ in range(3):
        got = loudness_lufs(yy * 10 ** (g / 20.0), sr)
        if not np.isfinite(got) or abs(got - lr) < 0.01:
            break
        g += lr - got
    return float(g)


def match_loudness(y, ref, sr: int, *, method: str = "lufs") -> tuple[np.ndarray, float]:
    """``y`` scaled to the loudness of ``ref``; returns (scaled, gain in dB). Silence stays."""
    g = loudness_gain_db(y, ref, sr, method=method)
    return (np.asarray(y, dtype=np.float32) * np.float32(10 ** (g / 20.0))), g


# =============================================================================================
# metrics

STFT_NFFT = 512
STFT_HOP = 128


def stft_magnitude(x, *, n_fft: int = STFT_NFFT, hop: int = STFT_HOP) -> np.ndarray:
    """(frames, n_fft//2+1) linear magnitude: periodic Hann window of n_fft, centred frames
    (zero padding of n_fft//2 each side), no normalisation (like ``torch.stft``'s default)."""
    a = _as_1d(x, "signal")
    return np.sqrt(_stft_power(a, n_fft, hop))


def stft_distance(a, b, *, n_fft: int = STFT_NFFT, hop: int = STFT_HOP) -> float:
    """Mean squared error between the STFT magnitudes of ``a`` and ``b`` (the shorter one is
    zero-padded to the longer)."""
    x = _as_1d(a, "a")
    y = _as_1d(b, "b")
    n = max(len(x), len(y))
    x = np.pad(x, (0, n - len(x)))
    y = np.pad(y, (0, n - len(y)))
    A = stft_magnitude(x, n_fft=n_fft, hop=hop)
    B = stft_magnitude(y, n_fft=n_fft, hop=hop)
    return float(np.mean((A - B) ** 2))
