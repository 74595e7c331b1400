"""Describe a media file: audio (duration, rate, channels, peak/RMS), image (size, mode),
video (fps, frames, size, audio presence)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from soundsight.errors import InputError
from soundsight.inputs import check_input_file

AUDIO = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".opus"}
IMAGE = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VIDEO = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


def _db(x: float) -> float | None:
    return round(20 * math.log10(x), 2) if x > 0 else None


def describe_audio(path: Path) -> dict:
    from soundsight.audio import probe_audio, stream_audio

    meta = probe_audio(path)
    # Levels are measured block by block so an hour-long file needs no more memory than a second.
    peak, sum_sq, count = 0.0, 0.0, 0
    for block in stream_audio(path, block_seconds=10.0):
        peak = max(peak, float(np.abs(block).max(initial=0.0)))
        sum_sq += float(np.square(block, dtype=np.float64).sum())
        count += block.size
    rms = math.sqrt(sum_sq / count) if count else 0.0
    return {
        "kind": "audio", "path": str(path), "format": meta.get("format"), "subtype": meta.get("subtype"),
        "duration_s": round(meta["duration"], 4), "samplerate": meta["samplerate"], "channels": meta["channels"],
        "frames": meta["frames"], "peak": round(peak, 6), "peak_dbfs": _db(peak), "rms": round(rms, 6),
        "rms_dbfs": _db(rms), "silent": peak == 0.0,
    }


def describe_image(path: Path) -> dict:
    from soundsight.image import load_image, probe_image

    meta = probe_image(path)
    img = load_image(path)  # full decode: catches truncated files and degenerate sizes
    return {"kind": "image", "path": str(path), "format": meta.get("format"), "mode": meta.get("mode"),
            "width": img.width, "height": img.height, "stored_width": meta.get("width"),
            "stored_height": meta.get("height"), "exif_orientation": meta.get("exif_orientation")}


def describe_video(path: Path) -> dict:
    from soundsight.video import probe_video

    meta = probe_video(path)
    return {"kind": "video", "path": str(path), "fps": meta["fps"], "frames": meta["frames"],
            "duration_s": meta["duration"], "width": meta["width"], "height": meta["height"],
            "has_audio": meta["has_audio"], "audio_samplerate": meta.get("audio_samplerate")}


def describe(path: str | Path) -> dict:
    path = check_input_file(path, "media file")
    suffix = path.suffix.lower()
    if suffix in AUDIO:
        return describe_audio(path)
    if suffix in IMAGE:
        return describe_image(path)
    if suffix in VIDEO:
        return describe_video(path)
    # Unknown extension: sniff, cheapest reader first.
    for fn in (describe_image, describe_audio, describe_video):
        try:
            return fn(path)
        except InputError:
            continue
    raise InputError(f"{path} is not an audio, image or video file soundsight can read")


def summary_line(d: dict) -> str:
    if d["kind"] == "audio":
        peak = "silent" if d["silent"] else f"peak {d['peak_dbfs']} dBFS, RMS {d['rms_dbfs']} dBFS"
        return (f"{d['path']}: audio {d['format']}/{d['subtype']}, {d['duration_s']:.3f} s, "
                f"{d['samplerate']} Hz, {d['channels']} ch, {peak}")
    if d["kind"] == "image":
        return f"{d['path']}: image {d['format']} {d['width']}x{d['height']} {d['mode']}"
    audio = f"audio {d['audio_samplerate']} Hz" if d["has_audio"] else "no audio track"
    return (f"{d['path']}: video {d['width']}x{d['height']}, {d['fps']:g} fps, {d['frames']} frames, "
            f"{d['duration_s']:.3f} s, {audio}")
