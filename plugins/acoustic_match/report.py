"""The `rematch --report` picture: input and output spectrograms side by side, with the RT60s.

Drawn with numpy + Pillow (matplotlib is not a dependency): log-magnitude STFTs on one shared
dB scale (80 dB range, a perceptual dark-to-bright colour map), a linear frequency axis up to the
output's Nyquist frequency (so a band lost above 8 kHz shows), the same time axis for both (the
input panel is silent where the output's tail rings on), titles with the estimates.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

PANEL_W, PANEL_H = 560, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B, GAP = 58, 16, 64, 58, 40
MAX_SECONDS = 30.0
RANGE_DB = 80.0
# (position, RGB) anchors of the colour map: black -> indigo -> magenta -> orange -> pale yellow
_CMAP = [(0.0, (0, 0, 4)), (0.25, (59, 15, 112)), (0.5, (183, 55, 121)), (0.75, (252, 137, 97)),
         (1.0, (252, 253, 191))]


def colour_map(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB by linear interpolation between the anchors."""
    pos = np.array([p for p, _ in _CMAP])
    cols = np.array([c for _, c in _CMAP], dtype=np.float64)
    v = np.clip(v, 0.0, 1.0)
    return np.stack([np.interp(v, pos, cols[:, k]) for k in range(3)], axis=-1).astype(np.uint8)


