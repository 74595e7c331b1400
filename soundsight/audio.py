"""Audio I/O: load, stream, mix, measure and save.

Conventions (see DESIGN.md, "Media conventions"):

- Arrays are float32 shaped ``(channels, samples)``; full scale is 1.0.
- Any of wav/flac/ogg/mp3 is read, at any rate and channel count. Decoders are tried in order:
  soundfile (libsndfile), then ``pedalboard.io.AudioFile``, then ffmpeg (the imageio-ffmpeg
  binary; it covers m4a/aac/opus/video soundtracks).
- Resampling uses soxr (``RESAMPLE_QUALITY``); downmixing to mono is the channel mean, to stereo
  a normalised ITU-style fold-down for common layouts (centre and surrounds at -3 dB, LFE
  dropped).
- Every problem with an input file raises ``InputError`` with one line naming the file.
  An all-silent file is *not* an error here; callers decide.

Heavy libraries (soundfile, soxr, pedalboard) are imported inside functions so importing this
module (and ``soundsight --help``) stays fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from soundsight import console
from soundsight.errors import InputError, OutputError
from soundsight.inputs import check_input_file

RESAMPLE_QUALITY = "HQ"

#: extension -> (soundfile format, default subtype) for ``save_audio``
WRITE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".oga": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".aif": ("AIFF", "PCM_16"),
    ".aiff": ("AIFF", "PCM_16"),
}

PEAK_POLICIES = ("limit", "warn", "error")
LIMIT_PEAK = 0.999  # about -0.01 dBFS

_READ_BLOCK = 65536  # frames per read when loading through a stream


# --------------------------------------------------------------------------------------------
# file checks and decoder back-ends


def _check_file(path) -> Path:
    return check_input_file(path, "audio file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[-1].strip()
    for prefix in ("Error : ", "Error: "):
        if line.startswith(prefix):
            line = line[len(prefix):]
    return line.rstrip(".")


def _check_wav_truncation(path: Path) -> None:
    """libsndfile silently reads what is there when a WAV file was cut short; catch that.

    Compares the declared size of the ``data`` chunk with the bytes actually in the file.
    Placeholder sizes (0 or 0xFFFFFFFF, written by streaming writers) are accepted.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            pos = 12
            for _ in range(10000):
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    return
                cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"data":
                    if csize in (0, 0xFFFFFFFF):
                        return
                    have = size - pos - 8
                    if csize - have > 1:  # one pad byte of slack
                        raise InputError(
                            f"{path} is truncated (its header promises {csize} bytes of audio, "
                            f"the file holds {max(have, 0)})"
                        )
                    return
                pos += 8 + csize + (csize & 1)
    except OSError:
        return


class _Source:
    """A decoded audio stream: samplerate, channels, frames (None if unknown), blocks(n)."""

    backend = "?"
    format = "?"
    subtype: str | None = None
    frames: int | None = None
    samplerate: int = 0
    channels: int = 0
    exact_frames = True  # whether `frames` is exact (mp3 headers give estimates)

    def read(self, n: int) -> np.ndarray:  # (channels, <=n) float32; 0 columns at the end
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_MPEG_SUFFIXES = (".mp3", ".mp2", ".mpga", ".mpeg")


@contextlib.contextmanager
def _c_stderr_silenced(active: bool = True):
    """Silence the C library's own stderr chatter (libsndfile's mpg123 prints "Note: ..."
    lines for damaged mp3s), so a bad input still yields exactly one error line."""
    if not active:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _SoundFileSource(_Source):
    backend = "soundfile"

    def __init__(self, path: Path):
        import soundfile as sf

        self.path = path
        self._mpeg = path.suffix.lower() in _MPEG_SUFFIXES
        with _c_stderr_silenced(self._mpeg):
            self.f = sf.SoundFile(str(path))
        self.samplerate = int(self.f.samplerate)
        self.channels = int(self.f.channels)
        self.frames = int(self.f.frames)
        self.format = self.f.format
        self.subtype = self.f.subtype
        self.exact_frames = self.format not in ("MP3", "MPEG")
        self._mpeg = self._mpeg or not self.exact_frames
        if self.format in ("WAV", "WAVEX"):
            try:
                _check_wav_truncation(path)
            except InputError:
                self.f.close()
                raise

    def read(self, n: int) -> np.ndarray:
        try:
            with _c_stderr_silenced(self._mpeg):
                block = self.f.read(n, dtype="float32", always_2d=True)
        except Exception as exc:
            raise InputError(f"{self.path} is corrupt or truncated ({_first_line(exc)})") from None
        return block.T

    def close(self) -> None:
        self.f.close()


