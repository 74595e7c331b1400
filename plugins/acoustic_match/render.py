"""Streaming rendering for `rematch`: dry blocks in, a loudness-matched mix of dry and wet out.

Pass 1 reads the input in blocks, produces the wet signal with an *engine* (convolution with an
IR: ``ConvolutionEngine`` (scipy FFT overlap-add) or ``PedalboardConvolver`` (JUCE's partitioned
convolution); or the model itself: ``ModelEngine``, which runs ``ModelChunker`` over overlapping
chunks with crossfades), keeps its tail, spools it (``Spool``: in memory when small, else an
unlinked temporary file) and meters dry, wet and their cross term per 100 ms (``MixMeter``), so
the gains that put ``mix`` x wet + (1 - mix) x dry at the input's loudness (BS.1770, gated) are
known before anything is written. Pass 2 mixes, scales and hands blocks to a sink (the output
file); a peak over full scale restarts pass 2 at a lower level with a warning (never a silent
clip). Memory is bounded by the block size, the IR and the model's chunk, whatever the length.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from soundsight import console
from soundsight.errors import InputError, ModelError, OutputError

from . import acoustics as ac

MIN_SECONDS = 0.5  # shorter inputs carry too little to hear (or measure) a room in
SILENT_PEAK = 10 ** (-100 / 20)  # below -100 dBFS everywhere: treated as silence
BLOCK_S = 5.0  # streaming block
IR_MAX_S = 3.0  # longest room response the model path renders (rooms dataset: RT60 <= 2 s)
CHUNK_HOP_S = 8.0  # model chunks: output produced per model call...
CHUNK_CONTEXT_S = 2.0  # ...with this much earlier input so the reverb of the past is present
CHUNK_FADE_S = 0.25  # ...and a linear crossfade between neighbouring chunks
CAPTURE_S = 60.0  # the excerpt of input and output kept for the estimates and the report


# =============================================================================================
# helpers


def first_seconds(blocks: Iterator[np.ndarray], seconds: float, sr: int) -> np.ndarray:
    """Concatenate blocks until ``seconds`` are in hand (the rest of the stream is not read)."""
    want = int(round(seconds * sr))
    parts, got = [], 0
    for b in blocks:
        parts.append(b)
        got += b.shape[1]
        if got >= want:
            break
    if hasattr(blocks, "close"):
        blocks.close()
    if not parts:
        return np.zeros((1, 0), np.float32)
    return np.concatenate(parts, axis=1)[:, :want]


def to_mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0) if x.ndim == 2 else x


def json_num(v, nd: int = 4):
    if v is None:
        return None
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def _check_finite(w: np.ndarray) -> None:
    if not np.all(np.isfinite(w)):
        raise ModelError("the wet signal has NaN or infinite samples")


# =============================================================================================
# loudness of dry, wet and any mix of them, metered in one pass


class MixMeter:
    """BS.1770 loudness of ``a * dry + b * wet`` for any (a, b), from one pass over both.

    K-weighting is linear, so per 100 ms step and channel the sums of Kd^2, Kw^2 and Kd*Kw give
    the mean square of any mix; the 400 ms gated blocks (75 % overlap, absolute -70 LUFS and
    relative -10 LU gates, as ``acoustics.LoudnessMeter``) follow. Dry and wet may arrive in
    blocks of different sizes (the model path lags); the common prefix is metered. Memory: 24
    bytes per channel per 100 ms (one hour of stereo: 1.7 MB).
    """

    def __init__(self, sr: int, channels: int):
        self.sr, self.channels = int(sr), int(channels)
        self.sos = ac.k_weighting_sos(self.sr)
        self.sos = self.sos.astype(np.float32)
        self.zi = np.zeros((self.sos.shape[0], 2 * self.channels, 2), np.float32)  # dry channels, then wet
        self.step = max(1, int(round(0.1 * self.sr)))
        self.fifo = [[], []]  # raw dry / wet blocks not metered yet
        self.fifo_n = [0, 0]
        self.part = np.zeros((3, self.channels))  # sums of the current, unfinished step
        self.part_n = 0
        self.steps: list[np.ndarray] = []  # (3, C) per full step: dd, ww, dw
        self.n = [0, 0]

    def add(self, which: int, block: np.ndarray) -> None:
        if block.shape[1]:
            # float32 filtering (sums are float64): half the cost, far below a 0.01 LU error
            self.fifo[which].append(np.array(block, np.float32))
            self.fifo_n[which] += block.shape[1]
            self.n[which] += block.shape[1]
            self._advance()

    def add_dry(self, block):
        self.add(0, block)

    def add_wet(self, block):
        self.add(1, block)

    def _take(self, which: int, m: int) -> np.ndarray:
        out, got, q = [], 0, self.fifo[which]
        while got < m:
            b = q[0]
            k = min(m - got, b.shape[1])
            out.append(b[:, :k])
            if k == b.shape[1]:
                q.pop(0)
            else:
                q[0] = b[:, k:]
            got += k
        self.fifo_n[which] -= m
        return np.concatenate(out, axis=1) if len(out) > 1 else out[0]

    def _advance(self) -> None:
        from scipy.signal import sosfilt

        m = min(self.fifo_n)
        if m == 0:
            return
        both = np.concatenate([self._take(0, m), self._take(1, m)], axis=0)  # (2C, m)
        both, self.zi = sosfilt(self.sos, both, axis=-1, zi=self.zi)
        kd, kw = both[: self.channels], both[self.channels:]
        i = 0
        while i < m:
            k = min(m - i, self.step - self.part_n)
            d, w = kd[:, i: i + k], kw[:, i: i + k]
            self.part += np.stack([np.einsum("ij,ij->i", d, d, dtype=np.float64),
                                   np.einsum("ij,ij->i", w, w, dtype=np.float64),
                                   np.einsum("ij,ij->i", d, w, dtype=np.float64)])
            self.part_n += k
            i += k
            if self.part_n == self.step:
                self.steps.append(self.part)
                self.part = np.zeros((3, self.channels))
                self.part_n = 0

    def finish(self) -> None:
        """The dry signal ends where the input ends: zeros under the wet's tail."""
        self.dry_steps = self.n[0] // self.step  # the steps that lie inside the input
        if self.n[0] < self.n[1]:
            self.add_dry(np.zeros((self.channels, self.n[1] - self.n[0])))
        elif self.n[1] < self.n[0]:
            self.add_wet(np.zeros((self.channels, self.n[0] - self.n[1])))

    def lufs(self, a: float, b: float, *, upto: Optional[int] = None) -> float:
        """Integrated loudness of ``a * dry + b * wet`` (over the first ``upto`` 100 ms steps);
        -inf when everything is gated away."""
        if not self.steps or (upto is not None and upto < 1):
            s = self.part
            ms = (a * a * s[0] + b * b * s[1] + 2 * a * b * s[2]) / max(1, self.part_n)
            p = float(np.sum(ms))
            return -0.691 + 10 * math.log10(p) if p > 0 else float("-inf")
        S = np.asarray(self.steps[:upto] if upto is not None else self.steps)  # (n, 3, C)
        ms = (a * a * S[:, 0] + b * b * S[:, 1] + 2 * a * b * S[:, 2]) / self.step  # (n, C)
        if len(ms) < 4:
            p = float(np.sum(ms.mean(axis=0)))
            return -0.691 + 10 * math.log10(p) if p > 0 else float("-inf")
        power = ((ms[:-3] + ms[1:-2] + ms[2:-1] + ms[3:]) / 4.0).sum(axis=1)
        with np.errstate(divide="ignore"):
            lk = -0.691 + 10 * np.log10(np.maximum(power, 0.0))
        g1 = lk > -70.0
        if not g1.any():
            return float("-inf")
        rel = -0.691 + 10 * math.log10(power[g1].mean()) - 10.0
        g2 = g1 & (lk > rel)
        return float(-0.691 + 10 * math.log10(power[g2].mean()))

    def rms_db(self, a: float, b: float, *, upto: Optional[int] = None) -> float:
        steps = self.steps[:upto] if upto is not None else self.steps
        part, part_n = (self.part, self.part_n) if upto is None else (0.0, 0)
        S = np.asarray(steps).sum(axis=0) + part if steps else self.part
        n = self.step * len(steps) + part_n if steps else self.part_n
        p = float(np.sum(a * a * S[0] + b * b * S[1] + 2 * a * b * S[2])) / max(1, n * self.channels)
        return 10 * math.log10(p) if p > 0 else float("-inf")

    def gain_to(self, target: float, a: float, b: float, *, gated: bool = True) -> float:
        """Scale g such that ``g * (a * dry + b * wet)`` has loudness ``target`` (LUFS, or RMS dB
        with ``gated=False``). The absolute gate is not scale invariant: refined a few times."""
        f = self.lufs if gated else self.rms_db
        level = f(a, b)
        if not (np.isfinite(level) and np.isfinite(target)):
            return float("nan")
        g = 10 ** ((target - level) / 20.0)
        for _ in range(4):
            got = f(g * a, g * b)
            if not np.isfinite(got) or abs(got - target) < 0.005:
                break
            g *= 10 ** ((target - got) / 20.0)
        return float(g)