def spectrogram_db(x: np.ndarray, sr: int, n_cols: int, seconds: float) -> tuple[np.ndarray, int]:
    """(freq bins, n_cols) power in dB of the first ``seconds`` of mono ``x`` (zero-padded):
    Hann window of ~43 ms, hops chosen so there is about one frame per column."""
    n = int(round(seconds * sr))
    x = np.pad(np.asarray(x, np.float64)[:n], (0, max(0, n - len(x))))
    n_fft = 1 << int(round(math.log2(max(64, 0.043 * sr))))
    hop = max(1, n // n_cols)
    win = np.hanning(n_fft + 1)[:-1]
    xp = np.pad(x, (n_fft // 2, n_fft // 2))
    frames = 1 + (len(xp) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    # at most a few thousand frames: memory stays small whatever the length
    spec = np.abs(np.fft.rfft(xp[idx] * win, axis=1)) ** 2
    return 10 * np.log10(spec.T + 1e-20), n_fft


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizing
        return ImageFont.load_default()


def _nice_step(span: float, target: int) -> float:
    raw = span / max(1, target)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _fmt(v, unit=" s", nd=2):
    return "n/a" if v is None else f"{v:.{nd}f}{unit}"


def _titles(report: dict) -> tuple[list[str], list[str], str]:
    est = report.get("estimates") or {}
    ein, eout = est.get("input") or {}, est.get("output") or {}
    eff = est.get("output_vs_input") or {}
    ir = report.get("ir") or {}
    left = [f"input: {Path(str(report.get('audio', ''))).name}",
            f"RT60 {_fmt(ein.get('rt60'))}, DRR {_fmt(ein.get('drr_db'), ' dB', 1)} (blind estimate)"]
    how = {"room": f"--room, {report.get('mode')} mode ({report.get('model')})", "like": "--like (blind reverberator)",
           "ir": "--ir (measured IR)"}.get(report.get("source"), "")
    right = [f"output: {how}, mix {report.get('mix', 1.0):g}",
             f"RT60 {_fmt(eout.get('rt60'))} blind, {_fmt(eff.get('rt60_speech'))} measured against the input"]
    foot = []
    if ir:
        foot.append(f"impulse response: RT60 {_fmt(ir.get('rt60_speech'))} (speech band), "
                    f"DRR {_fmt(ir.get('drr_db'), ' dB', 1)}, {_fmt(ir.get('length_s'))}")
        ref = ir.get("reference")
        if ref:
            foot.append(f"reference recording: RT60 {_fmt(ref.get('rt60'))}, DRR {_fmt(ref.get('drr_db'), ' dB', 1)}")
    foot.append(f"{report.get('sample_rate')} Hz, {report.get('channels')} ch; loudness matched to the input "
                f"({_fmt((report.get('loudness') or {}).get('input_lufs'), ' LUFS', 1)})")
    return left, right, "   |   ".join(foot)


def render_report(capture_in: np.ndarray, capture_out: np.ndarray, sr: int, report: dict):
    """The report as a PIL image."""
    from PIL import Image, ImageDraw

    xin = np.asarray(capture_in, np.float64)
    xout = np.asarray(capture_out, np.float64)
    xin = xin.mean(axis=0) if xin.ndim == 2 else xin
    xout = xout.mean(axis=0) if xout.ndim == 2 else xout
    seconds = max(0.1, min(MAX_SECONDS, max(len(xin), len(xout)) / sr))
    s_in, _ = spectrogram_db(xin, sr, PANEL_W, seconds)
    s_out, _ = spectrogram_db(xout, sr, PANEL_W, seconds)
    top = max(float(s_in.max()), float(s_out.max()))
    W = MARGIN_L + 2 * PANEL_W + GAP + MARGIN_L + MARGIN_R
    H = MARGIN_T + PANEL_H + MARGIN_B + 22
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    f_title, f_small = _font(14), _font(11)
    left, right, foot = _titles(report)
    nyq = sr / 2.0
    for k, (S, title) in enumerate(((s_in, left), (s_out, right))):
        x0 = MARGIN_L + k * (PANEL_W + GAP + MARGIN_L)
        y0 = MARGIN_T
        v = (S - (top - RANGE_DB)) / RANGE_DB
        rgb = colour_map(v[::-1])  # low frequencies at the bottom
        panel = Image.fromarray(rgb).resize((PANEL_W, PANEL_H), Image.BILINEAR)
        img.paste(panel, (x0, y0))
        draw.rectangle([x0 - 1, y0 - 1, x0 + PANEL_W, y0 + PANEL_H], outline=(0, 0, 0))
        draw.text((x0, 8), title[0], fill=(0, 0, 0), font=f_title)
        draw.text((x0, 28), title[1], fill=(40, 40, 40), font=f_title)
        t_step = _nice_step(seconds, 8)
        t = 0.0
        while t <= seconds + 1e-9:
            px = x0 + int(round(t / seconds * (PANEL_W - 1)))
            draw.line([px, y0 + PANEL_H, px, y0 + PANEL_H + 4], fill=(0, 0, 0))
            draw.text((px - 8, y0 + PANEL_H + 6), f"{t:g}", fill=(0, 0, 0), font=f_small)
            t += t_step
        draw.text((x0 + PANEL_W // 2 - 30, y0 + PANEL_H + 22), "time (s)", fill=(0, 0, 0), font=f_small)
        f_step = _nice_step(nyq / 1000.0, 6)
        f = 0.0
        while f * 1000 <= nyq + 1e-6:
            py = y0 + PANEL_H - int(round(f * 1000 / nyq * (PANEL_H - 1)))
            draw.line([x0 - 5, py, x0 - 1, py], fill=(0, 0, 0))
            draw.text((x0 - 30, py - 6), f"{f:g}", fill=(0, 0, 0), font=f_small)
            f += f_step
        draw.text((x0 - 54, y0 - 16), "kHz", fill=(0, 0, 0), font=f_small)
        if nyq > 8000:  # the model's band edge
            py = y0 + PANEL_H - int(round(8000 / nyq * (PANEL_H - 1)))
            for px in range(x0, x0 + PANEL_W, 12):
                draw.line([px, py, px + 5, py], fill=(255, 255, 255))
    draw.text((MARGIN_L, H - 20), foot, fill=(40, 40, 40), font=f_small)
    return img


def write_report(path, capture_in, capture_out, sr: int, report: dict, *, provenance: dict | None = None) -> Path:
    from soundsight.image import save_image

    return save_image(path, render_report(capture_in, capture_out, sr, report), provenance=provenance)