class _PedalboardSource(_Source):
    backend = "pedalboard"

    def __init__(self, path: Path):
        from pedalboard.io import AudioFile

        self.path = path
        self.f = AudioFile(str(path))
        self.samplerate = int(round(float(self.f.samplerate)))
        self.channels = int(self.f.num_channels)
        self.frames = int(self.f.frames)
        self.format = path.suffix.lstrip(".").upper() or "?"
        self.exact_frames = self.format != "MP3"

    def read(self, n: int) -> np.ndarray:
        try:
            block = self.f.read(n)
        except Exception as exc:
            raise InputError(f"{self.path} is corrupt or truncated ({_first_line(exc)})") from None
        return np.asarray(block, dtype=np.float32).reshape(self.channels, -1)

    def close(self) -> None:
        self.f.close()


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped with imageio-ffmpeg (the one moviepy uses)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class _FfmpegSource(_Source):
    """Decode the first audio stream of anything ffmpeg reads, as float32 WAV through a pipe."""

    backend = "ffmpeg"
    exact_frames = False

    def __init__(self, path: Path):
        self.path = path
        self.format = path.suffix.lstrip(".").upper() or "?"
        self.frames = None
        self._err = tempfile.TemporaryFile()
        cmd = [
            ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", str(path),
            "-map", "0:a:0", "-vn", "-sn", "-dn", "-c:a", "pcm_f32le", "-f", "wav", "-",
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err
        )
        try:
            self._read_header()
        except BaseException:
            self.close()
            raise

    def _fail(self) -> InputError:
        self.proc.wait()
        self._err.seek(0)
        text = self._err.read().decode("utf-8", "replace")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        msg = lines[-1] if lines else ""
        if "matches no streams" in text:
            return InputError(f"{self.path} has no audio track")
        if "Invalid data" in text or not msg:
            return InputError(f"{self.path} is not a readable audio file")
        # ffmpeg prefixes errors with the file name; keep the reason only
        reason = msg.split(": ", 1)[-1] if str(self.path) in msg else msg
        return InputError(f"{self.path} is corrupt or truncated ({reason})")

    def _exact(self, n: int) -> bytes:
        data = self.proc.stdout.read(n)
        if len(data) < n:
            raise self._fail()
        return data

    def _read_header(self) -> None:
        head = self._exact(12)
        if head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise self._fail()
        fmt = None
        for _ in range(64):
            cid, csize = struct.unpack("<4sI", self._exact(8))
            if cid == b"data":
                break
            body = self._exact(csize + (csize & 1))
            if cid == b"fmt ":
                fmt = body
        else:
            raise self._fail()
        if fmt is None:
            raise self._fail()
        tag, channels, rate = struct.unpack("<HHI", fmt[:8])
        bits = struct.unpack("<H", fmt[14:16])[0]
        if bits != 32 or channels < 1:
            raise self._fail()
        self.channels, self.samplerate = int(channels), int(rate)
        self._pending = b""

    def read(self, n: int) -> np.ndarray:
        want = n * self.channels * 4
        data = self._pending + (self.proc.stdout.read(want - len(self._pending)) or b"")
        usable = len(data) - len(data) % (self.channels * 4)
        self._pending = data[usable:]
        if usable == 0:
            if self.proc.wait() != 0:
                raise self._fail()
            return np.zeros((self.channels, 0), np.float32)
        x = np.frombuffer(data[:usable], dtype="<f4").astype(np.float32)
        return x.reshape(-1, self.channels).T

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()
        self._err.close()


_BACKENDS = {"soundfile": _SoundFileSource, "pedalboard": _PedalboardSource, "ffmpeg": _FfmpegSource}


