"""`soundsight forecast`: a clip's first frames + its soundtrack → K plausible futures.

The clip is resampled to the model's frame rate and size (area filter), converted to the
model's channels, and its audio to the model's sample rate; audio chunk t is the sound that
plays during frame t. All K futures come from one batched pass of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soundsight.errors import InputError


@dataclass
class ForecastResult:
    seen: np.ndarray  # (S, H, W, C) float [0, 1] at model size
    samples: np.ndarray  # (K, M, H, W, C) float [0, 1]
    truth: np.ndarray | None  # (M', H, W, C) real frames after the seen ones, M' <= M
    audio: np.ndarray  # (n,) model-rate audio covering seen + predicted frames
    fps: float
    sample_rate: int
    picked: list[int]  # indices into samples
    metrics: dict = field(default_factory=dict)
    clip: dict = field(default_factory=dict)


def load_clip_for_model(clip: Path, cfg, seen: int, predict: int, audio_path: str | None):
    """Frames (T, H, W, C) in [0, 1] and per-frame audio chunks (T_a, chunk) at the model's rate."""
    from soundsight.audio import load_mix
    from soundsight.video import probe_video, read_audio_track, read_frames

    meta = probe_video(clip)
    # a no-audio model (the ablation) forecasts from the frames alone, so a silent clip is fine
    if cfg.use_audio and not meta["has_audio"] and audio_path is None:
        raise InputError(f"{clip} has no audio track; give the soundtrack with --audio FILE")
    wanted = seen + predict
    frames_u8, _ = read_frames(clip, fps=cfg.fps, size=(cfg.image_size, cfg.image_size), max_frames=wanted)
    if len(frames_u8) < seen + 1:
        raise InputError(
            f"{clip} has {len(frames_u8)} frame(s) at {cfg.fps} fps; --seen {seen} needs at least {seen + 1}"
        )
    frames = frames_u8.astype(np.float32) / 255.0
    if cfg.channels == 1:  # ITU-R 601 luma, as Pillow's "L" mode
        frames = (frames @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    if audio_path is not None:
        audio, _ = load_mix(audio_path, sr=cfg.sample_rate, channels=1)
    elif meta["has_audio"]:
        audio = read_audio_track(clip, cfg.sample_rate, channels=1)
    else:
        audio = np.zeros((1, 0), np.float32)
    audio = audio[0]
    need = wanted * cfg.audio_chunk
    audio = np.pad(audio[:need], (0, max(0, need - len(audio))))
    if cfg.use_audio and not np.any(audio[: len(frames) * cfg.audio_chunk]):
        raise InputError(f"the soundtrack of {clip} is silent; the model forecasts from sound")
    return frames, audio.reshape(wanted, cfg.audio_chunk), meta


def forecast(model, cfg, frames: np.ndarray, chunks: np.ndarray, *, seen: int, predict: int, samples: int,
             seed: int, pick: str, device) -> ForecastResult:
    import torch

    from .metrics import psnr, ssim

    seen_t = torch.from_numpy(frames[:seen]).permute(0, 3, 1, 2)[None]  # (1, S, C, H, W)
    audio_t = torch.from_numpy(chunks)[None]
    gen = device.generator(seed)
    with torch.inference_mode(), device.autocast():
        out = model.sample(device.to(seen_t), device.to(audio_t), predict, samples, generator=gen)
    futures = out[0].float().clamp(0, 1).cpu()  # (K, M, C, H, W)
    truth = frames[seen: seen + predict]
    metrics: dict = {}
    if len(truth):
        real = torch.from_numpy(truth).permute(0, 3, 1, 2)  # (M', C, H, W)
        m = len(real)
        s = ssim(futures[:, :m], real.expand(samples, *real.shape))  # (K, M')
        p = psnr(futures[:, :m], real.expand(samples, *real.shape))
        best = int(s.mean(1).argmax())
        metrics = {"frames": [seen + 1 + i for i in range(m)], "best_sample": best,
                   "ssim_best": s[best].tolist(), "psnr_best": p[best].tolist(),
                   "ssim_first": s[0].tolist(), "psnr_first": p[0].tolist(),
                   "ssim_best_mean": float(s[best].mean()), "psnr_best_mean": float(p[best].mean())}
    if pick == "all":
        picked = list(range(samples))
    elif pick == "best" and metrics:
        picked = [metrics["best_sample"]]
    else:
        picked = [0]
    return ForecastResult(
        seen=frames[:seen], samples=futures.permute(0, 1, 3, 4, 2).numpy(), truth=truth if len(truth) else None,
        audio=chunks[: seen + predict].reshape(-1), fps=float(cfg.fps), sample_rate=int(cfg.sample_rate),
        picked=picked, metrics=metrics,
    )


def _to_u8(x: np.ndarray) -> np.ndarray:
    x = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def video_frames(result: ForecastResult, size: tuple[int, int] | None) -> np.ndarray:
    """Seen frames then the picked future(s); several picks are tiled side by side."""
    from PIL import Image

    seen = _to_u8(result.seen)
    picks = [_to_u8(result.samples[i]) for i in result.picked]
    if len(picks) > 1:
        cols = int(np.ceil(np.sqrt(len(picks))))
        rows = int(np.ceil(len(picks) / cols))
        blank = np.zeros_like(picks[0])
        grid = picks + [blank] * (rows * cols - len(picks))
        future = np.concatenate([np.concatenate(grid[r * cols:(r + 1) * cols], axis=2) for r in range(rows)], axis=1)
        seen = np.concatenate([np.concatenate([seen] * cols, axis=2)] * rows, axis=1)
    else:
        future = picks[0]
    frames = np.concatenate([seen, future], 0)
    if size is not None and len(result.picked) == 1:
        frames = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.LANCZOS)) for f in frames])
    return frames


def strip_image(result: ForecastResult):
    """Row 0: seen frames then the real future (if any); one row per sample below."""
    from soundsight.image import array_to_image

    seen = _to_u8(result.seen)
    s, h, w = seen.shape[:3]
    m = result.samples.shape[1]
    blank = np.full((h, w, 3), 255, np.uint8)
    top = list(seen) + (list(_to_u8(result.truth)) if result.truth is not None else [])
    top += [blank] * (s + m - len(top))
    rows = [top] + [[blank] * s + list(_to_u8(sample)) for sample in result.samples]
    pad = 1
    canvas = np.full((len(rows) * (h + pad) + pad, (s + m) * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            canvas[y:y + h, x:x + w] = tile
    # a grey rule between the seen and the predicted columns
    canvas[:, s * (w + pad)] = 128
    return array_to_image(canvas)
