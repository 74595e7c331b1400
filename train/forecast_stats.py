"""Pool per-clip forecast evaluations and compare their rows clip by clip, with bootstrap intervals.

``eval_forecast --per-clip F.npz`` keeps every clip's curves, so a long test can run in pieces,
seeds can be averaged, and two models evaluated on the same clips can be compared by their
paired difference instead of two means side by side:

    E="python -m soundsight_train.eval_forecast --data DIR --model m3so-48 --no-audio-model m3so-48-noaudio"
    $E --limit 300 --per-clip runs/k100-a.npz
    $E --start 300 --per-clip runs/k100-b.npz                 # the rest of the split, later
    python -m soundsight_train.forecast_stats runs/k100-a.npz runs/k100-b.npz

Files with the same seed are joined by clip (their clip ranges must not overlap). Files with
different seeds must cover the same clips; each clip's values are then averaged over the seeds
(the "one sample, mean of seeds" rows). A piece draws other random samples than a whole run
would (the generator is seeded per run), which changes nothing in expectation.

The interval is a 95 % percentile bootstrap over clips (the same resampled clips for every
row): one that excludes 0 says the gap is larger than this clip sample's noise. It says
nothing about the spread between training runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# what the report shows at each report frame: (per-clip array key, name)
COLUMNS = (("ssim_frame", "SSIM, best sample at each frame"), ("ssim", "SSIM, best sample per clip"),
           ("ssim_mean", "SSIM, the average sample"), ("psnr", "PSNR, best sample per clip"),
           ("psnr_mean", "PSNR, the average sample"), ("spread", "spread across samples"))
SCALARS = (("block_iou", "block IoU, best sample per clip"), ("block_iou_mean", "block IoU, the average sample"))


def save_per_clip(path, rows: dict[str, dict[str, np.ndarray]], *, clip_ids, seed: int, samples: int, n_past: int,
                  report, split: str, variant: str, muted: bool, temperature: float, models: dict[str, str]) -> None:
    """Write ``rows`` ({label: {metric: per-clip array}}) with what identifies the run; atomic."""
    labels = list(rows)
    meta = {"labels": labels, "seed": int(seed), "samples": int(samples), "n_past": int(n_past),
            "report_frames": [int(f) for f in report], "split": split, "variant": variant, "muted": bool(muted),
            "temperature": float(temperature), "models": models}
    arrays = {f"r{i}_{m}": np.asarray(a, dtype=np.float32) for i, label in enumerate(labels)
              for m, a in rows[label].items()}
    from soundsight.outputs import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), clips=np.asarray(clip_ids, dtype=np.int64), **arrays)


def load_per_clip(path) -> tuple[dict, np.ndarray, dict[str, dict[str, np.ndarray]]]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        rows = {label: {k.split("_", 1)[1]: z[k] for k in z.files if k.startswith(f"r{i}_")}
                for i, label in enumerate(meta["labels"])}
        return meta, z["clips"], rows


SAME = ("samples", "n_past", "report_frames", "split", "variant", "muted", "temperature")


def pool(paths) -> tuple[dict, np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Join each row's pieces per seed, average its seeds clip by clip, and line the rows up on
    their clips. Raises ValueError on files that do not belong together: another protocol,
    other weights under the same name, a clip seen twice with different values under one seed
    (overlapping pieces; a deterministic row such as copy-last may repeat), seeds or rows over
    different clips."""
    loaded = [(p, *load_per_clip(p)) for p in paths]
    if not loaded:
        raise ValueError("no files")
    first = loaded[0][1]
    weights: dict[str, str] = {}
    parts: dict[str, dict[int, list]] = {}  # label -> seed -> [(clips, arrays)]
    for p, meta, clips, rows in loaded:
        for key in SAME:
            if meta[key] != first[key]:
                raise ValueError(f"{p}: {key} = {meta[key]}, but {loaded[0][0]} has {first[key]}")
        for label, sha in meta["models"].items():
            if weights.setdefault(label, sha) != sha:
                raise ValueError(f"{p}: '{label}' is other weights than in the files before it")
        for label, arrays in rows.items():
            parts.setdefault(label, {}).setdefault(meta["seed"], []).append((clips, arrays))
    pooled, seeds_of, ids = {}, {}, None
    for label, by_seed in parts.items():
        joined = {seed: join_pieces(label, seed, pieces) for seed, pieces in by_seed.items()}
        seeds = sorted(joined)
        label_ids = joined[seeds[0]][0]
        for s in seeds[1:]:
            if not np.array_equal(joined[s][0], label_ids):
                raise ValueError(f"'{label}': seeds {seeds[0]} and {s} cover different clips; "
                                 "seeds are averaged clip by clip")
        if ids is None:
            ids = label_ids
        elif not np.array_equal(ids, label_ids):
            raise ValueError(f"'{label}' covers other clips than the rows before it; rows are compared clip by clip")
        pooled[label] = {m: np.mean([joined[s][1][m] for s in seeds], axis=0) for m in joined[seeds[0]][1]}
        seeds_of[label] = seeds
    # the models first, in the order the files name them; the baselines after
    pooled = {lab: pooled[lab] for lab in sorted(pooled, key=lambda lab: lab not in weights)}
    info = {k: first[k] for k in SAME} | {"seeds": seeds_of, "clips": int(len(ids)), "models": weights}
    return info, ids, pooled