def _open_source(path, backend: str | None = None) -> _Source:
    """Open ``path`` with the first decoder that accepts it; InputError (one line) if none."""
    p = _check_file(path)
    if backend is not None:
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {sorted(_BACKENDS)}, got {backend!r}")
        try:
            return _BACKENDS[backend](p)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{path} is not a readable audio file ({_first_line(exc)})") from None
    first_error: Exception | None = None
    try:
        return _SoundFileSource(p)
    except InputError:
        raise
    except Exception as exc:  # libsndfile does not know the container, or the file is damaged
        first_error = exc
    try:
        return _PedalboardSource(p)
    except Exception:
        pass
    try:
        return _FfmpegSource(p)
    except InputError as exc:
        msg = str(exc)
        if "has no audio track" in msg:
            raise
        sf_msg = _first_line(first_error) if first_error else ""
        unknown = ("not recognised", "unknown format", "not a regular file")
        if sf_msg and not any(u in sf_msg.lower() for u in unknown):
            # libsndfile knew the format but the content is broken
            reason = sf_msg.split(": ", 1)[-1] if sf_msg.startswith("Error opening") else sf_msg
            raise InputError(f"{path} is corrupt or truncated ({reason})") from None
        raise
    except OSError as exc:  # ffmpeg binary missing or not runnable
        raise InputError(f"{path} is not a readable audio file ({_first_line(exc)})") from None


def _check_block(path, block: np.ndarray) -> None:
    if not np.isfinite(block).all():
        raise InputError(f"{path} contains NaN or infinite samples")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _check_length(path, frames: int, min_samples: int) -> None:
    if frames < min_samples:
        raise InputError(
            f"{path} is too short ({_plural(frames, 'sample')}; at least {min_samples} are needed)"
        )


def _check_truncated_read(path, src: _Source, got: int) -> None:
    """Compare what was decoded with what the header promised."""
    if src.frames is None or got >= src.frames:
        return
    missing = src.frames - got
    if src.exact_frames:
        raise InputError(
            f"{path} is truncated (decoded {got} of {src.frames} samples per channel)"
        )
    # mp3 headers only estimate the length; a big shortfall still means a cut file
    if missing > max(4608, 0.02 * src.frames):
        console.warn(
            f"{path} ended early: decoded {got} of about {src.frames} samples; "
            "the file may be truncated"
        )


# --------------------------------------------------------------------------------------------
# channel conversion and resampling

_SQ = 1 / math.sqrt(2)
# rows: output left/right; columns: input channels in WAVE order
_STEREO_FOLD = {
    3: [[1, 0, _SQ], [0, 1, _SQ]],  # FL FR FC
    4: [[1, 0, _SQ, 0], [0, 1, 0, _SQ]],  # FL FR BL BR
    5: [[1, 0, _SQ, _SQ, 0], [0, 1, _SQ, 0, _SQ]],  # FL FR FC BL BR
    6: [[1, 0, _SQ, 0, _SQ, 0], [0, 1, _SQ, 0, 0, _SQ]],  # 5.1
    7: [[1, 0, _SQ, 0, 0.5, _SQ, 0], [0, 1, _SQ, 0, 0.5, 0, _SQ]],  # 6.1
    8: [[1, 0, _SQ, 0, _SQ, 0, _SQ, 0], [0, 1, _SQ, 0, 0, _SQ, 0, _SQ]],  # 7.1
}


def _stereo_matrix(n: int) -> np.ndarray:
    if n in _STEREO_FOLD:
        m = np.asarray(_STEREO_FOLD[n], dtype=np.float64)
    else:  # unknown layout: alternate channels left/right
        m = np.zeros((2, n))
        m[0, 0::2] = 1.0
        m[1, 1::2] = 1.0
    return m / m.sum(axis=1, keepdims=True)  # weighted mean: full-scale in, full-scale out


