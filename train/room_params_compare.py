"""Compare picture -> room-parameter models room by room on the unseen rooms, each on its own
pictures (the rooms and their RIRs must be the same: a default build and a ``--textures
material`` build of the same seed), with 95 % bootstrap intervals over the rooms.

    python -m soundsight_train.room_params_compare \\
        models/rooms-params-128@~/.cache/soundsight/data/rooms-400r-s0 \\
        runs/rooms3/params-material@~/.cache/soundsight/data/rooms-400r-s0-eef3c1fd

The first model is the reference: each line is another model minus it (speech-band RT60 and DRR
absolute errors).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from soundsight_plugins.acoustic_match.room_params_net import RoomParamsNet
from soundsight_train import rooms as rooms_mod
from soundsight_train.forecast_stats import bootstrap_mean_ci
from soundsight_train.room_params import predict, targets_for, to_tensor


def errors(model_folder: str, data: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Room ids and the absolute errors (RT60 s, DRR dB) of one model on one dataset's unseen rooms."""
    from soundsight.registry import resolve

    ds = rooms_mod.RoomsData(Path(data).expanduser())
    ids = ds.room_ids("unseen")
    _, truth = targets_for(ds, ids)
    model = RoomParamsNet.from_registry(resolve(Path(model_folder)))
    pred = predict(model, to_tensor(np.stack([ds.image(r) for r in ids]), model.cfg.image_size))
    rt = np.abs(np.array([p["rt60"] for p in pred]) - np.array([t["rt60_speech"] for t in truth]))
    drr = np.abs(np.array([p["drr_db"] for p in pred]) - np.array([t["drr"] for t in truth]))
    return ids, rt, drr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.room_params_compare", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="MODEL_FOLDER@DATASET_FOLDER; the first is the reference")
    ap.add_argument("--boot", type=int, default=4000)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = {}
    for run in args.runs:
        if "@" not in run:
            print(f"error: {run!r} is not MODEL_FOLDER@DATASET_FOLDER", file=sys.stderr)
            return 2
        res[run] = errors(*run.split("@", 1))
        print(f"{run}: RT60 MAE {res[run][1].mean():.3f} s, DRR MAE {res[run][2].mean():.2f} dB")
    ref = args.runs[0]
    for run in args.runs[1:]:
        if res[run][0] != res[ref][0]:
            print(f"error: {run} has other unseen rooms than {ref}", file=sys.stderr)
            return 2
        d_rt, d_drr = res[run][1] - res[ref][1], res[run][2] - res[ref][2]
        idx = np.random.default_rng(0).integers(0, len(d_rt), (args.boot, len(d_rt)))  # one paired resample
        (a, b), (c, e) = bootstrap_mean_ci(d_rt, idx), bootstrap_mean_ci(d_drr, idx)
        print(f"{run} minus {ref}: RT60 {d_rt.mean():+.3f} s [{a:+.3f}, {b:+.3f}], DRR {d_drr.mean():+.2f} dB [{c:+.2f}, {e:+.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
