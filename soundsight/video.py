"""Video I/O: probe, read frames, read the soundtrack, write H.264/AAC.

- Probing and frame reading go through moviepy's ffmpeg reader (``ffmpeg_parse_infos``,
  ``FFMPEG_VideoReader``), with the ffmpeg binary from imageio-ffmpeg; nothing is printed.
- Frames are uint8 arrays ``(T, H, W, 3)``. Resampling to another frame rate picks, for each
  output time ``t``, the source frame shown at ``t``; resizing uses ffmpeg's Lanczos scaler.
- Soundtracks are decoded by ``soundsight.audio`` (ffmpeg decoder, soxr resampling, same
  downmix rules as audio files).
- ``write_video`` pipes raw frames to ffmpeg itself (libx264, yuv420p, AAC), rather than through
  ``moviepy``'s writer, which forces ``-pix_fmt yuva420p`` and rounds the frame rate to two
  decimals.
- Every problem with an input raises ``InputError`` with one line naming the file.

moviepy/imageio are imported inside functions so importing this module stays fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from soundsight.errors import InputError, OutputError
from soundsight.inputs import check_input_file

#: refuse to hold more decoded frames than this in memory (bytes); env overrides
MAX_FRAME_BYTES = 4 * 1024**3
MAX_FRAME_BYTES_ENV = "SOUNDSIGHT_MAX_FRAME_BYTES"

WRITE_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv")

RESIZE_ALGO = "lanczos"


def _check_file(path) -> Path:
    return check_input_file(path, "video file")


def _ffmpeg_reason(exc: BaseException) -> str:
    """The first ffmpeg complaint in a moviepy error, e.g. 'moov atom not found'."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line.startswith("[") and "] " in line:
            reason = line.split("] ", 1)[1]
            if reason.startswith("Error opening input: "):
                reason = reason[len("Error opening input: "):]
            return reason.rstrip(".")
    return ""


def _infos(path) -> dict:
    p = _check_file(path)
    from moviepy.video.io.ffmpeg_reader import ffmpeg_parse_infos

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            infos = ffmpeg_parse_infos(str(p), decode_file=False, print_infos=False)
    except Exception as exc:
        reason = _ffmpeg_reason(exc)
        if "Duration: N/A" in str(exc):
            reason = "a still image, not a video"
        raise InputError(
            f"{path} is not a readable video file" + (f" ({reason})" if reason else "")
        ) from None
    if not infos.get("video_found") or not infos.get("video_size"):
        raise InputError(f"{path} has no video stream")
    if not infos.get("video_fps"):
        raise InputError(f"{path} has no usable frame rate")
    return infos


def _display_size(infos: dict) -> tuple[int, int]:
    w, h = infos["video_size"]
    if abs(infos.get("video_rotation", 0) or 0) in (90, 270):
        w, h = h, w
    return int(w), int(h)


def probe_video(path) -> dict:
    """path, fps, frames, duration, width, height, has_audio, audio_samplerate (None if no audio).

    From the container header (nothing is decoded): ``frames`` is duration x fps as ffmpeg
    reports it; width/height are as displayed (after rotation metadata).
    """
    infos = _infos(path)
    w, h = _display_size(infos)
    has_audio = bool(infos.get("audio_found"))
    audio_sr = infos.get("audio_fps") if has_audio else None
    duration = infos.get("video_duration") or infos.get("duration") or 0.0
    return {
        "path": str(path),
        "fps": float(infos["video_fps"]),
        "frames": int(infos.get("video_n_frames") or 0),
        "duration": float(duration),
        "width": w,
        "height": h,
        "has_audio": has_audio,
        "audio_samplerate": int(audio_sr) if isinstance(audio_sr, (int, float)) else None,
    }


def _target_size(size, native: tuple[int, int]) -> tuple[int, int] | None:
    if size is None:
        return None
    w, h = size
    if w is None and h is None:
        return None
    nw, nh = native
    if w is None:
        w = max(1, round(nw * h / nh))
    if h is None:
        h = max(1, round(nh * w / nw))
    w, h = int(w), int(h)
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return (w, h)


def _max_frame_bytes() -> int:
    raw = os.environ.get(MAX_FRAME_BYTES_ENV, "").strip()
    if raw:
        try:
            return int(float(raw))
        except ValueError:
            raise InputError(f"{MAX_FRAME_BYTES_ENV} must be a number of bytes, got '{raw}'") from None
    return MAX_FRAME_BYTES


