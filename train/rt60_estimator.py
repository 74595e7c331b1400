"""Train the learned blind RT60 estimator (``rt60_net.RT60Net``) and write a registry folder.

Data (``soundsight_train.rooms``): every seen room x ``--per-room`` random train utterances,
convolved with the room's RIR (tail kept: a clip ends when the reverberation has died away, as a
recording does), target the room's speech-band RT60 (``rt60_speech``). Log-mel features are
computed once; each step takes a random window of ``--frames`` frames (3.2 s at the default) from
each clip, clips shorter than that padded with silence. Loss: L1 on log RT60 (relative error).
Validation and the card's metrics: unseen rooms x test speech (``--eval-per-room`` clips per
room, whole clips), mean absolute error in seconds; never used to pick anything during training.

    OMP_NUM_THREADS=1 python -m soundsight_train.rt60_estimator --threads 1 --max-minutes 10 \\
        --out models/rooms-rt60-16k
    python -m soundsight_train.rt60_estimator --tiny --out /tmp/rt60-tiny      # smoke test
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
import torch.nn.functional as F

from soundsight_plugins.acoustic_match.rt60_net import ARCHITECTURE, TASK, RT60Config, RT60Net
from soundsight_train import rooms as rooms_mod
from soundsight_train.avitar import DATA_LICENCES, find_rooms


def clips(ds: rooms_mod.RoomsData, rooms: str, speech: str, per_room: int, seed: int, n_rooms: int | None = None):
    """[(room, utt, wet)] with wet = utterance * RIR (tail kept)."""
    rng = np.random.default_rng(seed)
    rs = ds.room_ids(rooms)[: n_rooms or None]
    us = ds.speech_ids(speech)
    out = []
    for r in rs:
        for u in rng.choice(us, size=min(per_room, len(us)), replace=False):
            out.append((r, int(u), ds.wet(r, ds.utterance(int(u)))))
    return out


@torch.no_grad()
def featurize(model: RT60Net, waves: list[np.ndarray]) -> list[torch.Tensor]:
    return [model.features(torch.from_numpy(w)[None])[0] for w in waves]


def window_batch(feats: list[torch.Tensor], idx: np.ndarray, frames: int, rng) -> torch.Tensor:
    out = torch.full((len(idx), feats[0].shape[0], frames), -4.0)
    for k, i in enumerate(idx):
        f = feats[i]
        n = f.shape[1]
        if n > frames:
            s = int(rng.integers(0, n - frames + 1))
            out[k] = f[:, s: s + frames]
        else:
            out[k, :, :n] = f
    return out


def _summary(pred: np.ndarray, truth: np.ndarray) -> dict:
    err = np.abs(pred - truth)
    return {"n": int(len(truth)), "mae_s": round(float(err.mean()), 4), "median_ae_s": round(float(np.median(err)), 4),
            "rel_mae": round(float(np.mean(err / truth)), 4),
            "corr": round(float(np.corrcoef(pred, truth)[0, 1]), 4) if len(truth) > 2 else None,
            "true_mean_s": round(float(truth.mean()), 4)}


@torch.no_grad()
def evaluate(model: RT60Net, feats: list[torch.Tensor], truth: np.ndarray, waves=None, sr: int = 16000) -> dict:
    """The model's errors; with ``waves``, also the classical blind estimator's
    (``acoustics.blind_estimate``, the ridge regression on decay features) on the same clips."""
    was = model.training
    model.eval()
    pred = np.array([float(torch.exp(model.from_features(f[None]))[0]) for f in feats])
    model.train(was)
    res = _summary(pred, truth)
    if waves is not None:
        from soundsight_plugins.acoustic_match import acoustics as ac

        ok = [i for i, w in enumerate(waves) if len(w) >= sr]  # it needs at least 1 s
        res["blind_ridge_same_clips"] = _summary(np.array([ac.blind_estimate(waves[i], sr).rt60 for i in ok]), truth[ok])
        res["same_clips_model"] = _summary(pred[ok], truth[ok])
    return res


def evaluate_folder(out: Path, ds, args) -> int:
    from soundsight.registry import record_metrics, resolve

    model = RT60Net.from_registry(resolve(out))
    te = clips(ds, "unseen", "test", args.eval_per_room, args.seed + 1, 4 if args.tiny else None)
    waves = [w for *_, w in te]
    truth = np.array([ds.rooms[r]["acoustics"]["rt60_speech"] for r, *_ in te])
    res = evaluate(model, featurize(model, waves), truth, waves, ds.sr)
    print(f"unseen rooms x test speech: {json.dumps(res)}", flush=True)
    record_metrics(out, "unseen_rooms_test_speech", res)
    return 0


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.rt60_estimator", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--preset", default="cpu", choices=["tiny", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="smoke run: tiny model, few rooms and steps")
    ap.add_argument("--out", required=True, help="registry folder to write (with --evaluate: the folder to evaluate)")
    ap.add_argument("--evaluate", action="store_true",
                    help="no training: evaluate the model in --out and update its card's metrics")
    ap.add_argument("--name", default=None)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=400, help="frames per training window (8 ms each)")
    ap.add_argument("--per-room", type=int, default=6)
    ap.add_argument("--eval-per-room", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=100)
    args = ap.parse_args(argv)
    if args.tiny:
        args.preset = "tiny"
        args.steps = min(args.steps, 5)
        args.per_room = min(args.per_room, 1)
        args.eval_per_room = 1
        args.batch = min(args.batch, 4)
        args.frames = min(args.frames, 100)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    command = "python -m soundsight_train.rt60_estimator " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    folder = find_rooms(args.data, args.tiny)
    ds = rooms_mod.RoomsData(folder)
    cfg = RT60Config.preset(args.preset, sample_rate=ds.sr)
    model = RT60Net(cfg)
    if args.evaluate:
        return evaluate_folder(Path(args.out), ds, args)
    n_rooms = 4 if args.tiny else None
    t0 = time.time()
    tr = clips(ds, "seen", "train", args.per_room, args.seed, n_rooms)
    te = clips(ds, "unseen", "test", args.eval_per_room, args.seed + 1, n_rooms)
    if not te:  # a tiny dataset may have no unseen room
        te = clips(ds, "seen", "test", args.eval_per_room, args.seed + 1, n_rooms)
    f_tr, f_te = featurize(model, [w for *_, w in tr]), featurize(model, [w for *_, w in te])
    y_tr = torch.tensor([np.log(ds.rooms[r]["acoustics"]["rt60_speech"]) for r, *_ in tr], dtype=torch.float32)
    t_te = np.array([ds.rooms[r]["acoustics"]["rt60_speech"] for r, *_ in te])
    print(f"data: {folder}: {len(tr)} training clips ({len(set(r for r, *_ in tr))} seen rooms), "
          f"{len(te)} evaluation clips; features in {time.time() - t0:.0f} s", flush=True)
    print(f"model: {model.num_parameters()} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-3)
    rng = np.random.default_rng(args.seed)
    t_train = time.time()
    acc, step = 0.0, 0
    model.train()
    while step < args.steps:
        if args.max_minutes is not None and time.time() - t_train > args.max_minutes * 60:
            break
        # warm-up then cosine decay over whichever budget (steps or minutes) runs out first
        frac = step / args.steps
        if args.max_minutes:
            frac = max(frac, (time.time() - t_train) / (args.max_minutes * 60))
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * min(1.0, frac)))
        idx = rng.integers(0, len(f_tr), size=args.batch)
        x = window_batch(f_tr, idx, args.frames, rng)
        loss = F.l1_loss(model.from_features(x), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc += float(loss.detach())
        if step % args.log_every == 0:
            print(f"step {step}  L1(log RT60) {acc / args.log_every:.4f}  [{(time.time() - t_train) / 60:.1f} min]",
                  flush=True)
            acc = 0.0
    seconds = time.time() - t_train
    metrics = {"unseen_rooms_test_speech": evaluate(model, f_te, t_te, [w for *_, w in te], ds.sr)}
    print(f"unseen rooms x test speech: {json.dumps(metrics['unseen_rooms_test_speech'])}", flush=True)
    from soundsight.registry import save_model

    out = Path(args.out)
    save_model(
        out, name=args.name or out.name, task=TASK, architecture=ARCHITECTURE, config=cfg.to_dict(),
        tensors={"model.safetensors": model.state_dict()},
        training={"command": command, "steps": step, "batch": args.batch, "window_frames": args.frames,
                  "clips": len(tr), "seconds": round(seconds, 1), "device": "cpu",
                  "optimizer": {"type": "AdamW", "lr": args.lr, "schedule": "100-step warm-up, cosine to 0 over the step or time budget"},
                  "loss": "L1 on log RT60", "target": "rt60_speech (Schroeder T30, 177 Hz .. 5.7 kHz)"},
        metrics=metrics,
        data={"dataset": f"synthetic rooms ({folder.name}): seen rooms x train speech", "licences": DATA_LICENCES},
        license="Apache-2.0",
        description="Blind speech-band RT60 of reverberant 16 kHz speech (CNN on log-mel spectrograms), "
                    "trained on synthetic rooms.",
    )
    print(f"wrote registry model {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
