"""Where does a forecast model's best-of-K score stop? Its one-step ceiling against its samples.

    python benchmarks/forecast_ceiling.py --data ~/.cache/soundsight/data/m3so-nb-48-f30-s0 \
        --model m3so-nb-48 [--model runs/models/...] [--limit 200] [--samples 100] [--threads 1]

Per model, on the first ``--limit`` clips of the split, SSIM / PSNR at the report frames for:

- **one step, posterior**: each frame predicted from the real frame before it, with z drawn from
  the posterior that has seen the frame (the training pass, teacher-forced). Nothing a sampler
  can do beats this at the first predicted frame: it is the encoder / predictor / decoder's
  reconstruction ceiling. At later frames it is easier than the task (the real previous frame).
- **best of K** (``soundsight_train.eval_forecast.best_of_k``), both ways: the best sample at
  each frame (the paper's evaluation code) and one sample per clip (the best mean).
- **prior mean**: one rollout with temperature 0 (what ``--samples 1`` gives without luck).

If best-of-K at frame 6 sits at the one-step ceiling, more samples or a better prior cannot
raise it: the frame decoder's capacity (or training) is the limit.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def one_step_posterior(model, frames_u8, audio, n_past: int, n_future: int, *, chunk: int = 16, seed: int = 0):
    from soundsight_plugins.forecast.metrics import psnr, ssim
    from soundsight_train.eval_forecast import to_frames

    model.eval()
    gen = torch.Generator().manual_seed(seed)
    s_all, p_all = [], []
    with torch.no_grad():
        for i in range(0, len(frames_u8), chunk):
            fr = to_frames(frames_u8[i: i + chunk, : n_past + n_future], "cpu")
            au = torch.as_tensor(np.asarray(audio[i: i + chunk, : n_past + n_future], dtype=np.float32))
            pred = model(fr, au, n_past=n_past, generator=gen)["pred"][:, n_past - 1:]  # frames n_past+1 ..
            tgt = fr[:, n_past:]
            s_all.append(ssim(pred, tgt))
            p_all.append(psnr(pred, tgt))
    return {"ssim": torch.cat(s_all).numpy(), "psnr": torch.cat(p_all).numpy()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", action="append", required=True, help="registry name or folder (repeatable)")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from soundsight_train.eval_forecast import (REPORT_FRAMES, best_of_k, load_registry_model, markdown_table,
                                                per_frame_curves, summarize)
    from soundsight_train.m3so import load_split

    data = load_split(args.data, args.split)
    frames, audio = data["frames"][: args.limit], data["audio"][: args.limit]
    n_past, n_future = 5, 25
    for ref in args.model:
        model, folder = load_registry_model(ref, "cpu")
        rows, t0 = {}, time.time()
        rows["one step, posterior (ceiling)"] = summarize(one_step_posterior(model, frames, audio, n_past, n_future),
                                                          n_past)
        curves = best_of_k(model, frames, audio, n_past, n_future, args.samples, device="cpu")
        rows[f"best of {args.samples}, at each frame"] = summarize(per_frame_curves(curves), n_past)
        rows[f"best of {args.samples}, one sample per clip"] = summarize(curves, n_past)
        rows["prior mean (temperature 0)"] = summarize(
            best_of_k(model, frames, audio, n_past, n_future, 1, device="cpu", temperature=0.0), n_past)
        print(f"\n{folder.name} ({folder.path}; {args.split}, {len(frames)} clips, {time.time() - t0:.0f}s)\n")
        print(markdown_table(rows, REPORT_FRAMES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