def _plan(path, fps, size, start, max_frames):
    infos = _infos(path)
    src_fps = float(infos["video_fps"])
    n_src = int(infos.get("video_n_frames") or 0)
    duration = float(infos.get("video_duration") or infos.get("duration") or 0.0)
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be positive, got {fps!r}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames!r}")
    if not (start >= 0 and math.isfinite(start)):
        raise InputError(f"start must be 0 or more seconds, got {start}")
    out_fps = src_fps if fps is None else float(fps)
    if n_src <= 0:
        raise InputError(f"{path} has no frames")
    if int(src_fps * start + 1e-5) >= n_src:
        raise InputError(f"start {start:g} s is past the end of {path} ({duration:.2f} s)")
    # output frame i shows the source frame on screen at t = start + i / out_fps
    count = 0
    while int(src_fps * (start + count / out_fps) + 1e-5) < n_src:
        count += 1
        if max_frames is not None and count >= max_frames:
            break
    if max_frames is not None:
        count = min(count, int(max_frames))
    w, h = _target_size(size, _display_size(infos)) or _display_size(infos)
    return infos, src_fps, n_src, out_fps, count, (w, h)


def iter_frames(
    path, *, fps: float | None = None, size=None, start: float = 0.0,
    max_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 (H, W, 3) frames one at a time (bounded memory); see ``read_frames``."""
    infos, src_fps, n_src, out_fps, count, wh = _plan(path, fps, size, start, max_frames)
    return _iter(path, wh, src_fps, n_src, out_fps, count, start, size is not None)


def _iter(path, wh, src_fps, n_src, out_fps, count, start, resize):
    from moviepy.video.io.ffmpeg_reader import FFMPEG_VideoReader

    if count == 0:
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            reader = FFMPEG_VideoReader(
                str(path), decode_file=False, target_resolution=wh if resize else None,
                resize_algo=RESIZE_ALGO,
            )
        except Exception as exc:
            reason = _ffmpeg_reason(exc) or " ".join(str(exc).split())[:200]
            raise InputError(f"{path} cannot be decoded ({reason})") from None
        try:
            for i in range(count):
                t = start + i / out_fps
                seen = len(caught)
                try:
                    frame = reader.get_frame(t)
                except Exception as exc:
                    raise InputError(f"{path} cannot be decoded ({' '.join(str(exc).split())[:200]})") from None
                if len(caught) > seen and any("bytes wanted" in str(w.message) for w in caught[seen:]):
                    src_index = int(src_fps * t + 1e-5)
                    if src_index < n_src - 2:  # headers may over-count the last frame or two
                        raise InputError(
                            f"{path} is corrupt or truncated (no picture at frame {src_index} "
                            f"of {n_src})"
                        )
                    return
                if frame.ndim != 3 or frame.shape[2] < 3:
                    raise InputError(f"{path} decoded to an unexpected frame shape {frame.shape}")
                yield np.ascontiguousarray(frame[:, :, :3], dtype=np.uint8)
        finally:
            reader.close()


def read_frames(
    path, *, fps: float | None = None, size=None, start: float = 0.0,
    max_frames: int | None = None,
) -> tuple[np.ndarray, float]:
    """Decode frames as uint8 ``(T, H, W, 3)`` and return ``(frames, fps)``.

    ``fps`` None keeps the native rate; ``size`` is ``(width, height)`` (one may be None to
    keep the aspect ratio); ``start`` in seconds; ``max_frames`` caps T. Refuses (InputError)
    to hold more than ``SOUNDSIGHT_MAX_FRAME_BYTES`` (default 4 GiB) of frames; use
    ``iter_frames``, ``size`` or ``max_frames`` for long videos.
    """
    infos, src_fps, n_src, out_fps, count, (w, h) = _plan(path, fps, size, start, max_frames)
    need = count * w * h * 3
    limit = _max_frame_bytes()
    if need > limit:
        raise InputError(
            f"{path}: {count} frames of {w}x{h} need {need / 1024**3:.1f} GiB, over the limit of "
            f"{limit / 1024**3:.1f} GiB (use a smaller size, fewer frames, or set {MAX_FRAME_BYTES_ENV})"
        )
    out = np.empty((count, h, w, 3), dtype=np.uint8)
    n = 0
    for frame in _iter(path, (w, h), src_fps, n_src, out_fps, count, start, size is not None):
        if frame.shape != (h, w, 3):  # defensive: moviepy sizes from the header
            from PIL import Image

            frame = np.asarray(Image.fromarray(frame).resize((w, h), Image.LANCZOS))
        out[n] = frame
        n += 1
    if n == 0:
        raise InputError(f"{path} has no decodable frames")
    return out[:n], out_fps


def read_audio_track(path, sr: int, channels: int | None = 1) -> np.ndarray:
    """The first audio stream of a video as float32 ``(channels, n)`` at ``sr``."""
    from soundsight.audio import load_audio

    info = probe_video(path)
    if not info["has_audio"]:
        raise InputError(f"{path} has no audio track")
    x, _ = load_audio(path, sr, channels, backend="ffmpeg", min_samples=1)
    return x


# --------------------------------------------------------------------------------------------
# writing


def _as_frames(frames) -> np.ndarray | Sequence:
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:  # (T, H, W) greyscale
            frames = frames[..., None]
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
            raise ValueError(f"frames must be (T, H, W, 3), got shape {frames.shape}")
        return frames
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to write")
    return frames


def _frame_bytes(frame) -> bytes:
    f = np.asarray(frame)
    if f.ndim == 2:
        f = f[..., None]
    if f.ndim != 3 or f.shape[2] not in (1, 3, 4):
        raise ValueError(f"a frame must be (H, W, 3), got shape {f.shape}")
    if f.dtype != np.uint8:
        if np.issubdtype(f.dtype, np.floating):
            if not np.isfinite(f).all():
                raise ValueError("frame contains NaN or infinite values")
            f = np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)
        else:
            f = np.clip(f, 0, 255).astype(np.uint8)
    if f.shape[2] == 1:
        f = np.repeat(f, 3, axis=2)
    elif f.shape[2] == 4:
        f = f[:, :, :3]
    h, w = f.shape[:2]
    ph, pw = (-h) % 2, (-w) % 2
    if ph or pw:  # yuv420p needs even sides: repeat the last row/column
        f = np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return np.ascontiguousarray(f).tobytes()


def write_video(
    path, frames, fps: float, *, audio=None, sr: int | None = None,
    provenance: dict | None = None, crf: int = 18, preset: str = "medium",
) -> Path:
    """Write frames (uint8 (T, H, W, 3), or float in [0, 1]) as H.264 (yuv420p) video.

    Odd widths/heights are padded by one edge pixel. ``audio`` ((channels, n) or (n,) at
    ``sr``) becomes an AAC track, trimmed or zero-padded to the video's duration and limited
    like ``save_audio`` if it peaks over full scale. Written atomically; provenance goes to
    a ``<name>.soundsight.json`` sidecar (removed again if the video fails).
    """
    from soundsight.audio import _as_channels_first, apply_peak_policy, ffmpeg_exe
    from soundsight.outputs import atomic_path, sidecar_path, write_sidecar

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITE_EXTENSIONS:
        raise OutputError(
            f"cannot write a video as '{path.suffix or path.name}' ({path}); use one of "
            + ", ".join(WRITE_EXTENSIONS)
        )
    if not (fps and fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be positive, got {fps!r}")
    frames = _as_frames(frames)
    T = len(frames)
    if T == 0:
        raise ValueError("no frames to write")
    first = np.asarray(frames[0])
    height, width = first.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"frames must not be empty, got {first.shape}")
    rate = Fraction(fps).limit_denominator(1001)

    track = None
    if audio is not None:
        if not sr or sr <= 0:
            raise ValueError("sr is required with audio")
        track = _as_channels_first(audio)
        if not np.isfinite(track).all():
            raise ValueError("audio contains NaN or infinite samples")
        n = int(round(T / float(rate) * sr))
        if track.shape[1] >= n:
            track = track[:, :n]
        else:
            track = np.pad(track, ((0, 0), (0, n - track.shape[1])))
        track = apply_peak_policy(track, "limit", what=f"{path} (audio)")

    sidecar = write_sidecar(path, provenance) if provenance is not None else None
    try:
        with contextlib.ExitStack() as stack:
            tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soundsight-")))
            tmp = stack.enter_context(atomic_path(path))
            cmd = [
                ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24",
                "-s", f"{width + width % 2}x{height + height % 2}",
                "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "-",
            ]
            if track is not None:
                import soundfile as sf

                wav = tmpdir / "audio.wav"
                sf.write(str(wav), np.ascontiguousarray(track.T), int(sr), subtype="FLOAT")
                cmd += ["-i", str(wav), "-map", "0:v:0", "-map", "1:a:0",
                        "-c:a", "aac", "-b:a", "192k"]
            else:
                cmd += ["-map", "0:v:0"]
            cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)),
                    "-pix_fmt", "yuv420p"]
            if ext in (".mp4", ".m4v", ".mov"):
                cmd += ["-movflags", "+faststart"]
            cmd += [str(tmp)]
            _run_encoder(cmd, frames, width, height, path, tmpdir)
    except BaseException:
        if sidecar is not None:
            with contextlib.suppress(OSError):
                sidecar_path(path).unlink()
        raise
    return path


def _run_encoder(cmd, frames, width, height, path, tmpdir: Path) -> None:
    with open(tmpdir / "ffmpeg.log", "w+b") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        broken = False
        try:
            for frame in frames:
                f = np.asarray(frame)
                if f.shape[:2] != (height, width):
                    raise ValueError(
                        f"all frames must be {width}x{height}; got {f.shape[1]}x{f.shape[0]}"
                    )
                try:
                    proc.stdin.write(_frame_bytes(f))
                except BrokenPipeError:
                    broken = True
                    break
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if rc != 0 or broken:
            log.seek(0)
            lines = [ln.strip() for ln in log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            reason = lines[-1] if lines else f"ffmpeg exited with status {rc}"
            raise OutputError(f"could not write {path}: {reason}")
