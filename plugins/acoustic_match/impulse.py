"""Impulse responses for `rematch`: from a reverberant recording (blind), from a file, from the model.

- ``ir_from_reference``: the blind reverberator: octave RT60s + DRR of a reverberant recording
  (``acoustics.blind_estimate``) shape exponentially decaying noise (``acoustics.synthetic_ir``)
  at the input's rate.
- ``ir_from_params``: the same synthesis from given parameters (``--room`` in params mode: the
  ones a picture model predicts, ``picture_params``).
- ``ir_from_file``: a measured IR at the input's rate (trailing silence cut).
- ``ir_from_model``: the model renders one excerpt of the input (``EXCERPT_S``, the most active
  stretch of the first ``SCAN_S``; plus ``IR_MAX_S`` of silence for the tail); the effective IR
  of its output is deconvolved (``acoustics.estimate_ir``), cut where it meets the
  deconvolution's error floor, kept where speech excites it (the 250 Hz .. 4 kHz octaves) and
  continued outside that band, up to the input's Nyquist frequency, by decaying noise whose band
  RT60s and level carry on the measured ones (``extend_ir``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from soundsight import console
from soundsight.errors import InputError, ModelError

from . import acoustics as ac
from .render import IR_MAX_S, SILENT_PEAK, first_seconds, json_num, to_mono

EXCERPT_S = 8.0  # ir mode: the model hears this much of the input (plenty to deconvolve a room)...
SCAN_S = 120.0  # ...the most active stretch of the first two minutes
MODEL_INPUT_RMS = 0.05  # speech level the rooms dataset trains on (-26 dBFS RMS of active speech)
MEASURED_IR_MAX_S = 30.0
# where an IR deconvolved from speech is trustworthy (the 250 Hz .. 4 kHz octaves) and the
# crossover widths (Hz) to the synthetic continuation on either side
IR_TRUSTED_BAND = ac.SPEECH_BAND
IR_LOW_XOVER = (125.0, 177.0)
IR_HIGH_XOVER = (5000.0, 6300.0)


# =============================================================================================
# impulse responses


@dataclass
class IRInfo:
    source: str  # "like", "ir" or "room"
    sr: int
    length_s: float
    rt60: float  # broadband Schroeder T30 of the IR used
    rt60_speech: float  # the same on the speech band (the number comparable across methods)
    drr_db: float
    extra: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def warn(self, msg: str) -> None:
        console.warn(msg)
        self.warnings.append(msg)

    def to_dict(self) -> dict:
        return {"source": self.source, "length_s": round(self.length_s, 4),
                "length_samples": int(round(self.length_s * self.sr)), "rt60": json_num(self.rt60),
                "rt60_speech": json_num(self.rt60_speech), "drr_db": json_num(self.drr_db), **self.extra}


def _measure_ir(h: np.ndarray, sr: int) -> tuple[float, float, float]:
    m = to_mono(np.asarray(h, np.float64))
    return ac.rt60_schroeder(m, sr), ac.rt60_schroeder(m, sr, band=ac.SPEECH_BAND), ac.drr_db(m, sr)


def ir_from_reference(path, sr: int, *, seed: int = 0) -> tuple[np.ndarray, IRInfo]:
    """The blind reverberator: RT60 per octave + DRR of a reverberant recording -> synthetic IR."""
    from soundsight.audio import stream_audio

    x = first_seconds(stream_audio(path, 10.0, sr=ac.BLIND_SR, channels=1, min_samples=1), ac.BLIND_MAX_S,
                       ac.BLIND_SR)[0]
    if len(x) < ac.BLIND_MIN_S * ac.BLIND_SR:
        raise InputError(f"{path} is too short to estimate its room from ({len(x) / ac.BLIND_SR:.2f} s; "
                         f"at least {ac.BLIND_MIN_S:g} s, better a few seconds of speech with pauses)")
    if float(np.max(np.abs(x))) < SILENT_PEAK:
        raise InputError(f"{path} is silent; nothing to estimate its room from")
    est = ac.blind_estimate(x, ac.BLIND_SR)
    h, info = ir_from_params(est.rt60_bands, est.drr_db, sr, source="like", seed=seed)
    info.extra["reference"] = {"path": str(path), "rt60": json_num(est.rt60), "drr_db": json_num(est.drr_db),
                               "rt60_bands": {str(k): json_num(v) for k, v in est.rt60_bands.items()},
                               "decays_seen": est.n_decays}
    if est.n_decays < 50:
        info.warn(f"{path}: few sound decays to measure ({est.n_decays}); the room estimate leans on its priors "
                  "(a few seconds of speech with pauses works best)")
    return h, info


def ir_from_params(rt60_bands: dict, drr_db: float, sr: int, *, source: str, seed: int = 0,
                   extra: Optional[dict] = None) -> tuple[np.ndarray, IRInfo]:
    """The blind reverberator's synthesis: octave RT60s ``{centre Hz: s}`` + DRR (dB) -> exponentially
    decaying noise with a direct impulse (``acoustics.synthetic_ir``) at ``sr``, and what it measures."""
    h = ac.synthetic_ir(rt60_bands, drr_db, sr, seed=seed)
    rt, rts, drr = _measure_ir(h, sr)
    return h, IRInfo(source, sr, len(h) / sr, rt, rts, drr, extra=dict(extra or {}))


def ir_from_file(path, sr: int, channels: int) -> tuple[np.ndarray, IRInfo]:
    """A measured IR file at the input's rate: (1, L) or (channels, L), trailing silence cut."""
    from soundsight.audio import probe_audio, resample, stream_audio

    notes: list[str] = []
    ir_sr = int(probe_audio(path, decode=False)["samplerate"])
    # at most MEASURED_IR_MAX_S (+ a little, to know that there was more) is ever decoded
    h = first_seconds(stream_audio(path, 10.0, min_samples=2), MEASURED_IR_MAX_S + 0.01, ir_sr)
    peak = float(np.max(np.abs(h))) if h.size else 0.0
    if peak < SILENT_PEAK:
        raise InputError(f"{path} is silent; not an impulse response")
    if h.shape[0] not in (1, channels):
        notes.append(f"{path} has {h.shape[0]} channels and the audio {channels}; using the IR's mean over channels")
        h = h.mean(axis=0, keepdims=True)
    loud = np.nonzero(np.max(np.abs(h), axis=0) > peak * 1e-5)[0]  # -100 dB of the peak
    h = h[:, : int(loud[-1]) + 1]
    if h.shape[1] > MEASURED_IR_MAX_S * ir_sr:
        notes.append(f"{path} is longer than {MEASURED_IR_MAX_S:g} s; using its first {MEASURED_IR_MAX_S:g} s")
        h = h[:, : int(MEASURED_IR_MAX_S * ir_sr)]
    if ir_sr != sr:
        h = resample(h, ir_sr, sr)
    if ir_sr < sr and ir_sr < 32000:
        notes.append(f"{path} is sampled at {ir_sr} Hz: the output has no reverberation above {ir_sr // 2000} kHz")
    rt, rts, drr = _measure_ir(h, sr)
    k = int(np.argmax(np.abs(to_mono(h))))
    info = IRInfo("ir", sr, h.shape[1] / sr, rt, rts, drr, extra={
        "path": str(path), "file_rate": int(ir_sr), "channels": int(h.shape[0]), "predelay_ms": round(1000 * k / sr, 2)})
    for msg in notes:
        info.warn(msg)
    return h.astype(np.float32), info