# =============================================================================================
# spool: the wet signal between the passes


class Spool:
    """float32 (C, n) blocks written once and read back in order: in memory up to
    ``max_memory`` bytes, then in an unlinked temporary file (nothing left behind on a crash)."""

    def __init__(self, channels: int, directory=None, max_memory: int = 256 << 20):
        self.channels = int(channels)
        self.directory = directory
        self.max_memory = int(max_memory)
        self.mem: list[np.ndarray] = []
        self.mem_bytes = 0
        self.file = None
        self.n = 0
        self._pos = 0
        self._head: Optional[np.ndarray] = None

    def write(self, block: np.ndarray) -> None:
        b = np.ascontiguousarray(block, dtype=np.float32)
        if b.shape[1] == 0:
            return
        self.n += b.shape[1]
        if self.file is None and self.mem_bytes + b.nbytes <= self.max_memory:
            self.mem.append(b)
            self.mem_bytes += b.nbytes
            return
        if self.file is None:
            try:
                self.file = tempfile.TemporaryFile(dir=self.directory)
            except OSError:
                self.file = tempfile.TemporaryFile()
            for m in self.mem:
                self.file.write(m.T.tobytes())
            self.mem, self.mem_bytes = [], 0
        self.file.write(b.T.tobytes())

    def rewind(self) -> None:
        self._pos = 0
        self._head = None
        if self.file is not None:
            self.file.flush()
            self.file.seek(0)

    def read(self, m: int) -> np.ndarray:
        """The next ``m`` samples (fewer at the end)."""
        if self.file is not None:
            raw = self.file.read(m * self.channels * 4)
            return np.frombuffer(raw, dtype=np.float32).reshape(-1, self.channels).T
        out, got = [], 0
        while got < m and (self._head is not None or self._pos < len(self.mem)):
            if self._head is None:
                self._head = self.mem[self._pos]
                self._pos += 1
            k = min(m - got, self._head.shape[1])
            out.append(self._head[:, :k])
            self._head = self._head[:, k:] if k < self._head.shape[1] else None
            got += k
        if not out:
            return np.zeros((self.channels, 0), np.float32)
        return np.concatenate(out, axis=1) if len(out) > 1 else out[0]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.mem = []


