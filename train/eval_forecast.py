"""Evaluate Sound2Sight on M3SO-NB: best-of-K SSIM / PSNR per predicted frame.

Protocol (paper, Table 1): frames 1..5 seen, frames 6..30 predicted (25); K = 100 futures per
test clip drawn in one batched pass. Two ways to take the best of K are reported, both from the
same samples:

- **per frame** (the paper's public evaluation code: the maximum over the K samples at each
  frame, so frame 6 and frame 25 may come from different samples);
- **per clip** (stricter: one sample per clip, the one with the best mean SSIM over the predicted
  frames gives the SSIM row, the one with the best mean PSNR the PSNR row).

and, from the same samples, **the average sample** (the mean over the K: what one sample scores
in expectation) with the **spread** across the samples. ``--start/--limit`` and ``--per-clip``
run the test in pieces for ``soundsight_train.forecast_stats`` to pool and compare clip by clip.

Per-frame values are averaged over the test clips. Baselines on the same split:
copy-last-seen-frame, and the no-audio model (``--no-audio-model``). On an M3SO (block) data
set the defaults become 30 seen / 40 predicted, SSIM at frames 31/42/70 and the block IoU of
the final frame (bounding box of the largest bright region of the SSIM-best sample vs the true
block box).

SSIM: Wang et al. 2004, Gaussian window 11 (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1,
valid filtering (the same as ``skimage.metrics.structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1)``). PSNR: 10 log10(1 / MSE).

    python -m soundsight_train.eval_forecast --data DIR --model models/m3so-nb-48 \
        [--no-audio-model models/m3so-nb-48-noaudio] [--samples 100] [--limit N] --json out.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from soundsight_plugins.forecast.metrics import psnr, ssim

REPORT_FRAMES = (6, 15, 25)  # 1-based frame numbers of the sequence (as in the paper's table)


# --------------------------------------------------------------------------------------------
# Metrics


def block_iou(frame: np.ndarray, box, threshold: float = 0.5) -> float:
    """M3SO block localisation: IoU of the bounding box of the largest bright connected region
    of a predicted frame (C, H, W) or (H, W) with the true block box (x0, y0, x1, y1)."""
    from scipy import ndimage

    img = np.asarray(frame, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(0)
    labels, n = ndimage.label(img > threshold)
    if n == 0:
        return 0.0
    sizes = ndimage.sum(np.ones_like(img), labels, index=np.arange(1, n + 1))
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    px0, py0, px1, py1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return box_iou((px0, py0, px1, py1), tuple(int(v) for v in box))


# --------------------------------------------------------------------------------------------
# Evaluation


def to_frames(u8: np.ndarray | torch.Tensor, device) -> torch.Tensor:
    """uint8 (..., T, H, W) → float (..., T, 1, H, W) in [0, 1]."""
    t = torch.as_tensor(u8).to(device)
    return (t.float() / 255.0).unsqueeze(-3)


def best_of_k(model, frames_u8, audio, n_past: int, n_future: int, k: int, *, device, chunk: int = 4,
              seed: int = 0, progress=None, temperature: float = 1.0, boxes=None) -> dict:
    """Best-of-K SSIM/PSNR curves (N, n_future) for the model on these sequences: ``ssim`` /
    ``psnr`` follow one sample per clip (the best mean), ``ssim_frame`` / ``psnr_frame`` take the
    best sample at each frame (the paper's code), ``last_frame`` is the SSIM-best sample's last.

    Also what one sample scores on average (``ssim_mean`` / ``psnr_mean``: the mean over the K
    samples, a far less noisy estimate than a few runs with K = 1) and how much the samples
    differ (``spread``: the per-pixel standard deviation across them, averaged over the frame;
    0 when they agree). With ``boxes`` (the true block per clip), ``block_iou_mean`` is the
    block IoU of the last frame averaged over all K samples."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(frames_u8)
    keys = ("ssim", "psnr", "last_frame", "ssim_frame", "psnr_frame", "ssim_mean", "psnr_mean", "spread")
    acc = {key: [] for key in keys + (("block_iou_mean",) if boxes is not None else ())}
    for i in range(0, n, chunk):
        fr = to_frames(frames_u8[i : i + chunk, : n_past + n_future], device)
        au = torch.as_tensor(np.asarray(audio[i : i + chunk, : n_past + n_future], dtype=np.float32)).to(device)
        out = model.sample(fr[:, :n_past], au, n_future, k, generator=gen, temperature=temperature)  # (b, K, F, ...)
        target = fr[:, None, n_past:].expand_as(out)
        s = ssim(out, target)  # (b, K, F)
        p = psnr(out, target)
        bi = s.mean(-1).argmax(1)
        pi = p.mean(-1).argmax(1)
        ar = torch.arange(len(bi), device=s.device)
        acc["ssim"].append(s[ar, bi])
        acc["psnr"].append(p[ar, pi])
        acc["last_frame"].append(out[ar, bi, -1].float())
        acc["ssim_frame"].append(s.amax(1))
        acc["psnr_frame"].append(p.amax(1))
        acc["ssim_mean"].append(s.mean(1))
        acc["psnr_mean"].append(p.mean(1))
        acc["spread"].append(out.float().std(1, unbiased=False).flatten(2).mean(-1))
        if boxes is not None:
            last = out[:, :, -1].float().cpu().numpy()
            acc["block_iou_mean"].append(torch.tensor([np.mean([block_iou(f, box) for f in clip])
                                                       for clip, box in zip(last, boxes[i : i + chunk])]))
        if progress:
            progress(min(i + chunk, n), n)
    return {key: torch.cat(v).cpu().numpy() for key, v in acc.items()}


def per_frame_curves(curves: dict) -> dict:
    """The per-frame protocol's curves under the plain ``ssim`` / ``psnr`` keys (for summarize)."""
    return {"ssim": curves["ssim_frame"], "psnr": curves["psnr_frame"]}


def sample_mean_curves(curves: dict) -> dict:
    """The average sample's curves under the plain ``ssim`` / ``psnr`` keys (for summarize)."""
    return {"ssim": curves["ssim_mean"], "psnr": curves["psnr_mean"]}


def copy_last(frames_u8, n_past: int, n_future: int) -> dict:
    fr = to_frames(frames_u8[:, : n_past + n_future], "cpu")
    last = fr[:, n_past - 1 : n_past].expand(-1, n_future, -1, -1, -1)
    tgt = fr[:, n_past:]
    return {"ssim": ssim(last, tgt).numpy(), "psnr": psnr(last, tgt).numpy()}


def summarize(curves: dict, n_past: int, frames=REPORT_FRAMES, keys=("ssim", "psnr")) -> dict:
    """Mean per predicted frame + the values at the report frames (1-based sequence numbers)."""
    out = {}
    for metric, arr in curves.items():
        if metric not in keys:
            continue
        mean = np.asarray(arr).mean(0)
        out[metric] = {"per_frame": [round(float(v), 4) for v in mean],
                       "at": {str(f): round(float(mean[f - n_past - 1]), 4) for f in frames
                              if 0 <= f - n_past - 1 < len(mean)}}
    return out


def markdown_table(rows: dict[str, dict], frames=REPORT_FRAMES) -> str:
    head = "| method | " + " | ".join(f"SSIM@{f}" for f in frames) + " | " + " | ".join(f"PSNR@{f}" for f in frames) + " |"
    iou = any("block_iou" in r for r in rows.values())
    if iou:
        head += " block IoU (last frame) |"
    sep = "|" + "---|" * (1 + 2 * len(frames) + iou)
    lines = [head, sep]
    for name, s in rows.items():
        ss = " | ".join(f"{s['ssim']['at'].get(str(f), float('nan')):.4f}" for f in frames)
        ps = " | ".join(f"{s['psnr']['at'].get(str(f), float('nan')):.2f}" for f in frames)
        extra = f" {s.get('block_iou', float('nan')):.3f} |" if iou else ""
        lines.append(f"| {name} | {ss} | {ps} |{extra}")
    return "\n".join(lines)


def box_iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def chance_block_iou(boxes, size: int, k: int, seed: int = 0) -> float:
    """The IoU a guesser gets with ``k`` blocks of the true size at uniform random spots, keeping
    the one that overlaps the true block best: what best-of-K IoU is worth without any skill.
    A large block in a small frame makes it high (a 25 px block in 48 px: ~0.88 at K = 100)."""
    rng = np.random.default_rng(seed)
    best = []
    for x0, y0, x1, y1 in (tuple(int(v) for v in b) for b in boxes):
        side = x1 - x0
        xs, ys = rng.integers(0, size - side + 1, k), rng.integers(0, size - side + 1, k)
        best.append(max(box_iou((x, y, x + side, y + side), (x0, y0, x1, y1)) for x, y in zip(xs, ys)))
    return float(np.mean(best))


def load_registry_model(path_or_name, device):
    from soundsight.registry import resolve
    from soundsight_plugins.forecast.model import Sound2Sight

    folder = resolve(path_or_name, task="frame-forecast")
    return Sound2Sight.from_registry(folder, device), folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.eval_forecast", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder (from soundsight_train.m3so build)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", required=True, help="registry model name or folder")
    ap.add_argument("--no-audio-model", default=None, help="the no-audio ablation model (baseline row)")
    ap.add_argument("--samples", type=int, default=100, help="K futures per clip")
    ap.add_argument("--n-past", type=int, default=None, help="seen frames (default 5 for M3SO-NB, 30 for M3SO)")
    ap.add_argument("--n-future", type=int, default=None, help="predicted frames (default 25 NB, 40 M3SO)")
    ap.add_argument("--report-frames", default=None,
                    help="comma-separated 1-based frame numbers for the table (default 6,15,25 NB; 31,42,70 M3SO)")
    ap.add_argument("--start", type=int, default=0,
                    help="first clip (0-based) to evaluate: a long test can run in pieces and be pooled by "
                         "soundsight_train.forecast_stats")
    ap.add_argument("--limit", type=int, default=0, help="evaluate N clips only (from --start)")
    ap.add_argument("--chunk", type=int, default=4, help="clips per batched pass (x K samples)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mute", action="store_true",
                    help="replace the soundtrack with silence (does the model use its audio at all?)")
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="scale of the prior's standard deviation when sampling (choose it on --split val)")
    ap.add_argument("--device", default=None, help="auto|cpu|cuda[:i]|mps (default: $SOUNDSIGHT_DEVICE or auto)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--per-clip", default=None,
                    help="also write every clip's curves and block IoU to this .npz (for pooling pieces, "
                         "seeds and paired comparisons: python -m soundsight_train.forecast_stats)")
    ap.add_argument("--write-card", action="store_true",
                    help="also record the results in the evaluated model's card.json (metrics.test_<split>)")
    args = ap.parse_args(argv)
    if args.start and args.write_card:
        print("error: a card records a whole split; drop --write-card or --start", file=sys.stderr)
        return 2
    if args.mute and args.write_card:
        print("error: --mute results do not belong in a model card; drop --write-card", file=sys.stderr)
        return 2
    command = "python -m soundsight_train.eval_forecast " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    from soundsight.device import resolve_device
    from soundsight_train.m3so import load_meta, load_split

    dev = resolve_device(args.device, threads=args.threads)
    variant = load_meta(args.data).get("spec", {}).get("variant", "nb")
    block = variant == "block"
    if args.n_past is None:
        args.n_past = 30 if block else 5
    if args.n_future is None:
        args.n_future = 40 if block else 25
    report = (tuple(int(f) for f in args.report_frames.split(",")) if args.report_frames
              else (31, 42, 70) if block else REPORT_FRAMES)
    data = load_split(args.data, args.split)
    stop = args.start + args.limit if args.limit else len(data["frames"])
    if not 0 <= args.start < min(stop, len(data["frames"])):
        print(f"error: --start {args.start} is outside the {len(data['frames'])} {args.split} clips", file=sys.stderr)
        return 2
    clip_ids = np.arange(args.start, min(stop, len(data["frames"])))
    frames, audio = data["frames"][clip_ids], data["audio"][clip_ids]
    boxes = data["block"][clip_ids] if block else None
    if args.mute:
        audio = np.zeros_like(audio)
    need = args.n_past + args.n_future
    if frames.shape[1] < need:
        print(f"error: sequences have {frames.shape[1]} frames, need {need}", file=sys.stderr)
        return 2
    rows, frame_rows, mean_rows, timing, per_clip = {}, {}, {}, {}, {}
    models = [("Sound2Sight (ours)", args.model)]
    if args.no_audio_model:
        models.append(("no-audio ablation", args.no_audio_model))
    for label, ref in models:
        model, folder = load_registry_model(ref, dev.torch_device)
        t0 = time.time()

        def progress(done, total, label=label):
            print(f"  {label}: {done}/{total} clips ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)

        with dev.autocast():
            curves = best_of_k(model, frames, audio, args.n_past, args.n_future, args.samples,
                               device=dev.torch_device, chunk=args.chunk, seed=args.seed, progress=progress,
                               temperature=args.temperature, boxes=boxes)
        timing[label] = round(time.time() - t0, 1)
        rows[label] = summarize(curves, args.n_past, report) | {"model": folder.name, "sha256": folder.sha256()}
        frame_rows[label] = summarize(per_frame_curves(curves), args.n_past, report)
        mean_rows[label] = summarize(sample_mean_curves(curves), args.n_past, report)
        mean_rows[label] |= summarize(curves, args.n_past, report, keys=("spread",))
        per_clip[label] = {k: v for k, v in curves.items() if k != "last_frame"}
        if block:
            per_clip[label]["block_iou"] = np.array([block_iou(f, b) for f, b in zip(curves["last_frame"], boxes)])
            rows[label]["block_iou"] = round(float(per_clip[label]["block_iou"].mean()), 4)
            mean_rows[label]["block_iou"] = round(float(curves["block_iou_mean"].mean()), 4)
    copied = copy_last(frames, args.n_past, args.n_future)
    rows["copy last seen frame"] = summarize(copied, args.n_past, report)
    # one deterministic future: the same values under every protocol's key
    per_clip["copy last seen frame"] = {f"{m}{suffix}": copied[m] for m in ("ssim", "psnr")
                                        for suffix in ("", "_frame", "_mean")}
    if block:
        last_seen = frames[:, args.n_past - 1].astype(np.float32) / 255.0
        ious = np.array([block_iou(f, b) for f, b in zip(last_seen, boxes)])
        per_clip["copy last seen frame"] |= {"block_iou": ious, "block_iou_mean": ious}
        rows["copy last seen frame"]["block_iou"] = round(float(ious.mean()), 4)
    # copying is deterministic: every protocol gives it the same row
    frame_rows["copy last seen frame"] = {k: v for k, v in rows["copy last seen frame"].items() if k != "block_iou"}
    mean_rows["copy last seen frame"] = rows["copy last seen frame"]
    table = markdown_table(rows, report)
    frame_table = markdown_table(frame_rows, report)
    mean_table = markdown_table(mean_rows, report) + "\n\nspread across the samples (per-pixel std, 0 = all alike) at " + \
        ", ".join(f"frame {f}" for f in report) + ": " + "; ".join(
            f"{label} " + " / ".join(f"{v:.4f}" for v in r["spread"]["at"].values())
            for label, r in mean_rows.items() if "spread" in r)
    if block:
        chance = {str(k): round(chance_block_iou(boxes, frames.shape[-1], k, args.seed), 4)
                  for k in sorted({1, args.samples})}
        table += ("\n\nchance block IoU (random blocks of the true size, the best of K by IoU): "
                  + ", ".join(f"K={k}: {v:.3f}" for k, v in chance.items()))
    name = "M3SO" if block else "M3SO-NB"
    span = f"clips {clip_ids[0]}-{clip_ids[-1]}" if args.start else f"{len(frames)} clips"
    head = f"{name} {args.split} ({span}), best of K={args.samples}, frames 1-{args.n_past} seen"
    print(f"\n{head}, the best sample at each frame (the paper's code)\n")
    print(frame_table)
    print(f"\n{head}, one sample per clip (the best mean over the predicted frames)\n")
    print(table)
    print(f"\n{head}, the average sample (the mean over the K samples: what one sample scores)\n")
    print(mean_table)
    if args.json:
        result = {"variant": variant, "report_frames": list(report), "split": args.split, "clips": len(frames),
                  "start": int(clip_ids[0]), "samples": args.samples, "temperature": args.temperature, "muted": args.mute, "n_past": args.n_past,
                  "n_future": args.n_future, "rows": rows, "rows_per_frame": frame_rows, "rows_sample_mean": mean_rows,
                  "seconds": timing, "table": table, "table_per_frame": frame_table, "table_sample_mean": mean_table,
                  **({"chance_block_iou": chance} if block else {})}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.per_clip:
        from soundsight_train.forecast_stats import save_per_clip

        # rows go by the model's folder name, so runs of one model at a time pool with paired runs
        names = {label: rows[label]["model"] for label, _ in models}
        if len(set(names.values())) < len(names):  # two folders of one name: keep the row labels
            names = {label: label for label in names}
        named = {names.get(label, label): v for label, v in per_clip.items()}
        save_per_clip(args.per_clip, named, clip_ids=clip_ids, seed=args.seed, samples=args.samples,
                      n_past=args.n_past, report=report, split=args.split, variant=variant, muted=args.mute,
                      temperature=args.temperature, models={names[label]: rows[label]["sha256"] for label, _ in models})
        print(f"wrote {args.per_clip}")
    if args.write_card:
        for label, ref in models:
            path = update_card(ref, rows, label, args, len(frames), command, frame_rows)
            print(f"recorded in {path}")
    return 0


def update_card(ref, rows: dict, label: str, args, clips: int, command: str, frame_rows: dict | None = None) -> Path:
    """Merge this evaluation into a model folder's card (weights untouched; atomic rewrite)."""
    from soundsight.registry import locate, record_metrics

    entry = {"protocol": f"best of K={args.samples} per clip (SSIM and PSNR picked separately), "
                         f"frames 1-{args.n_past} seen, {args.n_future} predicted",
             "clips": clips, "split": args.split, "temperature": args.temperature, "command": command,
             "ssim": rows[label]["ssim"]["at"], "psnr": rows[label]["psnr"]["at"],
             **({"block_iou": rows[label]["block_iou"]} if "block_iou" in rows[label] else {}),
             "ssim_per_frame": rows[label]["ssim"]["per_frame"], "psnr_per_frame": rows[label]["psnr"]["per_frame"],
             "baselines": {k: {"ssim": v["ssim"]["at"], "psnr": v["psnr"]["at"]} for k, v in rows.items() if k != label}}
    if frame_rows and label in frame_rows:
        entry["best_sample_per_frame"] = {"protocol": "the paper's code: the best of the K samples at each frame",
                                          "ssim": frame_rows[label]["ssim"]["at"], "psnr": frame_rows[label]["psnr"]["at"]}
    return record_metrics(locate(ref), f"test_{args.split}" if args.split != "test" else "test", entry)


if __name__ == "__main__":
    sys.exit(main())
