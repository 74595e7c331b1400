"""How close can any predictor get to the rooms dataset's RT60 and DRR? Two floors, measured on
the unseen rooms:

- **simulation noise.** The late part of a pyroomacoustics hybrid RIR is ray tracing plus a random
  noise realisation. Each unseen room is simulated again with other seeds (same geometry,
  materials, positions, ray density) and measured exactly as the build measures it. The spread
  between realisations is label noise: a predictor that knew the room perfectly, but not which
  realisation the dataset drew, is still wrong by about that much. ``--hits`` asks for more rays
  per histogram bin (the build uses 10) to see how much of it more rays remove.
- **full information.** A gradient-boosted regressor of log RT60 (and of DRR) on everything the
  room sampler drew: the true sizes, every surface's material absorption per octave (the wall
  behind the camera included), speaker and microphone positions, scattering and Eyring's RT60s.
  It trains on the training rooms (the seen rooms, plus every room of ``--extra-data``) and is
  scored on the unseen rooms: no picture-only model can be expected to beat it.

    python -m soundsight_train.room_bounds --data ~/.cache/soundsight/data/rooms-400r-s0 \\
        --extra-data ~/.cache/soundsight/rooms-extra/rooms-1200r-s1-fae6f44a --hits 10,40
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from soundsight_train import rooms as rooms_mod
from soundsight_train.avitar import find_rooms

OCTAVES = (250, 500, 1000, 2000, 4000)  # rooms_mod's absorption rows start at 125 Hz


def resimulate(room: dict, seed: int, hits: float = rooms_mod.HITS, n_rays: int = rooms_mod.N_RAYS) -> dict:
    """The room simulated with ``seed`` and measured as the build measures it (``rooms.measure``)."""
    h, _ = rooms_mod.simulate_rir(room, seed=seed, n_rays=n_rays, hits=hits)
    h, _ = rooms_mod.prepare_rir(h)
    return rooms_mod.measure(h)


def simulation_noise(ds: rooms_mod.RoomsData, room_ids: list[int], seeds: int, hits: float,
                     n_rays: int | None = None) -> dict:
    """Errors of other realisations of the same rooms against the stored labels (speech-band RT60 in
    s, DRR in dB): one other realisation, the mean of ``seeds`` of them, and two realisations
    against each other. Seeds are drawn from a generator no build uses."""
    n_rays = int(n_rays or ds.meta["spec"].get("n_rays", rooms_mod.N_RAYS))
    rng = np.random.default_rng([ds.meta["seed"], 9173])
    stored_rt, stored_drr, rt, drr = [], [], [], []
    for r in room_ids:
        room = ds.rooms[r]
        runs = [resimulate(room, int(rng.integers(2 ** 31)), hits, n_rays) for _ in range(seeds)]
        stored_rt.append(room["acoustics"]["rt60_speech"])
        stored_drr.append(room["acoustics"]["drr"])
        rt.append([m["rt60_speech"] for m in runs])
        drr.append([m["drr"] for m in runs])
    stored_rt, stored_drr, rt, drr = map(np.asarray, (stored_rt, stored_drr, rt, drr))
    out = {"rooms": len(room_ids), "seeds": seeds, "hits": hits,
           "rt60_one_other_mae_s": float(np.mean(np.abs(rt - stored_rt[:, None]))),
           "rt60_one_other_median_s": float(np.median(np.abs(rt - stored_rt[:, None]))),
           "rt60_mean_of_others_mae_s": float(np.mean(np.abs(rt.mean(1) - stored_rt))),
           "drr_one_other_mae_db": float(np.mean(np.abs(drr - stored_drr[:, None]))),
           "drr_mean_of_others_mae_db": float(np.mean(np.abs(drr.mean(1) - stored_drr)))}
    if seeds >= 2:  # at this ray density, the stored labels' own density aside
        out["rt60_between_others_mae_s"] = float(np.mean(np.abs(rt[:, 0] - rt[:, 1])))
        out["drr_between_others_mae_db"] = float(np.mean(np.abs(drr[:, 0] - drr[:, 1])))
    return out


def room_features(room: dict) -> list[float]:
    """Everything the room sampler drew that bears on its acoustics (no picture)."""
    w, d, h = room["dims"]
    area = {"floor": w * d, "ceiling": w * d, "west": d * h, "east": d * h, "north": w * h, "south": w * h}
    absorb = {s: rooms_mod._absorption(room["materials"][s])[1:1 + len(OCTAVES)] for s in rooms_mod.SURFACES}
    total = sum(area.values())
    mean_absorb = sum(area[s] * absorb[s] for s in rooms_mod.SURFACES) / total
    f = [math.log(w), math.log(d), math.log(h), math.log(w * d * h), math.log(total),
         math.log(max(float(room["distance"]), 0.1)), float(room["scattering"])]
    f += [math.log(v) for v in room["eyring_rt60"][1:1 + len(OCTAVES)]] + list(mean_absorb)
    for s in rooms_mod.SURFACES:
        f += list(absorb[s])
    return f + list(room["camera"]["pos"]) + list(room["speaker"]["mouth"])


def full_information(train_rooms: list[dict], test_rooms: list[dict], seed: int = 0) -> dict:
    """Unseen-room errors of gradient boosting on ``room_features``, against calibrated Eyring."""
    from sklearn.ensemble import GradientBoostingRegressor

    x = np.array([room_features(r) for r in train_rooms])
    xt = np.array([room_features(r) for r in test_rooms])
    log_rt = np.log([r["acoustics"]["rt60_speech"] for r in train_rooms])
    true_rt = np.array([r["acoustics"]["rt60_speech"] for r in test_rooms])
    true_drr = np.array([r["acoustics"]["drr"] for r in test_rooms])

    def gbm():
        return GradientBoostingRegressor(n_estimators=600, max_depth=3, learning_rate=0.03, subsample=0.8,
                                         random_state=seed)

    rt = np.exp(gbm().fit(x, log_rt).predict(xt))
    drr = gbm().fit(x, [r["acoustics"]["drr"] for r in train_rooms]).predict(xt)

    def eyring(r):
        return float(np.exp(np.mean(np.log(r["eyring_rt60"][1:1 + len(OCTAVES)]))))

    bias = float(np.median(log_rt - np.log([eyring(r) for r in train_rooms])))
    ey = np.array([eyring(r) for r in test_rooms]) * math.exp(bias)
    return {"train_rooms": len(train_rooms), "test_rooms": len(test_rooms),
            "rt60_mae_s": float(np.mean(np.abs(rt - true_rt))),
            "rt60_median_s": float(np.median(np.abs(rt - true_rt))),
            "drr_mae_db": float(np.mean(np.abs(drr - true_drr))),
            "eyring_calibrated_rt60_mae_s": float(np.mean(np.abs(ey - true_rt)))}


def table(noise: list[dict], full: dict | None) -> str:
    lines = ["| floor | RT60 speech band MAE (s) | median (s) | DRR MAE (dB) |", "|---|---|---|---|"]
    for n in noise:
        tag = f"{n['hits']:g} hits per bin" + (" (the build's)" if n["hits"] == rooms_mod.HITS else "")
        lines.append(f"| the same rooms simulated again, {tag}: one other realisation | "
                     f"{n['rt60_one_other_mae_s']:.3f} | {n['rt60_one_other_median_s']:.3f} | "
                     f"{n['drr_one_other_mae_db']:.2f} |")
        lines.append(f"| ... the mean of {n['seeds']} other realisations | {n['rt60_mean_of_others_mae_s']:.3f} | | "
                     f"{n['drr_mean_of_others_mae_db']:.2f} |")
        if "rt60_between_others_mae_s" in n:
            lines.append(f"| ... two new realisations against each other | {n['rt60_between_others_mae_s']:.3f} | | "
                         f"{n['drr_between_others_mae_db']:.2f} |")
    if full:
        lines.append(f"| gradient boosting on the true room ({full['train_rooms']} training rooms) | "
                     f"{full['rt60_mae_s']:.3f} | {full['rt60_median_s']:.3f} | {full['drr_mae_db']:.2f} |")
        lines.append(f"| Eyring on the true room, bias-calibrated | {full['eyring_calibrated_rt60_mae_s']:.3f} | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.room_bounds", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="rooms dataset (default: the newest default-looks build)")
    ap.add_argument("--extra-data", action="append", default=[], help="more training rooms (another seed)")
    ap.add_argument("--seeds", type=int, default=2, help="new realisations per room")
    ap.add_argument("--hits", default="10", help="comma list of ray densities (hits per 4 ms bin; the build's is 10)")
    ap.add_argument("--rooms", type=int, default=0, help="only the first N unseen rooms (0: all)")
    ap.add_argument("--no-regressor", action="store_true")
    ap.add_argument("--fractions", default="", help="also the regressor on these shares of the training rooms "
                    "(comma list; 3 random draws each): does it still gain from more rooms?")
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args(argv)
    ds = rooms_mod.RoomsData(find_rooms(args.data, False))
    unseen = ds.room_ids("unseen")[:args.rooms or None]
    print(f"{ds.folder}: {len(unseen)} unseen rooms", file=sys.stderr)
    noise = []
    for hits in (float(h) for h in args.hits.split(",")):
        t0 = time.perf_counter()
        noise.append(simulation_noise(ds, unseen, args.seeds, hits))
        print(f"  {hits:g} hits: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    full = None
    if not args.no_regressor:
        train = [ds.rooms[r] for r in ds.room_ids("seen")]
        from soundsight_train.room_params import extra_dataset  # refuses --data's seed (its unseen rooms)

        for folder in args.extra_data:
            train += extra_dataset(folder, ds)[0].rooms
        test = [ds.rooms[r] for r in unseen]
        full = full_information(train, test)
        rng = np.random.default_rng(0)
        for frac in (float(f) for f in args.fractions.split(",") if f):
            k = max(2, int(round(frac * len(train))))
            maes = [full_information([train[i] for i in rng.permutation(len(train))[:k]], test, seed=d)["rt60_mae_s"]
                    for d in range(3)]
            full.setdefault("rt60_mae_s_by_training_rooms", {})[k] = float(np.mean(maes))
            print(f"  regressor on {k} training rooms: RT60 MAE {np.mean(maes):.3f} s "
                  f"({', '.join(f'{m:.3f}' for m in maes)})", file=sys.stderr)
    print(table(noise, full))
    if args.json:
        Path(args.json).write_text(json.dumps({"data": str(ds.folder), "simulation_noise": noise,
                                               "full_information": full}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