# =============================================================================================
# wet engines: dry blocks in, wet blocks out (tail on finish)


class ConvolutionEngine:
    """Overlap-add FFT convolution (``acoustics.StreamingConvolver``). Segments of 3 x the IR
    (at least 2^17 samples): an FFT of ~4 x the IR per 3 x the IR of input is ~1.5x cheaper per
    sample than its default (one IR length per FFT of two)."""

    def __init__(self, ir: np.ndarray, channels: int):
        n_ir = np.shape(ir)[-1]
        self.conv = ac.StreamingConvolver(ir, channels, segment=max(3 * n_ir, 1 << 17))

    def process(self, block: np.ndarray) -> np.ndarray:
        return self.conv.process(block)

    def finish(self) -> np.ndarray:
        return self.conv.flush()


class PedalboardConvolver:
    """Streaming convolution through ``pedalboard.Convolution`` (JUCE, partitioned): blocks in,
    as many samples out, then the ``len(ir) - 1`` samples of tail. pedalboard scales the IR to
    0.125 / ||ir||_2; that gain is measured with a probe impulse and undone (as
    ``acoustics.convolve_pedalboard``). A (C, n) IR is applied channel by channel."""

    def __init__(self, ir: np.ndarray, sr: int, channels: int):
        import pedalboard

        h = np.atleast_2d(np.asarray(ir, dtype=np.float32))
        self.sr = float(sr)
        self.channels = int(channels)
        self.L = h.shape[1]
        self.per_channel = h.shape[0] > 1
        self.convs, self.gains = [], []
        for row in h:
            row = np.ascontiguousarray(row)
            probe = np.zeros((1, self.L), np.float32)
            probe[0, 0] = 1.0
            hp = pedalboard.Convolution(row, sample_rate=self.sr).process(probe, self.sr)[0].astype(np.float64)
            k = float(np.dot(hp, row) / np.dot(row.astype(np.float64), row))
            if not k > 0:
                raise RuntimeError("pedalboard.Convolution returned silence for the probe impulse")
            self.convs.append(pedalboard.Convolution(row, sample_rate=self.sr))
            self.gains.append(np.float32(1.0 / k))

    def process(self, block: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(block, dtype=np.float32)
        if not self.per_channel:
            return self.convs[0].process(x, self.sr, reset=False) * self.gains[0]
        return np.stack([c.process(x[i: i + 1], self.sr, reset=False)[0] * g
                         for i, (c, g) in enumerate(zip(self.convs, self.gains))])

    def finish(self) -> np.ndarray:
        return self.process(np.zeros((self.channels, self.L - 1), np.float32))


class ModelChunker:
    """Runs ``model.match`` over a 16 kHz mono stream in overlapping chunks.

    Chunk k renders output samples [kH, (k+1)H) from input [kH - C, (k+1)H + X): ``C`` seconds of
    earlier input so the reverberation of what came before is present, ``X`` more so that the
    next chunk's first ``X`` samples crossfade (linearly) from this chunk's rendering into its
    own. Input is zero before 0 and after the end; ``finish(total)`` renders up to ``total``
    samples (input plus the tail). ``render(window) -> output`` is the model call.
    """

    def __init__(self, render: Callable[[np.ndarray], np.ndarray], sr: int, *, hop_s: float = CHUNK_HOP_S,
                 context_s: float = CHUNK_CONTEXT_S, fade_s: float = CHUNK_FADE_S):
        self.render = render
        self.H = max(1, int(round(hop_s * sr)))
        self.C = int(round(context_s * sr))
        self.X = min(int(round(fade_s * sr)), self.H)
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0  # stream index of buf[0]
        self.k = 0
        self.prev: Optional[np.ndarray] = None  # previous chunk's rendering of the next X samples
        self.n_in = 0

    def _segment(self) -> np.ndarray:
        k, H, C, X = self.k, self.H, self.C, self.X
        a, b = max(0, k * H - C), (k + 1) * H + X
        win = self.buf[a - self.buf_start: b - self.buf_start]
        if len(win) < b - a:
            win = np.pad(win, (0, b - a - len(win)))
        y = np.asarray(self.render(win), dtype=np.float32)
        off = k * H - a
        out = y[off: off + H].copy()
        if self.prev is not None and X:
            r = (np.arange(X, dtype=np.float32) + 0.5) / X
            out[:X] = self.prev * (1 - r) + out[:X] * r
        self.prev = y[off + H: off + H + X].copy()
        self.k += 1
        drop = max(0, (self.k * H - C) - self.buf_start)
        if drop:
            self.buf = self.buf[drop:]
            self.buf_start += drop
        return out

    def feed(self, x: np.ndarray) -> list[np.ndarray]:
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])
        self.n_in += len(x)
        outs = []
        while self.buf_start + len(self.buf) >= (self.k + 1) * self.H + self.X:
            outs.append(self._segment())
        return outs

    def finish(self, total: int) -> list[np.ndarray]:
        outs = []
        while self.k * self.H < total:
            outs.append(self._segment())
        done = sum(len(o) for o in outs)
        before = (self.k * self.H) - done
        keep = total - before
        if outs and keep < done:  # cut the last chunk(s) at ``total``
            cut, acc = [], 0
            for o in outs:
                take = min(len(o), keep - acc)
                if take <= 0:
                    break
                cut.append(o[:take])
                acc += take
            outs = cut
        return outs


