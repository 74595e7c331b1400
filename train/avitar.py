"""Train AViTAR on the synthetic rooms dataset and write a registry model folder.

Data (``soundsight_train.rooms``): seen rooms x train speech, pairs made on the fly: a random
crop of ``--crop`` seconds of dry speech A_S and the same crop of A_T = A_S * RIR (the wet crop
also holds the reverberation of the speech just before the crop, which the model cannot see, so
the first ``--context`` seconds of every crop are input only: the losses skip them).
``--alter P``: with probability P an item is the acoustics-alteration path instead (input =
WPE-dereverberated target convolved with another seen room's RIR plus noise at 2..10 dB SNR;
``rooms.RoomsData.altered``; costs ~0.1 s of CPU per second of audio for WPE).

Losses (HiFi-GAN style, ``discriminators.py``): generator = 45 x log-mel L1 + ``--stft-weight``
x multi-resolution STFT + (after ``--adv-start`` steps) LSGAN + 2 x feature matching over the
multi-period and multi-scale discriminators; AdamW betas (0.8, 0.99), lr 2e-3 (G) / 8e-4 (D) with a
cosine decay to 10 % over the budget (the paper: 5e-4 / 2e-4 for far longer runs; on a CPU budget
the higher rates reach a lower loss: 0.956 against 1.004 log-mel L1 after 80 steps for 3e-3 vs 1e-3).
The adversarial terms start late on purpose: on a CPU budget the reconstruction terms do most of
the work and the discriminators would cost 2/3 of every step from the start.

Runs: ``--tiny`` (CPU smoke: tiny model, a few steps), CPU (``--threads``), or GPUs with
``torchrun --nproc_per_node N -m soundsight_train.avitar ...`` (DDP; bf16/fp16 autocast from the
device policy with ``--amp``). ``--resume`` continues from ``<run>/ckpt`` (model and optimiser
state); ``--max-minutes`` stops cleanly (checkpoint + registry folder); a learning curve goes to
``<run>/curve.jsonl``; the registry folder (``--out``) gets the model and, at the end, the
metrics on unseen rooms (``eval_rematch``) in its card.

    OMP_NUM_THREADS=1 python -m soundsight_train.avitar --preset cpu --threads 1 --max-minutes 55 \\
        --out models/rooms-avitar-16k --run-dir runs/rooms-avitar-16k --resume
    python -m soundsight_train.avitar --tiny --out /tmp/avitar-tiny          # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from soundsight_plugins.acoustic_match.avitar import ARCHITECTURE, TASK, AViTAR, AViTARConfig, count_parameters
from soundsight_plugins.acoustic_match.discriminators import (DiscConfig, Discriminators, MelLoss,
                                                              MultiResolutionSTFTLoss, d_loss,
                                                              feature_matching_loss, g_adv_loss)
from soundsight_train import rooms as rooms_mod
from soundsight_train.checkpoints import load_gan, save_gan
from soundsight_train.distributed import cleanup_distributed, is_main, setup_distributed, unwrap

#: licences of the rooms dataset's speech (rooms.py builds them from these packages)
DATA_LICENCES = {
    "espeak-ng (synthetic speech)": "GPL-3.0-or-later",
    "asterisk-core-sounds-en-wav": "CC-BY-SA-3.0",
    "alsa-utils (/usr/share/sounds/alsa)": "GPL-2.0-or-later",
    "puredata-doc (voice*.wav)": "BSD-3-Clause",
    "room impulse responses and images": "simulated here (pyroomacoustics, MIT) and rendered here",
}


# --------------------------------------------------------------------------------------------
# Data


class PairStream(torch.utils.data.IterableDataset):
    """Endless (input, target, image) items from seen rooms x train speech."""

    def __init__(self, folder, crop: int, image_size: int, seed: int, alter: float = 0.0, rooms: str = "seen",
                 speech: str = "train"):
        self.folder, self.crop, self.image_size = str(folder), crop, image_size
        self.seed, self.alter, self.rooms, self.speech = seed, alter, rooms, speech
        self._ds = None

    def _data(self):
        if self._ds is None:
            self._ds = rooms_mod.RoomsData(self.folder)
        return self._ds

    def items(self, rng):
        ds = self._data()
        rooms, utts = ds.room_ids(self.rooms), ds.speech_ids(self.speech)
        while True:
            room = int(rng.choice(rooms))
            utt = int(rng.choice(utts))
            if self.alter > 0 and rng.random() < self.alter:
                other = int(rng.choice([r for r in rooms if r != room]))
                x, y, img = ds.altered(room, utt, other, rng, crop=self.crop)
            else:
                x, y, img = ds.pair(room, utt, crop=self.crop, rng=rng)
            yield x, y, prepare_image(img, self.image_size)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, wid])
        for x, y, img in self.items(rng):
            yield torch.from_numpy(x)[None], torch.from_numpy(y)[None], img


def prepare_image(img: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, size, size) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
    if t.shape[-1] != size or t.shape[-2] != size:
        t = torch.nn.functional.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=True)[0]
    return t


# --------------------------------------------------------------------------------------------
# Inference helpers used by the evaluation


def rematch_fn(model: AViTAR, device=None, *, tail_s: float = 2.0, mode: str = "waveform", ir_s: float = 3.0):
    """``fn(dry, image uint8 (H, W, 3), sr) -> wet`` for ``eval_rematch.from_rematch``.

    The dry input is zero-padded by ``tail_s`` so the reverberation has room to ring out.
    ``mode="ir"``: the effective IR between the padded input and the model's output
    (``acoustics.estimate_ir``, ``ir_s`` long) convolved with the dry input instead."""
    from soundsight_plugins.acoustic_match import acoustics as ac

    device = device or torch.device("cpu")

    def fn(dry, image, sr):
        if sr != model.sample_rate:
            raise ValueError(f"model is {model.sample_rate} Hz, got {sr}")
        x = np.concatenate([np.asarray(dry, np.float32), np.zeros(int(tail_s * sr), np.float32)])
        img = prepare_image(image, model.image_size)[None].to(device)
        with torch.no_grad():
            y = model.match(torch.from_numpy(x)[None, None].to(device), img)[0, 0].float().cpu().numpy()
        if mode == "waveform":
            return y
        h = ac.estimate_ir(x, y, length=int(ir_s * sr), sr=sr)
        return ac.convolve(dry, h)

    return fn


# --------------------------------------------------------------------------------------------
# One step


def train_step(G, D, opt_g, opt_d, scaler, x, y, img, *, mel_loss, stft_loss, skip: int, adv: bool,
               stft_weight: float, autocast=contextlib.nullcontext) -> dict:
    """One generator (+ discriminator when ``adv``) update; losses on samples ``[skip:]``."""
    with autocast():
        out = G(x, img)
    o, t = out[..., skip:].float(), y[..., skip:]
    stats = {}
    if adv:
        with autocast():
            real, fake = D(t), D(o.detach())
        ld = d_loss(real, fake)
        opt_d.zero_grad(set_to_none=True)
        (scaler.scale(ld) if scaler is not None else ld).backward()
        if scaler is not None:
            scaler.step(opt_d)
        else:
            opt_d.step()
        stats["d"] = float(ld.detach())
    lm = mel_loss(o, t)
    ls = stft_loss(o, t)
    loss = 45.0 * lm + stft_weight * ls
    if adv:
        with autocast():
            real, fake = D(t), D(o)
        la, lf = g_adv_loss(fake), feature_matching_loss(real, fake)
        loss = loss + la + 2.0 * lf
        stats.update(adv=float(la.detach()), fm=float(lf.detach()))
    opt_g.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(opt_g)
    gn = torch.nn.utils.clip_grad_norm_(G.parameters(), 100.0)
    if scaler is not None:
        scaler.step(opt_g)
        scaler.update()
    else:
        opt_g.step()
    stats.update(loss=float(loss.detach()), mel=float(lm.detach()), stft=float(ls.detach()), gnorm=float(gn))
    return stats


# --------------------------------------------------------------------------------------------
# Evaluation and the registry folder


@torch.no_grad()
def quick_val(G, ds, device, n: int, crop: int, skip: int, seed: int = 123) -> dict:
    """Mean STFT distance (``acoustics.stft_distance`` on the scored part) of model output and of
    the unchanged input against the target, seen rooms x *test* speech (no unseen room is used
    for choices during training)."""
    from soundsight_plugins.acoustic_match import acoustics as ac

    g = unwrap(G)
    was = g.training
    g.eval()
    rng = np.random.default_rng(seed)
    rooms, utts = ds.room_ids("seen"), ds.speech_ids("test")
    d_out, d_in = [], []
    for _ in range(n):
        x, y, img = ds.pair(int(rng.choice(rooms)), int(rng.choice(utts)), crop=crop, rng=rng)
        o = g(torch.from_numpy(x)[None, None].to(device), prepare_image(img, g.image_size)[None].to(device))
        o = o[0, 0].float().cpu().numpy()
        d_out.append(ac.stft_distance(o[skip:], y[skip:]))
        d_in.append(ac.stft_distance(x[skip:], y[skip:]))
    g.train(was)
    return {"n": n, "stft": round(float(np.mean(d_out)), 5), "stft_input": round(float(np.mean(d_in)), 5)}


def final_metrics(G, folder, device, n_rooms: int | None, log) -> dict:
    """eval_rematch on unseen rooms x test speech: this model (waveform and ir mode) next to the
    input and blind-reverberator baselines and the oracle."""
    from soundsight_train import eval_rematch as ev

    g = unwrap(G).eval()
    extra = {"AViTAR (waveform)": ev.from_rematch(rematch_fn(g, device)),
             "AViTAR (ir mode)": ev.from_rematch(rematch_fn(g, device, mode="ir"))}
    t0 = time.time()
    res = ev.evaluate(folder, split="unseen", n=n_rooms, extra=extra, log=log)
    log(ev.markdown(res))
    rows = {k: {m: round(v, 4) for m, v in r.items()} for k, r in res["rows"].items()}
    return {"unseen_rooms": {"n": res["n"], "rows": rows, "seconds": round(time.time() - t0, 1),
                             "command": "python -m soundsight_train.eval_rematch --avitar <this folder>"}}


def write_registry(out: Path, G, cfg: AViTARConfig, dcfg: DiscConfig, args, state: dict, metrics: dict,
                   data_meta: dict, final: bool):
    from soundsight.registry import save_model

    g = unwrap(G)
    training = {
        "command": state.get("command"),
        "steps": state["step"], "batch": args.batch, "world_size": state.get("world", 1),
        "crop_s": args.crop, "context_s": args.context, "alter_prob": args.alter,
        "clips_seen": state["step"] * args.batch * state.get("world", 1),
        "seconds": round(state.get("elapsed", 0.0), 1), "device": state.get("device"), "final": final,
        "stopped_by": state.get("stopped_by"),
        "optimizer": {"type": "AdamW", "betas": [0.8, 0.99], "weight_decay": 0.01, "lr_generator": args.lr,
                      "lr_discriminator": args.lr_d, "schedule": f"cosine to {args.lr_final} x over the budget"},
        "loss": {"mel_l1": 45.0, "mr_stft": args.stft_weight, "lsgan": 1.0, "feature_matching": 2.0,
                 "adversarial_from_step": args.adv_start},
        "discriminators": dcfg.to_dict(),
        "curve": "curve.jsonl in the run folder",
    }
    data = {"dataset": f"synthetic rooms ({data_meta.get('name')}): seen rooms x train speech",
            "spec": data_meta.get("spec"), "seed": data_meta.get("seed"), "licences": DATA_LICENCES}
    abl = " (no-image ablation)" if not cfg.use_image else ""
    save_model(
        out, name=args.name or out.name, task=TASK, architecture=ARCHITECTURE, config=cfg.to_dict(),
        tensors={"model.safetensors": {k: v.float() for k, v in g.state_dict().items()}},
        training=training, metrics=metrics, data=data, license="Apache-2.0",
        description=f"AViTAR{abl} trained on synthetic rooms: 16 kHz speech + a picture of a room -> the speech "
                    f"as if recorded there (mic at the camera).",
    )


# --------------------------------------------------------------------------------------------
# Main


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.avitar", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="rooms dataset folder (default: the newest under the data dir)")
    ap.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    ap.add_argument("--tiny", action="store_true", help="smoke run: tiny preset, tiny dataset, a few steps")
    ap.add_argument("--no-image", action="store_true", help="the ablation: image patches -> a learned constant")
    ap.add_argument("--out", required=True, help="registry model folder to write")
    ap.add_argument("--name", default=None)
    ap.add_argument("--run-dir", "--run", dest="run", default=None, help="checkpoints + curve (default runs/<out name>)")
    ap.add_argument("--resume", nargs="?", const="auto", default=None)
    ap.add_argument("--steps", type=int, default=None, help="default 100000 (--tiny: 4)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (checkpoint + registry) after this long")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=float, default=1.5, help="seconds per training crop (paper 2.56)")
    ap.add_argument("--context", type=float, default=0.25, help="seconds at the start of a crop left out of the losses")
    ap.add_argument("--alter", type=float, default=0.0, help="probability of the acoustics-alteration path")
    ap.add_argument("--lr", type=float, default=2e-3, help="generator (paper 5e-4; higher trains faster on a short budget)")
    ap.add_argument("--lr-d", type=float, default=8e-4, help="discriminators (paper 2e-4)")
    ap.add_argument("--lr-final", type=float, default=0.1,
                    help="cosine decay to this fraction of the learning rates over --steps or --max-minutes, "
                         "whichever ends first (a resumed session starts its own decay)")
    ap.add_argument("--stft-weight", type=float, default=15.0)
    ap.add_argument("--adv-start", type=int, default=1500, help="step at which the GAN terms start (0: from the start)")
    ap.add_argument("--d-channels", type=int, default=None, help="MPD width (MSD gets half)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (GPU runs)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--amp", action="store_true", help="autocast on CUDA (bf16 where supported, else fp16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--val-n", type=int, default=16)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--snapshot-minutes", type=float, default=15.0)
    ap.add_argument("--eval-rooms", type=int, default=None, help="unseen rooms in the final evaluation (default all)")
    ap.add_argument("--no-final-eval", action="store_true")
    args = ap.parse_args(argv)
    if args.tiny:
        args.preset = "tiny"
        args.steps = args.steps or 4
        args.batch = min(args.batch, 2)
        args.crop = min(args.crop, 0.5)
        args.context = min(args.context, 0.1)
        args.adv_start = min(args.adv_start, 2)
        args.val_n = min(args.val_n, 2)
        args.val_every = min(args.val_every, 2)
        args.eval_rooms = args.eval_rooms or 2
    args.steps = args.steps or 100000
    return args


def budget_cosine(step: int, steps: int, t_session: float, max_minutes: float | None, floor: float) -> float:
    """LR scale: cosine from 1 to ``floor`` over the step budget, or over the time budget
    (``--max-minutes`` since ``t_session``) if that runs out first."""
    frac = step / steps
    if max_minutes:
        frac = max(frac, (time.time() - t_session) / (max_minutes * 60))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def find_rooms(data: str | None, tiny: bool) -> Path:
    if data and (Path(data) / "meta.json").is_file():
        return Path(data)
    base = Path(data) if data else rooms_mod.default_data_dir()
    def default_looks(meta: Path) -> bool:  # a --textures material build is only used when named
        try:
            return rooms_mod.textures_of(json.loads(meta.read_text())) == "class"
        except (OSError, ValueError):
            return False

    found = sorted(base.glob("rooms-*r-s*/meta.json"), key=lambda p: (default_looks(p), p.stat().st_mtime))
    if tiny and not found:
        # a throwaway dataset small enough for a smoke run
        return rooms_mod.build(rooms_mod.RoomsSpec(rooms=6, speech=8, real_speech=0, n_rays=500), seed=0, data_dir=base)
    if not found:
        raise SystemExit(f"error: no rooms dataset under {base}; run: python -m soundsight_train.rooms build")
    return found[-1].parent


def main(argv=None) -> int:
    args = parse(argv)
    command = "python -m soundsight_train.avitar " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    rank, world, _, dev = setup_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    main_proc = is_main(rank)
    log = (lambda *a: print(*a, flush=True)) if main_proc else (lambda *a: None)

    folder = find_rooms(args.data, args.tiny)
    ds = rooms_mod.RoomsData(folder)
    sr = ds.sr
    cfg = AViTARConfig.preset(args.preset, use_image=not args.no_image, sample_rate=sr)
    dcfg = DiscConfig.preset(args.preset)
    if args.d_channels:
        dcfg.mpd_channels, dcfg.msd_channels = args.d_channels, max(1, args.d_channels // 2)
    torch.manual_seed(args.seed)  # same initial weights on every rank
    G = AViTAR(cfg).to(dev.torch_device)
    D = Discriminators(dcfg).to(dev.torch_device)
    opt_g = torch.optim.AdamW(G.parameters(), lr=args.lr, betas=(0.8, 0.99), weight_decay=0.01)
    opt_d = torch.optim.AdamW(D.parameters(), lr=args.lr_d, betas=(0.8, 0.99), weight_decay=0.01)
    use_amp = args.amp and dev.is_cuda
    autocast = dev.autocast if use_amp else contextlib.nullcontext
    fp16 = use_amp and dev.autocast_dtype == torch.float16
    scaler = torch.amp.GradScaler("cuda") if fp16 else None
    mel_loss = MelLoss(sr).to(dev.torch_device)
    stft_loss = MultiResolutionSTFTLoss().to(dev.torch_device)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dev.torch_device.index] if dev.is_cuda else None
        G = DDP(G, device_ids=ids)
        D = DDP(D, device_ids=ids)

    out = Path(args.out)
    run = Path(args.run) if args.run else Path("runs") / out.name
    run.mkdir(parents=True, exist_ok=True)
    curve_path = run / "curve.jsonl"
    state = {"step": 0, "elapsed": 0.0, "command": command, "world": world, "device": str(dev),
             "config": cfg.to_dict(), "disc": dcfg.to_dict(), "dataset": str(folder)}
    if args.resume:
        ck = run / "ckpt" if args.resume == "auto" else Path(args.resume)
        if (ck / "state.json").is_file():
            saved = json.loads((ck / "state.json").read_text())
            if saved.get("config") != cfg.to_dict() or saved.get("disc") != dcfg.to_dict():
                raise SystemExit(f"error: checkpoint {ck} was trained with a different config; use another --run folder")
            prev = load_gan(ck, G, D, opt_g, opt_d, scaler, dev.torch_device)
            state.update(step=prev["step"], elapsed=prev.get("elapsed", 0.0))
            log(f"resumed from {ck} at step {state['step']}")
        elif args.resume != "auto":
            raise SystemExit(f"error: no checkpoint at {ck}")

    crop, skip = int(round(args.crop * sr)), int(round(args.context * sr))
    stream = PairStream(folder, crop, cfg.image_size, seed=args.seed * 7919 + rank + 1000003 * state["step"],
                        alter=args.alter)
    loader = iter(torch.utils.data.DataLoader(stream, batch_size=args.batch, num_workers=args.workers,
                                              pin_memory=dev.is_cuda, persistent_workers=args.workers > 0))
    data_meta = {"name": folder.name, "spec": ds.meta.get("spec"), "seed": ds.meta.get("seed")}

    log(f"data: {folder} ({len(ds.room_ids('seen'))} seen rooms, {len(ds.speech_ids('train'))} train utterances)")
    log(f"model: generator {count_parameters(unwrap(G)) / 1e6:.2f}M params, discriminators "
        f"{count_parameters(unwrap(D)) / 1e6:.2f}M; image={'on' if cfg.use_image else 'off (ablation)'}; device {dev}; "
        f"world {world}; batch {args.batch}/process x {args.crop:.2f} s; adversarial from step {args.adv_start}")
    log(f"run folder: {run}; registry folder: {out}")

    G.train()
    D.train()
    t_start = time.time() - state["elapsed"]
    t_session = time.time()
    last_ck = last_snap = time.time()
    acc: dict[str, float] = {}
    n_acc, t_win = 0, time.time()
    step = state["step"]
    curve = open(curve_path, "a") if main_proc else None
    stop_reason = "steps"
    while step < args.steps:
        if args.max_minutes is not None and time.time() - t_session > args.max_minutes * 60:
            stop_reason = "max-minutes"
            break
        scale = budget_cosine(step, args.steps, t_session, args.max_minutes, args.lr_final)
        for opt, base in ((opt_g, args.lr), (opt_d, args.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * scale
        x, y, img = next(loader)
        x, y, img = (t.to(dev.torch_device, non_blocking=True) for t in (x, y, img))
        stats = train_step(G, D, opt_g, opt_d, scaler, x, y, img, mel_loss=mel_loss, stft_loss=stft_loss, skip=skip,
                           adv=step >= args.adv_start, stft_weight=args.stft_weight, autocast=autocast)
        step += 1
        for k, v in stats.items():
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        if not all(math.isfinite(v) for v in acc.values()):
            log(f"error: non-finite loss at step {step}: {acc}")
            return 1
        now = time.time()
        state.update(step=step, elapsed=now - t_start)
        if step % args.log_every == 0 or step == args.steps:
            dt = now - t_win
            rec = {"step": step, **{k: round(v / n_acc, 5) for k, v in acc.items()},
                   "lr": round(opt_g.param_groups[0]["lr"], 7), "sec_per_step": round(dt / n_acc, 3),
                   "audio_s_per_s": round(n_acc * args.batch * world * args.crop / dt, 2),
                   "elapsed": round(now - t_start, 1)}
            if main_proc:
                curve.write(json.dumps(rec) + "\n")
                curve.flush()
                log(f"step {step}  mel {rec['mel']:.4f}  stft {rec['stft']:.4f}" +
                    (f"  adv {rec['adv']:.3f}  fm {rec['fm']:.3f}  d {rec['d']:.3f}" if "adv" in rec else "") +
                    f"  {rec['sec_per_step']:.2f}s/step  {rec['audio_s_per_s']:.1f} audio-s/s  [{rec['elapsed'] / 60:.1f} min]")
            acc, n_acc, t_win = {}, 0, time.time()
        if main_proc and args.val_every and step % args.val_every == 0:
            t0 = time.time()
            v = quick_val(G, ds, dev.torch_device, args.val_n, crop, skip)
            curve.write(json.dumps({"step": step, "val": v}) + "\n")
            curve.flush()
            log(f"val (seen rooms x test speech, {v['n']} crops): STFT distance {v['stft']:.4f} (input {v['stft_input']:.4f})")
            t_start += time.time() - t0  # validation time is not training time
        if main_proc and now - last_ck > args.ckpt_minutes * 60:
            save_gan(run, G, D, opt_g, opt_d, scaler, state)
            last_ck = time.time()
        if main_proc and now - last_snap > args.snapshot_minutes * 60:
            write_registry(out, G, cfg, dcfg, args, state, {}, data_meta, final=False)
            last_snap = time.time()
    if curve is not None:
        curve.close()
    if main_proc:
        save_gan(run, G, D, opt_g, opt_d, scaler, state)
        final = step >= args.steps
        state["stopped_by"] = stop_reason
        log(f"stopped ({stop_reason}) at step {step} after {state['elapsed'] / 60:.1f} min of training")
        metrics = {}
        if not args.no_final_eval:
            log("evaluating on unseen rooms ...")
            metrics = final_metrics(G, folder, dev.torch_device, args.eval_rooms, log)
            with open(curve_path, "a") as f:
                f.write(json.dumps({"step": step, "eval_unseen": metrics["unseen_rooms"]["rows"]}) + "\n")
        write_registry(out, G, cfg, dcfg, args, state, metrics, data_meta, final=final)
        log(f"wrote registry model {out}")
    cleanup_distributed(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