def _finite_positive(values: dict) -> dict:
    good = {k: v for k, v in values.items() if v is not None and np.isfinite(v) and v > 0}
    return good


def extend_ir(h_low: np.ndarray, sr_low: int, sr: int, *, seed: int = 0,
              trusted=IR_TRUSTED_BAND, low_xover=IR_LOW_XOVER, high_xover=IR_HIGH_XOVER) -> tuple[np.ndarray, dict]:
    """An IR known only inside ``trusted`` (Hz) at ``sr_low``, continued to the full band at ``sr``.

    Outside the trusted band, a deconvolved IR is noise (speech does not excite it) and above
    ``sr_low / 2`` it is nothing at all. The continuation is ``acoustics.synthetic_ir`` with the
    IR's own octave RT60s (250 Hz .. 4 kHz, held beyond) and DRR, its direct sound at the IR's
    peak, scaled to the IR's level just inside each edge of the trusted band; the two are joined
    in the frequency domain with amplitude-complementary raised-cosine crossovers (log frequency)
    ``low_xover`` and ``high_xover``: the direct sounds, aligned, add up exactly; the two
    (independent) tails dip by at most 3 dB mid-crossover. The FFT is zero-padded by 0.25 s so
    the crossovers' ringing does not wrap around. Returns the IR at ``sr`` and what was measured.
    """
    from scipy.fft import irfft, next_fast_len, rfft

    from soundsight.audio import resample

    h = np.asarray(h_low, dtype=np.float64).reshape(-1)
    bands = _finite_positive(ac.rt60_bands(h, sr_low, centers=ac.BLIND_BANDS))
    rt_broad = ac.rt60_schroeder(h, sr_low, band=trusted)
    if not bands:
        bands = {1000: rt_broad if np.isfinite(rt_broad) and rt_broad > 0 else 0.05}
    drr = ac.drr_db(h, sr_low)
    drr = float(np.clip(drr if np.isfinite(drr) else 30.0, -25.0, 30.0))
    k0 = int(np.argmax(np.abs(h)))
    hu = resample(h.astype(np.float32)[None, :], sr_low, sr)[0].astype(np.float64) if sr != sr_low else h
    L = len(hu)
    predelay = k0 / sr_low
    try:
        syn = ac.synthetic_ir(bands, drr, sr, predelay=predelay, length=max(L / sr - predelay, 0.05), seed=seed)
    except ValueError:  # an unreachable DRR for the onset: fall back to a drier one
        syn = ac.synthetic_ir(bands, 10.0, sr, predelay=predelay, length=max(L / sr - predelay, 0.05), seed=seed)
    syn = syn[:L].astype(np.float64)
    if len(syn) < L:
        syn = np.pad(syn, (0, L - len(syn)))
    n = next_fast_len(L + int(0.25 * sr))
    E, S = rfft(hu, n), rfft(syn, n)
    f = np.fft.rfftfreq(n, 1.0 / sr)
    lf = np.log2(np.maximum(f, 1e-3))

    def ramp(f0, f1):  # 0 below f0, 1 above f1, raised cosine in log frequency
        u = np.clip((lf - math.log2(f0)) / (math.log2(f1) - math.log2(f0)), 0.0, 1.0)
        return 0.5 - 0.5 * np.cos(np.pi * u)

    hi1, hi2 = high_xover
    hi2 = min(hi2, 0.9 * sr_low / 2)
    hi1 = min(hi1, 0.8 * hi2)
    w_est = ramp(*low_xover) * (1.0 - ramp(hi1, hi2))
    w_syn = 1.0 - w_est

    def level(X, lo, hi):
        sel = (f >= lo) & (f < hi)
        return float(np.sum(np.abs(X[sel]) ** 2)) if sel.any() else 0.0

    def gain(lo, hi):
        es, ss = level(E, lo, hi), level(S, lo, hi)
        return math.sqrt(es / ss) if ss > 0 and es > 0 else 0.0

    g_lo = gain(trusted[0], 2 * trusted[0])
    g_hi = gain(trusted[1] / 2, min(trusted[1], hi1))
    g = np.where(f < math.sqrt(trusted[0] * trusted[1]), g_lo, g_hi)
    out = irfft(E * w_est + S * w_syn * g, n)[:L]
    return out.astype(np.float32), {
        "rt60_bands": {str(k): json_num(v) for k, v in bands.items()}, "drr_db": json_num(drr),
        "predelay_ms": round(1000 * predelay, 2), "crossovers_hz": [list(low_xover), [round(hi1), round(hi2)]]}