def convert_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    """(C, n) -> (channels, n): 1 = mean, 2 = duplicate mono / fold down surround."""
    have = x.shape[0]
    if channels is None or channels == have:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    if channels == 2:
        if have == 1:
            return np.repeat(x, 2, axis=0)
        return (_stereo_matrix(have) @ x.astype(np.float64)).astype(np.float32)
    raise ValueError(f"cannot convert {have} channels to {channels} (only 1 or 2)")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (C, n) float32 with soxr."""
    if sr_in == sr_out or x.shape[-1] == 0:
        return x
    import soxr

    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, x.shape[0]).T)


def _check_request(sr, channels) -> None:
    if sr is not None and (not isinstance(sr, (int, np.integer)) or sr <= 0):
        raise ValueError(f"sample rate must be a positive integer, got {sr!r}")
    if channels is not None and channels not in (1, 2):
        raise ValueError(f"channels must be None, 1 or 2, got {channels!r}")


# --------------------------------------------------------------------------------------------
# public API: probe / load / stream


def probe_audio(path, *, decode: bool = True, min_samples: int = 16) -> dict:
    """Describe an audio file: path, format, subtype, samplerate, channels, frames, duration.

    With ``decode`` (default) the whole file is decoded (in blocks, bounded memory) so the
    same problems ``load_audio`` reports are found here and ``frames`` is exact; with
    ``decode=False`` only the header is read (fast, but mp3 lengths are estimates).
    """
    with _open_source(path) as src:
        frames = src.frames
        if decode:
            got = 0
            while True:
                block = src.read(_READ_BLOCK)
                if block.shape[1] == 0:
                    break
                _check_block(path, block)
                got += block.shape[1]
            _check_truncated_read(path, src, got)
            frames = got
            _check_length(path, frames, min_samples)
        return {
            "path": str(path),
            "format": src.format,
            "subtype": src.subtype,
            "samplerate": src.samplerate,
            "channels": src.channels,
            "frames": frames,
            "duration": (frames / src.samplerate) if frames is not None else None,
        }


def load_audio(
    path, sr: int | None = None, channels: int | None = None, *, min_samples: int = 16,
    backend: str | None = None,
) -> tuple[np.ndarray, int]:
    """Load a whole file as float32 ``(channels, n)`` at ``sr`` (None: native rate).

    ``channels``: None keeps the file's channels, 1 downmixes (mean), 2 duplicates mono or
    folds surround down to stereo. ``min_samples`` is checked at the native rate.
    ``backend`` forces one decoder ("soundfile", "pedalboard", "ffmpeg"); None tries them
    in that order.
    """
    _check_request(sr, channels)
    with _open_source(path, backend) as src:
        if src.frames is not None and src.exact_frames and src.frames > 0:
            block = src.read(src.frames)
            parts = [block]
            while block.shape[1]:  # headers can under-report; read on until the end
                block = src.read(_READ_BLOCK)
                if block.shape[1]:
                    parts.append(block)
        else:
            parts = []
            while True:
                block = src.read(_READ_BLOCK)
                if block.shape[1] == 0:
                    break
                parts.append(block)
        x = parts[0] if len(parts) == 1 else (
            np.concatenate(parts, axis=1) if parts else np.zeros((src.channels, 0), np.float32)
        )
        _check_truncated_read(path, src, x.shape[1])
        native_sr = src.samplerate
    _check_block(path, x)
    _check_length(path, x.shape[1], min_samples)
    x = np.ascontiguousarray(x, dtype=np.float32)
    out_sr = native_sr if sr is None else int(sr)
    if channels is not None and channels < x.shape[0]:
        x = resample(convert_channels(x, channels), native_sr, out_sr)
    else:
        x = convert_channels(resample(x, native_sr, out_sr), channels)
    return x, out_sr


def stream_audio(
    path, block_seconds: float, sr: int | None = None, channels: int | None = None,
    *, min_samples: int = 16,
) -> Iterator[np.ndarray]:
    """Yield float32 ``(channels, n)`` blocks of ``block_seconds`` (the last may be shorter).

    Memory stays bounded by the block size. Resampling runs through one persistent
    ``soxr.ResampleStream`` so the concatenated blocks equal ``load_audio`` (to float
    rounding). The file is opened and checked when this is called; decoding problems found
    later (corrupt data, NaN) raise ``InputError`` from the iteration.
    """
    _check_request(sr, channels)
    if not (block_seconds > 0 and math.isfinite(block_seconds)):
        raise ValueError(f"block_seconds must be positive, got {block_seconds!r}")
    src = _open_source(path)
    if src.frames is not None and src.exact_frames:
        try:
            _check_length(path, src.frames, min_samples)
        except InputError:
            src.close()
            raise
    return _stream(path, src, block_seconds, sr, channels, min_samples)


def _stream(path, src: _Source, block_seconds, sr, channels, min_samples):
    native_sr = src.samplerate
    out_sr = native_sr if sr is None else int(sr)
    out_block = max(1, int(round(block_seconds * out_sr)))
    in_block = max(256, int(round(block_seconds * native_sr)))
    n_out_ch = src.channels if channels is None else channels
    downmix_first = channels is not None and channels < src.channels
    rs_ch = n_out_ch if downmix_first else src.channels
    stream = None
    if out_sr != native_sr:
        import soxr

        stream = soxr.ResampleStream(
            native_sr, out_sr, rs_ch, dtype="float32", quality=RESAMPLE_QUALITY
        )
    pending: list[np.ndarray] = []
    pending_n = 0
    got = 0

    def convert(block: np.ndarray, last: bool) -> np.ndarray:
        if downmix_first:
            block = convert_channels(block, channels)
        if stream is not None:
            y = stream.resample_chunk(np.ascontiguousarray(block.T), last=last)
            block = np.asarray(y, dtype=np.float32).reshape(-1, rs_ch).T
        if not downmix_first:
            block = convert_channels(block, channels)
        return block

    try:
        while True:
            block = src.read(in_block)
            n = block.shape[1]
            if n:
                _check_block(path, block)
                got += n
            last = n == 0
            if last:
                _check_truncated_read(path, src, got)
                _check_length(path, got, min_samples)
                if stream is None:
                    break
                block = np.zeros((src.channels, 0), np.float32)
            y = convert(block, last)
            if y.shape[1]:
                pending.append(y)
                pending_n += y.shape[1]
            while pending_n >= out_block:
                buf = np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
                yield np.ascontiguousarray(buf[:, :out_block])
                rest = buf[:, out_block:]
                pending, pending_n = ([rest] if rest.shape[1] else []), rest.shape[1]
            if last:
                break
        if pending_n:
            buf = np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
            yield np.ascontiguousarray(buf)
    finally:
        src.close()


# --------------------------------------------------------------------------------------------
# mix expressions


def _parse_gain(text: str) -> float | None:
    try:
        g = float(text)
    except ValueError:
        return None
    return g


def _as_source(part: str) -> tuple[str, float] | None:
    """``part`` as (path, gain) if it names an existing file, with or without ``*gain``."""
    for cand in dict.fromkeys((part, part.strip())):
        if cand and os.path.exists(cand):
            return cand, 1.0
        if "*" in cand:
            p, g = cand.rsplit("*", 1)
            p = p.strip()
            gain = _parse_gain(g)
            if p and os.path.exists(p) and gain is not None and math.isfinite(gain) and gain > 0:
                return p, gain
    return None


def _explain(part: str, expr: str) -> InputError:
    """The error for a part of a mix expression that does not resolve to a source."""
    text = part.strip()
    if not text:
        return InputError(f"empty source in mix expression '{expr}'")
    if "*" in text:
        p, g = text.rsplit("*", 1)
        p = p.strip()
        if not p:
            return InputError(f"missing file name before '*' in '{text}'")
        gain = _parse_gain(g)
        if gain is None:
            return InputError(f"bad gain '{g.strip()}' in '{text}': not a number")
        if not (math.isfinite(gain) and gain > 0):
            return InputError(f"bad gain '{g.strip()}' in '{text}': must be a positive number")
        return InputError(f"no such file: {p}")
    return InputError(f"no such file: {text}")


def parse_mix(expr: str) -> list[tuple[str, float]]:
    """Parse ``a.wav+b.wav*0.5`` into ``[("a.wav", 1.0), ("b.wav", 0.5)]``.

    Sources are joined by ``+``; each is ``path`` or ``path*gain`` (gain a positive float:
    ``0.5``, ``2``, ``1e-1``). A path that exists exactly as written wins over parsing, also for
    parts of the expression: with a file named ``a+b.wav``, ``a+b.wav+c.wav`` mixes
    ``a+b.wav`` and ``c.wav``. Existence is checked here; a missing source raises
    ``InputError("no such file: X")``.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise InputError("empty mix expression")
    whole = _as_source(expr)
    if whole is not None and whole[1] == 1.0:
        return [whole]
    tokens = expr.split("+")
    memo: dict[int, list[tuple[str, float]] | None] = {}

    def solve(i: int) -> list[tuple[str, float]] | None:
        if i == len(tokens):
            return []
        if i in memo:
            return memo[i]
        memo[i] = None
        for j in range(len(tokens), i, -1):  # longest existing name first
            src = _as_source("+".join(tokens[i:j]))
            if src is not None:
                rest = solve(j)
                if rest is not None:
                    memo[i] = [src, *rest]
                    break
        return memo[i]

    result = solve(0)
    if result is not None:
        return result
    # report the first part that cannot be resolved, following the longest-match path
    i = 0
    while i < len(tokens):
        for j in range(len(tokens), i, -1):
            if _as_source("+".join(tokens[i:j])) is not None:
                i = j
                break
        else:
            raise _explain(tokens[i], expr)
    raise InputError(f"cannot parse mix expression '{expr}'")  # pragma: no cover