class ModelEngine:
    """Waveform mode: downmix, resample to the model's rate, chunked model, resample back, the
    same wet signal on every channel. Output length: input + ``tail_s`` (the tail rendered from
    zero-padding)."""

    def __init__(self, render: Callable[[np.ndarray], np.ndarray], model_sr: int, sr: int, channels: int,
                 *, tail_s: float = IR_MAX_S, input_gain: float = 1.0, **chunk_kw):
        import soxr

        self.sr, self.msr, self.channels = int(sr), int(model_sr), int(channels)
        self.tail_s = tail_s
        self.gain = np.float32(input_gain)
        self.chunker = ModelChunker(render, self.msr, **chunk_kw)
        self.down = soxr.ResampleStream(sr, model_sr, 1, dtype="float32", quality="HQ") if sr != model_sr else None
        self.up = soxr.ResampleStream(model_sr, sr, 1, dtype="float32", quality="HQ") if sr != model_sr else None
        self.n_in = 0
        self.n_out = 0
        self.total = None

    def _to_model(self, x: np.ndarray, last: bool) -> np.ndarray:
        if self.down is None:
            return x
        return np.asarray(self.down.resample_chunk(np.ascontiguousarray(x), last=last), np.float32).reshape(-1)

    def _from_model(self, y: list[np.ndarray], last: bool) -> np.ndarray:
        z = np.concatenate(y) if y else np.zeros(0, np.float32)
        if self.up is not None:
            z = np.asarray(self.up.resample_chunk(np.ascontiguousarray(z), last=last), np.float32).reshape(-1)
        if self.total is not None:  # exact length: input + tail at the input's rate
            z = z[: max(0, self.total - self.n_out)]
            if last and self.n_out + len(z) < self.total:
                z = np.pad(z, (0, self.total - self.n_out - len(z)))
        self.n_out += len(z)
        return np.repeat(z[None, :], self.channels, axis=0)

    def process(self, block: np.ndarray) -> np.ndarray:
        self.n_in += block.shape[1]
        x = to_mono(block).astype(np.float32) * self.gain
        return self._from_model(self.chunker.feed(self._to_model(x, False)), False)

    def finish(self) -> np.ndarray:
        tail = self._to_model(np.zeros(0, np.float32), True)
        outs = self.chunker.feed(tail) if len(tail) else []
        self.total = self.n_in + int(round(self.tail_s * self.sr))
        total_m = int(math.ceil(self.total * self.msr / self.sr)) + 64
        outs += self.chunker.finish(total_m)
        return self._from_model(outs, True)