def clean_estimated_ir(h: np.ndarray, sr: int) -> tuple[np.ndarray, Optional[float]]:
    """Cut a deconvolved IR where its decay meets the deconvolution's error floor (Lundeby-style
    truncation of ``acoustics.decay_fit``), with a 50 ms fade, so the floor is not convolved in."""
    fit = ac.decay_fit(h, sr, band=ac.SPEECH_BAND)
    t = fit.truncated_at_s
    if t is None or not np.isfinite(t):
        return h, None
    end = min(len(h), int(round(t * sr)) + int(0.05 * sr))
    start = max(0, end - int(0.05 * sr))
    out = np.array(h[:end], dtype=np.float64)
    out[start:end] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(end - start) / max(1, end - start))
    return out, float(t)


def choose_excerpt(x: np.ndarray, sr: int, seconds: float = EXCERPT_S) -> tuple[int, int]:
    """(start, end) of the ``seconds`` of ``x`` with the most active 100 ms frames (within 40 dB
    of the loudest), ties to the louder: where a room's response is best heard."""
    n = len(x)
    w = int(round(seconds * sr))
    if n <= w:
        return 0, n
    hop = max(1, int(0.1 * sr))
    nf = n // hop
    e = np.mean(x[: nf * hop].astype(np.float64).reshape(nf, hop) ** 2, axis=1)
    active = (e > e.max() * 1e-4).astype(np.float64) + 1e-6 * e / (e.max() + 1e-30)
    k = max(1, w // hop)
    score = np.convolve(active, np.ones(k), mode="valid")
    i = int(np.argmax(score))
    return i * hop, min(n, i * hop + w)


def active_rms(x: np.ndarray, sr: int) -> float:
    """RMS over the 50 ms frames within 40 dB of the loudest (the level of the speech itself)."""
    hop = max(1, int(0.05 * sr))
    nf = len(x) // hop
    if nf == 0:
        return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    e = np.mean(x[: nf * hop].astype(np.float64).reshape(nf, hop) ** 2, axis=1)
    act = e > e.max() * 1e-4
    return float(np.sqrt(e[act].mean())) if act.any() else 0.0


# =============================================================================================
# the model


def image_tensor(img, size: int):
    """A picture (PIL image or uint8 (H, W, 3)) -> float (1, 3, size, size) in [0, 1]: the
    central square, resized (bicubic), so the room is not squashed."""
    import torch
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8))
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    if s != size:
        img = img.resize((size, size), Image.BICUBIC)
    a = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(a.transpose(2, 0, 1).copy())[None]