def join_pieces(label: str, seed: int, pieces: list) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    ids = np.concatenate([c for c, _ in pieces])
    arrays = {m: np.concatenate([a[m] for _, a in pieces]) for m in pieces[0][1]}
    ids, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    for m, a in arrays.items():
        if not np.allclose(a, a[first][inverse], rtol=0, atol=1e-6, equal_nan=True):
            raise ValueError(f"'{label}', seed {seed}: the files' clip ranges overlap")
    return ids, {m: a[first] for m, a in arrays.items()}


def values(rows: dict, label: str, metric: str, frame: int | None, n_past: int) -> np.ndarray:
    a = rows[label][metric]
    return a if frame is None else a[:, frame - n_past - 1]


def bootstrap_mean_ci(x: np.ndarray, idx: np.ndarray) -> tuple[float, float]:
    means = x[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(info: dict, rows: dict, *, reference: str | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    """Means of every row and, for each other row, the paired difference reference − row."""
    labels = list(rows)
    reference = reference or labels[0]
    n = info["clips"]
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    predicted = next(iter(rows.values()))["ssim"].shape[1]
    frames = [f for f in info["report_frames"] if 0 <= f - info["n_past"] - 1 < predicted]
    cols = [(m, name, f) for m, name in COLUMNS for f in frames if any(m in r for r in rows.values())]
    cols += [(m, name, None) for m, name in SCALARS if any(m in r for r in rows.values())]
    out = {"reference": reference, "columns": [], "means": {}, "differences": {}}
    for metric, name, frame in cols:
        key = f"{name} @{frame}" if frame else name
        out["columns"].append(key)
        for lab in labels:
            if metric in rows[lab]:
                out["means"].setdefault(lab, {})[key] = round(float(values(rows, lab, metric, frame, info["n_past"]).mean()), 4)
        if metric not in rows[reference]:
            continue
        ref = values(rows, reference, metric, frame, info["n_past"])
        for lab in labels:
            if lab == reference or metric not in rows[lab]:
                continue
            d = ref - values(rows, lab, metric, frame, info["n_past"])
            lo, hi = bootstrap_mean_ci(d, idx)
            out["differences"].setdefault(lab, {})[key] = {"mean": round(float(d.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}
    return out


def markdown(result: dict) -> str:
    """One line per measure: each row's mean, then reference − row with its interval."""
    ref, means, diffs = result["reference"], result["means"], result["differences"]
    head = ["measure", *means, *(f"{ref} − {lab}" for lab in diffs)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in result["columns"]:
        cells = [f"{m[c]:.4f}" if c in m else "" for m in means.values()]
        cells += [f"{d[c]['mean']:+.4f} [{d[c]['ci95'][0]:+.4f}, {d[c]['ci95'][1]:+.4f}]" if c in d else ""
                  for d in diffs.values()]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def card_entry(info: dict, ids: np.ndarray, rows: dict, label: str, command: str, n_boot: int = 2000) -> dict:
    """The pooled evaluation in the shape ``eval_forecast --write-card`` writes, plus the
    average sample and the paired differences against the other rows."""
    from soundsight_train.eval_forecast import per_frame_curves, sample_mean_curves, summarize

    n_past, frames = info["n_past"], info["report_frames"]
    r = rows[label]
    best = summarize(r, n_past, frames)
    at_frame = summarize(per_frame_curves(r), n_past, frames)
    mean = summarize(sample_mean_curves(r) | {"spread": r["spread"]}, n_past, frames, keys=("ssim", "psnr", "spread"))

    diffs = compare(info, rows, reference=label, n_boot=n_boot)["differences"]
    return {"protocol": f"best of K={info['samples']} per clip (SSIM and PSNR picked separately), "
                        f"frames 1-{n_past} seen, {r['ssim'].shape[1]} predicted; pooled from pieces and seeds",
            "clips": info["clips"], "split": info["split"], "seeds": info["seeds"][label], "command": command,
            "ssim": best["ssim"]["at"], "psnr": best["psnr"]["at"],
            **({"block_iou": round(float(r["block_iou"].mean()), 4)} if "block_iou" in r else {}),
            "ssim_per_frame": best["ssim"]["per_frame"], "psnr_per_frame": best["psnr"]["per_frame"],
            "best_sample_per_frame": {"protocol": "the paper's code: the best of the K samples at each frame",
                                      "ssim": at_frame["ssim"]["at"], "psnr": at_frame["psnr"]["at"]},
            "average_sample": {"protocol": "the mean over the K samples: what one sample scores",
                               **{m: mean[m]["at"] for m in ("ssim", "psnr", "spread")},
                               **({"block_iou": round(float(r["block_iou_mean"].mean()), 4)}
                                  if "block_iou_mean" in r else {})},
            "baselines": {k: {"ssim": summarize(v, n_past, frames, keys=("ssim",))["ssim"]["at"]}
                          for k, v in rows.items() if k != label},
            "paired_differences": {"method": "this row minus the other, per clip; mean and 95 % bootstrap interval",
                                   **diffs}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.forecast_stats", description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help=".npz files from eval_forecast --per-clip")
    ap.add_argument("--reference", default=None, help="the row the others are compared with (default: the first)")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--card", action="append", default=[], metavar="FOLDER",
                    help="record the pooled result in this model folder's card.json (the row of that name; "
                         "the files must cover the whole split); repeatable")
    args = ap.parse_args(argv)
    for f in args.files:
        if not Path(f).is_file():
            print(f"error: {f}: no such file", file=sys.stderr)
            return 2
    try:
        info, ids, rows = pool(args.files)
    except (ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.reference and args.reference not in rows:
        print(f"error: no row '{args.reference}' (rows: {', '.join(rows)})", file=sys.stderr)
        return 2
    result = compare(info, rows, reference=args.reference, n_boot=args.boot) | {"pooled": info}
    seeds = "; ".join(f"{lab}: seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}"
                      for lab, s in info["seeds"].items() if lab in info["models"])
    print(f"{info['variant']} {info['split']}: {info['clips']} clips, best of K={info['samples']} ({seeds}; "
          "a clip's values are averaged over its seeds); differences: mean [95 % bootstrap over clips]\n")
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.card:
        import shlex

        from soundsight.registry import locate, read_card, record_metrics

        command = "python -m soundsight_train.forecast_stats " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        for folder in args.card:
            try:
                found = locate(str(folder))
                card = read_card(found)
                label = row_of(card, folder, info["models"])
                if not np.array_equal(ids, np.arange(split_size(card, folder, info["split"]))):
                    raise ValueError(f"the files cover {info['clips']} clips, not the whole {info['split']} split")
                entry = card_entry(info, ids, rows, label, command, args.boot)
                path = record_metrics(found, "test" if info["split"] == "test" else f"test_{info['split']}", entry)
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(f"recorded in {path}")
    return 0


def row_of(card: dict, folder, models: dict[str, str]) -> str:
    """The row evaluated with this card's weights (by checksum: the folder may have been
    renamed or copied into the registry since)."""
    sha = card["files"]["model.safetensors"]["sha256"]
    for label, evaluated in models.items():
        if evaluated == sha:
            return label
    raise ValueError(f"none of these files evaluated {folder}'s weights (models: {', '.join(models)})")


def split_size(card: dict, folder, split: str) -> int:
    """The number of clips in the evaluated split, from the model card's data record."""
    sizes = card.get("data", {}).get("counts", {})
    if split not in sizes:
        raise ValueError(f"{folder}'s card does not say how many {split} clips its data has")
    return int(sizes[split])


if __name__ == "__main__":
    sys.exit(main())