# =============================================================================================
# rendering: two passes


@dataclass
class Pass1:
    n: int  # input samples per channel
    wet_n: int
    meter: MixMeter
    peak_dry: float
    peak_wet: float
    spool: Spool
    capture_in: np.ndarray  # (C, <= CAPTURE_S) of the input
    hi_band_db: Optional[float]  # energy above 8 kHz relative to the total (waveform mode)


def pass1(blocks: Iterator[np.ndarray], engine, sr: int, channels: int, spool: Spool, *,
          measure_hi_band: bool = False) -> Pass1:
    meter = MixMeter(sr, channels)
    n = wet_n = 0
    peak_d = peak_w = 0.0
    cap, cap_n, cap_max = [], 0, int(CAPTURE_S * sr)
    e_hi = e_all = 0.0
    for d in blocks:
        n += d.shape[1]
        peak_d = max(peak_d, float(np.max(np.abs(d))) if d.size else 0.0)
        meter.add_dry(d)
        if cap_n < cap_max:
            cap.append(d[:, : cap_max - cap_n])
            cap_n += cap[-1].shape[1]
        if measure_hi_band and d.shape[1] > 16:
            P = np.abs(np.fft.rfft(to_mono(d).astype(np.float64))) ** 2
            fb = np.fft.rfftfreq(d.shape[1], 1.0 / sr)
            e_hi += float(P[fb > 8000.0].sum())
            e_all += float(P.sum())
        w = engine.process(d)
        if w.shape[1]:
            _check_finite(w)
            peak_w = max(peak_w, float(np.max(np.abs(w))))
            meter.add_wet(w)
            spool.write(w)
            wet_n += w.shape[1]
    w = engine.finish()
    if w.shape[1]:
        _check_finite(w)
        peak_w = max(peak_w, float(np.max(np.abs(w))))
        meter.add_wet(w)
        spool.write(w)
        wet_n += w.shape[1]
    meter.finish()
    capture = np.concatenate(cap, axis=1) if cap else np.zeros((channels, 0), np.float32)
    hi = None
    if measure_hi_band and e_all > 0:
        hi = 10 * math.log10(max(e_hi, 1e-30) / e_all)
    return Pass1(n, wet_n, meter, peak_d, peak_w, spool, capture, hi)