def model_renderer(model, image, device=None, *, multiple: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """``render(x)`` for ``ModelChunker``: one ``model.match`` call on a (n,) window (zero-padded
    to a multiple of ``multiple`` samples, cut back), float32 out."""
    import torch

    tdev = getattr(device, "torch_device", None) or torch.device(device or "cpu")
    img = image.to(tdev)
    autocast = device.autocast() if hasattr(device, "autocast") else None

    def render(x: np.ndarray) -> np.ndarray:
        n = len(x)
        pad = (-n) % multiple
        w = torch.from_numpy(np.pad(np.asarray(x, np.float32), (0, pad)))[None, None].to(tdev)
        with torch.inference_mode():
            if autocast is not None:
                with device.autocast():
                    y = model.match(w, img)
            else:
                y = model.match(w, img)
        y = y.float().reshape(-1).cpu().numpy()[:n]
        if not np.all(np.isfinite(y)):
            raise ModelError("the acoustic-match model returned NaN or infinite samples")
        return y

    return render


def ir_from_model(render, model_sr: int, excerpt: np.ndarray, sr: int, *, seed: int = 0) -> tuple[np.ndarray, IRInfo]:
    """IR mode: the model renders the excerpt (plus ``IR_MAX_S`` of silence for the tail); the
    effective IR of its output is deconvolved, cut at its error floor and continued to the full
    band at ``sr`` (``extend_ir``)."""
    tail = int(round(IR_MAX_S * model_sr))
    dry = np.pad(np.asarray(excerpt, np.float32), (0, tail))
    wet = render(dry)  # one call: the excerpt is short, and no chunk seams enter the IR
    if not np.any(wet):
        raise ModelError("the acoustic-match model returned silence")
    h = ac.estimate_ir(dry, wet, length=tail, sr=model_sr)
    h, cut = clean_estimated_ir(h, model_sr)
    rt16, rts16, drr16 = _measure_ir(h, model_sr)
    full, ext = extend_ir(h, model_sr, sr, seed=seed)
    rt, rts, drr = _measure_ir(full, sr)
    info = IRInfo("room", sr, len(full) / sr, rt, rts, drr, extra={
        "estimated": {"sample_rate": model_sr, "rt60": json_num(rt16), "rt60_speech": json_num(rts16), "drr_db": json_num(drr16),
                      "truncated_at_s": json_num(cut), "excerpt_s": round(len(excerpt) / model_sr, 2)},
        "extension": ext})
    return full, info


# =============================================================================================
# params mode: a picture -> the blind reverberator's parameters


PARAMS_DRR_RANGE = (-25.0, 30.0)  # dB: what synthetic_ir can reach with its 4 ms onset, and then some


def picture_params(model, image) -> dict:
    """``model`` (``room_params_net.RoomParamsNet``) on a picture (``image_tensor`` of it at the
    model's size): ``{"rt60": s, "rt60_bands": {250: s, ...}, "drr_db": dB}``."""
    import torch

    with torch.inference_mode():
        p = model.estimate(image.to(next(model.parameters()).device))[0]
    values = [p["rt60"], p["drr_db"], *p["rt60_bands"].values()]
    if not all(np.isfinite(v) for v in values):
        raise ModelError("the room-acoustics model returned NaN or infinite parameters")
    return p


def ir_from_picture(model, image, sr: int, *, seed: int = 0) -> tuple[np.ndarray, IRInfo]:
    """Params mode: the picture model's octave RT60s + DRR rendered by the blind reverberator's
    synthesis at ``sr``; the prediction is recorded under ``predicted``."""
    p = picture_params(model, image)
    drr = float(np.clip(p["drr_db"], *PARAMS_DRR_RANGE))
    h, info = ir_from_params(p["rt60_bands"], drr, sr, source="room", seed=seed, extra={"predicted": {
        "rt60": json_num(p["rt60"]), "drr_db": json_num(p["drr_db"]),
        "rt60_bands": {str(k): json_num(v) for k, v in p["rt60_bands"].items()}}})
    if drr != p["drr_db"]:
        info.warn(f"the predicted DRR {p['drr_db']:.1f} dB is outside {PARAMS_DRR_RANGE}; using {drr:.1f} dB")
    return h, info