def _db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def load_mix(
    expr, sr: int | None, channels: int | None = 1, *, gain: float = 1.0,
    gain_db: float | None = None, min_samples: int = 16,
) -> tuple[np.ndarray, int]:
    """Load and sum the sources of a mix expression (or a parsed list of (path, gain)).

    Each source is loaded at ``sr`` (None: the first source's rate) and ``channels``,
    multiplied by its gain; sources are summed with zero-padding to the longest; the sum is
    scaled by ``gain`` (linear) or ``gain_db`` (decibels). Giving both is an ``InputError``.
    The result is not limited: peaks above 1.0 are handled when saving.
    """
    if gain_db is not None and gain != 1.0:
        raise InputError("give either --gain or --gain-db, not both")
    if gain_db is not None:
        if not math.isfinite(gain_db):
            raise InputError(f"--gain-db must be a finite number, got {gain_db}")
        total = _db_to_gain(gain_db)
    else:
        if not (math.isfinite(gain) and gain > 0):
            raise InputError(f"--gain must be a positive number, got {gain}")
        total = float(gain)
    sources = parse_mix(expr) if isinstance(expr, str) else list(expr)
    if not sources:
        raise InputError("empty mix expression")
    parts = []
    for path, g in sources:
        x, sr = load_audio(path, sr, channels, min_samples=min_samples)
        parts.append(x * np.float32(g))
    counts = {p.shape[0] for p in parts}
    if len(counts) > 1:  # channels=None and the sources differ: meet at mono or stereo
        target = min(max(counts), 2)
        parts = [convert_channels(p, target) for p in parts]
    n = max(p.shape[1] for p in parts)
    ch = parts[0].shape[0]
    mix = np.zeros((ch, n), np.float32)
    for p in parts:
        mix[:, : p.shape[1]] += p
    if total != 1.0:
        mix *= np.float32(total)
    return mix, int(sr)