def mix_gains(p1: Pass1, mix: float) -> tuple[float, float, dict]:
    """(a, b): output = a * dry + b * wet, at the input's loudness, wet weighted by ``mix`` after
    both are brought to the same loudness. Falls back to RMS where gating leaves nothing."""
    m = p1.meter
    gated = np.isfinite(m.lufs(1.0, 0.0, upto=m.dry_steps)) and np.isfinite(m.lufs(0.0, 1.0))
    level = m.lufs if gated else m.rms_db
    target = level(1.0, 0.0, upto=m.dry_steps)  # the input alone, not the silence under the tail
    if mix <= 0.0:
        return 1.0, 0.0, {"input_lufs": json_num(target, 2), "method": "lufs" if gated else "rms", "wet_gain_db": None}
    g_w = m.gain_to(target, 0.0, 1.0, gated=gated)
    if not np.isfinite(g_w) or g_w <= 0:
        raise ModelError("the wet signal is silent; nothing to mix")
    a0, b0 = 1.0 - mix, mix * g_w
    g = m.gain_to(target, a0, b0, gated=gated) if mix < 1.0 else 1.0
    if not np.isfinite(g) or g <= 0:  # dry and wet cancel: keep the unnormalised mix
        g = 1.0
    return g * a0, g * b0, {"input_lufs": json_num(target, 2), "method": "lufs" if gated else "rms",
                            "wet_gain_db": json_num(20 * math.log10(g_w), 2), "mix_gain_db": json_num(20 * math.log10(g), 2)}


class _Overflow(Exception):
    def __init__(self, peak: float):
        self.peak = peak


def pass2(p1: Pass1, a: float, b: float, dry_blocks: Optional[Callable[[], Iterator[np.ndarray]]], out_len: int,
          sink, *, block: int, scale: float = 1.0, capture_len: int = 0) -> tuple[float, np.ndarray]:
    """Mix, scale and hand ``out_len`` samples to ``sink(block)``; returns (peak, captured
    output start). Once a sample goes over full scale nothing more is written, the rest is only
    measured, and ``_Overflow(peak of the whole output)`` is raised at the end."""
    C = p1.spool.channels
    p1.spool.rewind()
    it = dry_blocks() if (a != 0.0 and dry_blocks is not None) else None
    done = 0
    peak = 0.0
    cap, cap_n = [], 0
    a32, b32 = np.float32(a * scale), np.float32(b * scale)
    try:
        while done < out_len:
            d = next(it, None) if it is not None else None
            m = d.shape[1] if d is not None else block
            m = min(m, out_len - done)
            if d is not None and d.shape[1] > m:
                d = d[:, :m]
            w = p1.spool.read(m) if b32 != 0 else np.zeros((C, 0), np.float32)
            y = np.zeros((C, m), np.float32)
            if d is not None:
                y[:, : d.shape[1]] += a32 * d
            if w.shape[1]:
                y[:, : w.shape[1]] += b32 * w
            pk = float(np.max(np.abs(y))) if y.size else 0.0
            peak = max(peak, pk)
            done += m
            if peak > 1.0:
                continue  # this attempt is lost: measure the rest for the exact level
            if cap_n < capture_len:
                cap.append(y[:, : capture_len - cap_n].copy())
                cap_n += cap[-1].shape[1]
            sink(y)
    finally:
        if it is not None and hasattr(it, "close"):
            it.close()
    if peak > 1.0:
        raise _Overflow(peak)
    capture = np.concatenate(cap, axis=1) if cap else np.zeros((C, 0), np.float32)
    return peak, capture


def render(blocks: Callable[[], Iterator[np.ndarray]], engine, sr: int, channels: int, *, mix: float,
           open_sink: Callable, spool_dir=None, block_s: float = BLOCK_S, measure_hi_band: bool = False,
           trim_tail: bool = False, what: str = "output") -> dict:
    """Both passes. ``open_sink()`` returns a context manager yielding ``write(block)``; it is
    opened again (at a lower level) if the first attempt would clip."""
    spool = Spool(channels, spool_dir)
    try:
        p1 = pass1(blocks(), engine, sr, channels, spool, measure_hi_band=measure_hi_band)
        if p1.n < MIN_SECONDS * sr:
            raise InputError(f"the audio is too short ({p1.n / sr:.2f} s; rematch needs at least {MIN_SECONDS:g} s)")
        if p1.peak_dry < SILENT_PEAK:
            raise InputError("the audio is silent; there is nothing to rematch")
        a, b, levels = mix_gains(p1, mix)
        out_len = p1.wet_n if b != 0.0 else p1.n  # no wet at all: the input as it was
        if trim_tail and b != 0.0:
            out_len = _trim_silent_tail(p1, out_len)
        capture_len = min(out_len, int(CAPTURE_S * sr) + max(0, out_len - p1.n))
        block = int(block_s * sr)
        scale = 1.0
        bound = abs(a) * p1.peak_dry + abs(b) * p1.peak_wet
        if a == 0.0 or b == 0.0:  # the output's peak is known exactly
            if bound > 1.0:
                scale = _limit_scale(bound, what)
        for _ in range(2):
            try:
                with open_sink() as sink:
                    peak, cap = pass2(p1, a, b, blocks, out_len, sink, block=block, scale=scale, capture_len=capture_len)
                break
            except _Overflow as ov:  # a mix of dry and wet peaked higher than either: again, lower
                scale *= _limit_scale(ov.peak, what)
        else:  # pragma: no cover - the second attempt is scaled by the exact peak
            raise OutputError(f"{what}: could not bring the peak under full scale")
        levels.update({"peak_dbfs": json_num(20 * math.log10(peak), 2) if peak > 0 else None,
                       "limited_db": json_num(-20 * math.log10(scale), 2) if scale < 1.0 else 0.0})
        return {"n": p1.n, "out_len": out_len, "levels": levels, "capture_in": p1.capture_in, "capture_out": cap,
                "hi_band_db": p1.hi_band_db, "gains": (a * scale, b * scale)}
    finally:
        spool.close()


def _limit_scale(peak: float, what: str) -> float:
    """The scale that puts ``peak`` at the core writer's limit (-0.01 dBFS), with its warning
    (the core's ``apply_peak_policy("limit")`` in words and level)."""
    from soundsight.audio import LIMIT_PEAK

    s = LIMIT_PEAK / peak
    console.warn(f"{what}: peak was {20 * math.log10(peak):+.2f} dBFS; lowered the level by "
                 f"{-20 * math.log10(s):.2f} dB to avoid clipping")
    return s


def _trim_silent_tail(p1: Pass1, out_len: int) -> int:
    """Waveform mode renders a fixed tail; cut it where the wet signal has fallen 80 dB below its
    loudest 100 ms (kept whole when it never does)."""
    steps = np.asarray(p1.meter.steps)
    if len(steps) == 0:
        return out_len
    ww = steps[:, 1].sum(axis=1)
    alive = np.nonzero(ww > ww.max() * 1e-8)[0]
    if len(alive) == 0:
        return out_len
    end = (int(alive[-1]) + 2) * p1.meter.step
    return int(min(out_len, max(p1.n, end)))