# --------------------------------------------------------------------------------------------
# levels and saving


def _dbfs(v: float) -> float | None:
    return None if v <= 0 else float(20.0 * math.log10(v))


def level_stats(x) -> dict:
    """Peak and RMS of a signal (all channels together).

    Returns ``{"peak", "peak_dbfs", "rms", "rms_dbfs"}`` as plain floats; the dBFS value of a
    silent signal is ``None`` (JSON ``null``) rather than ``-inf``.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return {"peak": 0.0, "peak_dbfs": None, "rms": 0.0, "rms_dbfs": None}
    peak = float(np.max(np.abs(a)))
    rms = float(np.sqrt(np.mean(np.square(a))))
    return {"peak": peak, "peak_dbfs": _dbfs(peak), "rms": rms, "rms_dbfs": _dbfs(rms)}


def _as_channels_first(audio) -> np.ndarray:
    a = np.asarray(audio)
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        a = a.astype(np.float32) / float(max(abs(info.min), info.max))
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"audio must be (channels, n) or (n,), got shape {a.shape}")
    if a.shape[0] > 64:
        raise ValueError(f"audio must be (channels, n); got shape {a.shape} (transposed?)")
    return a


def apply_peak_policy(audio: np.ndarray, policy: str = "limit", *, what: str = "output") -> np.ndarray:
    """Make ``audio`` safe to write as fixed point: never clip silently.

    ``limit``: scale the whole signal to a peak of 0.999 (-0.01 dBFS) and warn by how much;
    ``warn``: warn and hard-clip; ``error``: raise ``OutputError``.
    """
    if policy not in PEAK_POLICIES:
        raise ValueError(f"peak_policy must be one of {PEAK_POLICIES}, got {policy!r}")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 1.0:
        return audio
    over = 20 * math.log10(peak)
    if policy == "error":
        raise OutputError(f"{what}: peak is {over:+.2f} dBFS, over full scale")
    if policy == "limit":
        scale = LIMIT_PEAK / peak
        console.warn(
            f"{what}: peak was {over:+.2f} dBFS; lowered the level by "
            f"{-20 * math.log10(scale):.2f} dB to avoid clipping"
        )
        return (audio * np.float32(scale)).astype(np.float32)
    n = int(np.count_nonzero(np.abs(audio) > 1.0))
    console.warn(f"{what}: peak is {over:+.2f} dBFS; clipping {_plural(n, 'sample')}")
    return np.clip(audio, -1.0, 1.0)


def save_audio(
    path, audio, sr: int, *, provenance: dict | None = None, subtype: str | None = None,
    peak_policy: str = "limit",
) -> Path:
    """Write ``audio`` ((channels, n) or (n,)) atomically; format from the extension.

    wav/flac/aiff default to 16-bit PCM, ogg to Vorbis, mp3 via libsndfile (pedalboard if
    libsndfile cannot). Peaks above full scale follow ``peak_policy`` (never a silent clip).
    A provenance sidecar is written first, then the audio; if the audio fails the sidecar is
    removed again. NaN/inf samples are a bug upstream and raise ``ValueError``.
    """
    from soundsight.outputs import atomic_path, sidecar_path, write_sidecar

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITE_FORMATS:
        names = ", ".join(sorted({e for e in WRITE_FORMATS if e not in (".oga", ".aif")}))
        raise OutputError(f"cannot write audio as '{path.suffix or path.name}' ({path}); use one of {names}")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {sr!r}")
    a = _as_channels_first(audio)
    if a.shape[1] == 0:
        raise OutputError(f"no audio to write to {path} (0 samples)")
    if not np.isfinite(a).all():
        raise ValueError(f"refusing to write {path}: audio contains NaN or infinite samples")
    a = apply_peak_policy(a, peak_policy, what=str(path))
    fmt, default_subtype = WRITE_FORMATS[ext]
    sub = subtype or default_subtype

    wrote_sidecar = False
    if provenance is not None:
        write_sidecar(path, provenance)
        wrote_sidecar = True
    try:
        with atomic_path(path) as tmp:
            _write_file(tmp, a, int(sr), fmt, sub, path)
    except BaseException:
        if wrote_sidecar:
            try:
                sidecar_path(path).unlink()
            except OSError:
                pass
        raise
    return path


def _write_file(tmp: Path, a: np.ndarray, sr: int, fmt: str, sub: str, dest: Path) -> None:
    import soundfile as sf

    try:
        sf.write(str(tmp), np.ascontiguousarray(a.T), sr, format=fmt, subtype=sub)
        return
    except Exception as exc:
        sf_error = exc
    if fmt in ("MP3", "OGG"):
        try:
            from pedalboard.io import AudioFile

            with AudioFile(str(tmp), "w", samplerate=sr, num_channels=a.shape[0]) as f:
                f.write(a)
            return
        except Exception:
            pass
    raise OutputError(
        f"could not write {dest} as {fmt} at {sr} Hz, {a.shape[0]} channel(s): {_first_line(sf_error)}"
    )
