"""Shared plumbing of the scene-gen training entrypoints (scene_image_encoder, scene_gan,
scene_audio_encoder, scene_ldm, scene_evaluator): the command line, distributed setup, the
scenes data and the frozen f_V's features, checkpoints and the run state, the learning curve,
augmentations, evaluation helpers and the registry folder. The loop's step bookkeeping is in
scene_loop.

Checkpoints are ``soundsight_train.checkpoints`` (shared with the other trainers), re-exported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from soundsight_train.checkpoints import load_checkpoint, save_checkpoint  # noqa: F401 (re-exported)
from soundsight_train.distributed import cleanup_distributed, setup_distributed, unwrap  # noqa: F401 (re-exported)
from soundsight_train.schedules import set_lr  # noqa: F401 (re-exported)

# --------------------------------------------------------------------------------------------
# Distributed


def wrap_ddp(module, dev, world: int):
    if world <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[dev.torch_device.index] if dev.is_cuda else None)


def make_scaler(dev):
    """A GradScaler for fp16 autocast on CUDA; None otherwise (bf16 and fp32 need none)."""
    if dev.is_cuda and dev.autocast_dtype == torch.float16:
        return torch.amp.GradScaler("cuda")
    return None


def backward_step(loss, opt, scaler, params=None, clip: float = 0.0):
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()


# --------------------------------------------------------------------------------------------
# Data


def find_scenes(data: str | None) -> Path:
    """A scenes dataset folder: ``data`` itself if it holds meta.json, else one under the data root."""
    from soundsight_train.scenes import default_data_dir

    p = Path(data).expanduser() if data else default_data_dir()
    if (p / "meta.json").is_file():
        return p
    cands = sorted(q.parent for q in p.glob("scenes-*/meta.json"))
    if not cands:
        raise SystemExit(f"error: no scenes dataset under {p}; build one with "
                         f"`python -m soundsight_train.scenes build --train 5000 --val 500 --test 500 --seconds 5`")
    pref = [c for c in cands if c.name == "scenes-5s-s0"]
    if pref:
        return pref[0]
    if len(cands) > 1:
        raise SystemExit(f"error: several scenes datasets under {p} ({', '.join(c.name for c in cands)}); "
                         "pass one with --data")
    return cands[0]


def scene_splits(data: str | None, *names: str):
    """The scenes dataset folder (see find_scenes) and its splits ``names``."""
    from soundsight_train.scenes import SceneSplit

    folder = find_scenes(data)
    return folder, tuple(SceneSplit(folder, n) for n in names)


def images_nchw(split, size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size) of a SceneSplit, in memory."""
    return torch.from_numpy(np.ascontiguousarray(split.images_at(size))).permute(0, 3, 1, 2).contiguous()


def to_unit(x_uint8: torch.Tensor, device, channels_last: bool = False) -> torch.Tensor:
    """uint8 NCHW → float [0, 1] on ``device``."""
    x = x_uint8.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def take(split_len: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(split_len, (batch,), generator=gen)


@torch.no_grad()
def encode_images(encoder, images_u8: torch.Tensor, device, batch: int = 256, flip: bool = False,
                  normalize: bool = True) -> torch.Tensor:
    """f_V features (N, D) (unit-norm unless told otherwise) of uint8 NCHW images, on CPU."""
    enc = unwrap(encoder)
    was = enc.training
    enc.eval()
    out = []
    for i in range(0, len(images_u8), batch):
        x = to_unit(images_u8[i:i + batch], device)
        if flip:
            x = x.flip(-1)
        f = enc(x).float()
        out.append((F.normalize(f, dim=-1) if normalize else f).cpu())
    enc.train(was)
    return torch.cat(out, 0)


def load_image_encoder(name_or_path: str, device):
    """The frozen f_V of an earlier stage (a registry name or folder) and its ModelFolder."""
    from soundsight.registry import resolve

    from soundsight_plugins.scene_gen.encoders import IMAGE_TASK, ImageEncoder

    folder = resolve(name_or_path, task=IMAGE_TASK)
    enc = ImageEncoder.from_registry(folder, device.torch_device)
    enc.requires_grad_(False)
    return enc, folder


def conditioning_features(encoder, train_u8: torch.Tensor, val_u8: torch.Tensor, dev, log):
    """The frozen f_V's unit-norm features, computed once: of the training images, of their
    mirror images (mirrored samples get mirrored targets / conditions) and of the val images."""
    t0 = time.time()
    feats = encode_images(encoder, train_u8, dev.torch_device)
    feats_flip = encode_images(encoder, train_u8, dev.torch_device, flip=True)
    val_f = encode_images(encoder, val_u8, dev.torch_device)
    log(f"features: {len(feats)} train (+ mirrored) and {len(val_f)} val in {time.time() - t0:.0f}s")
    return feats, feats_flip, val_f


def model_ref(folder) -> dict:
    """How a card names another model it depends on."""
    return {"name": folder.name, "path": str(folder.path), "files": folder.provenance()}


def save_registry(out: Path, args, model, cfg, *, task: str, architecture: str, training: dict, metrics: dict,
                  data: dict, description: str, extra: dict | None = None) -> Path:
    """A trainer's registry folder: the weights as ``model.safetensors``, named ``--name`` or
    after the folder, Apache-2.0."""
    from soundsight.registry import save_model

    return save_model(out, name=args.name or out.name, task=task, architecture=architecture, config=cfg.to_dict(),
                      tensors={"model.safetensors": unwrap(model).state_dict()}, training=training,
                      metrics=metrics, data=data, license="Apache-2.0", extra=extra, description=description)


# --------------------------------------------------------------------------------------------
# Augmentations (batched, in torch, on [0, 1] NCHW images)


def random_resized_crop(x: torch.Tensor, gen: torch.Generator, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3),
                        flip: bool = True) -> torch.Tensor:
    """Per-sample random crop (area fraction in ``scale``, aspect in ``ratio``) resized back to the
    input size, plus a random horizontal flip; one affine grid_sample for the whole batch."""
    b, dev = len(x), x.device
    area = torch.empty(b).uniform_(*scale, generator=gen)
    logr = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(logr)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    sx = w * (torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if flip else 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(x: torch.Tensor, gen: torch.Generator, strength: float = 0.4, p: float = 0.8,
                  p_gray: float = 0.2) -> torch.Tensor:
    """SimCLR-style brightness / contrast / saturation jitter (prob ``p``) and greyscale (``p_gray``)."""
    b, dev = len(x), x.device

    def u(lo, hi):
        return torch.empty(b, 1, 1, 1).uniform_(lo, hi, generator=gen).to(dev, x.dtype)

    apply = (torch.rand(b, 1, 1, 1, generator=gen) < p).to(dev, x.dtype)
    s = strength
    y = x * u(1 - s, 1 + s)
    m = y.mean((1, 2, 3), keepdim=True)
    y = (y - m) * u(1 - s, 1 + s) + m
    g = (0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3])
    y = (y - g) * u(1 - s, 1 + s) + g
    y = apply * y + (1 - apply) * x
    gray = (torch.rand(b, 1, 1, 1, generator=gen) < p_gray).to(dev, x.dtype)
    g = (0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]).expand_as(y)
    return (gray * g + (1 - gray) * y).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# Evaluation helpers


def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                 k: int = 20, n_classes: int | None = None, extra_y: torch.Tensor | None = None) -> dict:
    """Weighted kNN (cosine, weights exp(sim / 0.07)) top-1 accuracy on ``test_y``; with
    ``extra_y`` (N, 2, -1 = none) also the rate at which the prediction is any of the sample's labels."""
    tf = F.normalize(train_f.float(), dim=-1)
    qf = F.normalize(test_f.float(), dim=-1)
    n_classes = n_classes or int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(tf))
    sims, idx = (qf @ tf.t()).topk(k, dim=1)
    w = torch.exp(sims / 0.07)
    votes = torch.zeros(len(qf), n_classes).scatter_add_(1, train_y[idx].long(), w)
    pred = votes.argmax(1)
    out = {"knn_top1": round(float((pred == test_y).float().mean()), 4), "k": k}
    if extra_y is not None:
        out["knn_any_label"] = round(float((pred[:, None] == extra_y).any(1).float().mean()), 4)
    return out


def ridge_r2(train_x, train_t, test_x, test_t, lam: float = 1e-2) -> float:
    """R^2 on the test set of a ridge regression (features → scalar target)."""
    X = torch.cat([train_x.double(), torch.ones(len(train_x), 1, dtype=torch.double)], 1)
    A = X.t() @ X + lam * torch.eye(X.shape[1], dtype=torch.double)
    w = torch.linalg.solve(A, X.t() @ train_t.double())
    Xt = torch.cat([test_x.double(), torch.ones(len(test_x), 1, dtype=torch.double)], 1)
    pred = Xt @ w
    ss_res = float(((test_t.double() - pred) ** 2).sum())
    ss_tot = float(((test_t.double() - test_t.double().mean()) ** 2).sum())
    return round(1 - ss_res / max(ss_tot, 1e-12), 4)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) (the FID formula)."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    import warnings

    with warnings.catch_warnings():  # fewer samples than dimensions: singular, handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@torch.no_grad()
def generation_metrics(encoder, real_u8: torch.Tensor, fake01: torch.Tensor, cond: torch.Tensor, device) -> dict:
    """FID-lite: the Fréchet distance in f_V's pooled feature space between generated and real
    images (not comparable to Inception FID), and conditioning consistency: mean cosine between
    f_V(generated) and the conditioning feature, against the mean cosine of unrelated pairs."""
    enc = unwrap(encoder)
    real_pool, fake_pool, fake_f = [], [], []
    for i in range(0, len(real_u8), 128):
        real_pool.append(enc.pooled(to_unit(real_u8[i:i + 128], device)).float().cpu())
    for i in range(0, len(fake01), 128):
        x = fake01[i:i + 128].to(device)
        p = enc.pooled(x)
        fake_pool.append(p.float().cpu())
        fake_f.append(F.normalize(enc.fc(p).float(), dim=-1).cpu())
    real_pool, fake_pool, fake_f = torch.cat(real_pool), torch.cat(fake_pool), torch.cat(fake_f)
    c = F.normalize(cond.float(), dim=-1)
    cos = (fake_f * c).sum(1)
    cos_rand = (fake_f * c.roll(1, 0)).sum(1)
    # how often the generated image's feature retrieves its own condition among all conditions
    rank1 = float(((fake_f @ c.t()).argmax(1) == torch.arange(len(c))).float().mean())
    return {"fid_fv": round(frechet_distance(real_pool.numpy(), fake_pool.numpy()), 3), "n": len(fake01),
            "cond_cosine": round(float(cos.mean()), 4), "cond_cosine_unpaired": round(float(cos_rand.mean()), 4),
            "cond_retrieval_r1": round(rank1, 4)}


def save_grid(path: Path, rows: list[torch.Tensor], pad: int = 2) -> Path:
    """PNG of rows of [0, 1] NCHW images (each row a tensor (n, 3, H, W), same H, W)."""
    from PIL import Image

    n = max(len(r) for r in rows)
    h, w = rows[0].shape[-2:]
    canvas = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        arr = (r.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        for j, im in enumerate(arr):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = im
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(canvas).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# The learning curve (checkpoints: soundsight_train.checkpoints, re-exported here)


# the keys of a run's state that describe it; all others are counters that a resume restores
_RUN_DESCRIPTION = ("command", "world", "device", "config", "args")


def initial_state(counters: dict, command: str, world: int, dev, cfg, args) -> dict:
    """A fresh run's state (saved as ``state.json``): the trainer's counters (``elapsed``
    among them), then the command, world size, device, model config and arguments."""
    return {**counters, "command": command, "world": world, "device": str(dev), "config": cfg.to_dict(),
            "args": vars(args)}


def restore(ck: Path | None, modules: dict, optims: dict, dev, state: dict) -> dict | None:
    """Resume from checkpoint ``ck`` (None: a fresh run, nothing to do): modules and optimizers
    in place, the counters of ``state`` from the saved state; returns the saved state."""
    if ck is None:
        return None
    prev, _ = load_checkpoint(ck, modules, optims, dev.torch_device)
    state.update({k: prev.get(k, v) for k, v in state.items() if k not in _RUN_DESCRIPTION})
    return prev


def batch_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The RNG of a process's batches and augmentations: distinct per process, and a new
    stream after a resume (seeded by the step it resumes at)."""
    return torch.Generator().manual_seed(seed * 7919 + rank + 1000003 * step)


def _checkpoint_dir(args, run: Path) -> Path | None:
    """Where --resume looks (None without --resume or, with ``auto``, when there is nothing yet)."""
    if not args.resume:
        return None
    ck = run / "ckpt" if args.resume == "auto" else Path(args.resume)
    if not (ck / "state.json").is_file():
        if args.resume != "auto":
            raise SystemExit(f"error: no checkpoint at {ck}")
        return None
    return ck


def saved_state(args, run: Path) -> dict | None:
    """The state (counters, config) of the checkpoint a --resume will load; None for a fresh run."""
    ck = _checkpoint_dir(args, run)
    return json.loads((ck / "state.json").read_text()) if ck is not None else None


def add_cond_norm_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--cond-norm", choices=["train", "none"], default="train",
                    help="standardise the conditioning feature with the training features' mean and scale "
                         "(stored in the model's config; see scene_gen/conditioning.py) or not")


def conditioning_statistics(args, saved_config: dict | None, feats, feats_flip, log) -> dict:
    """Config values norm_cond_mean / norm_cond_scale. A run that resumes the conditioned network
    keeps its checkpoint's (none if it had none), so the condition's meaning never changes in
    the middle of training; a fresh one measures them (unless --cond-norm none)."""
    from soundsight_plugins.scene_gen.conditioning import feature_statistics

    if saved_config is not None:
        return {"norm_cond_mean": saved_config.get("norm_cond_mean"),
                "norm_cond_scale": saved_config.get("norm_cond_scale", 1.0)}
    if args.cond_norm == "none":
        return {}
    mean, scale = feature_statistics(feats, feats_flip)
    log(f"conditioning standardised: training features' mean (norm {float(torch.tensor(mean).norm()):.3f}) "
        f"subtracted, scaled by {scale:.2f}")
    return {"norm_cond_mean": mean, "norm_cond_scale": scale}


def resume_state(args, run: Path, config: dict, log) -> Path | None:
    """The checkpoint folder to resume from (None for a fresh run); refuses a different config."""
    ck = _checkpoint_dir(args, run)
    if ck is None:
        return None
    saved = json.loads((ck / "state.json").read_text()).get("config", {})
    diff = {k: (saved.get(k), v) for k, v in config.items()
            if k in saved and json.dumps(saved[k]) != json.dumps(v) and not k.startswith(("norm_", "latent_scale", "latent_shift"))}
    if diff:
        raise SystemExit(f"error: checkpoint {ck} was trained with a different config (saved vs now: {diff}); "
                         "use another --run-dir")
    log(f"resuming from {ck}")
    return ck


class Curve:
    """Append-only JSON lines (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.f = open(path, "a") if enabled else None

    def write(self, rec: dict) -> None:
        if self.f is not None:
            self.f.write(json.dumps(rec) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


class Meter:
    """Running means of scalar stats between log lines, with step timing."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.acc, self.n, self.t0 = {}, 0, time.time()

    def add(self, stats: dict) -> None:
        for k, v in stats.items():
            self.acc[k] = self.acc.get(k, 0.0) + float(v)
        self.n += 1

    def finite(self) -> bool:
        return all(math.isfinite(v) for v in self.acc.values())

    def record(self, step: int, **extra) -> dict:
        dt = time.time() - self.t0
        rec = {"step": step, **{k: round(v / max(self.n, 1), 6) for k, v in self.acc.items()},
               "sec_per_step": round(dt / max(self.n, 1), 4), **extra}
        self.reset()
        return rec


def ema_update(ema, model, decay: float) -> None:
    """ema ← decay·ema + (1-decay)·model for parameters; buffers (BN stats, SN vectors) copied,
    so an EMA with batch norm needs its own statistics before use (scene_gan.standing_stats)."""
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters()):
            pe.lerp_(p.detach(), 1.0 - decay)
        for be, b in zip(ema.buffers(), model.buffers()):
            be.copy_(b)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# --------------------------------------------------------------------------------------------
# Command line


def command_line(module: str, argv) -> str:
    return f"python -m soundsight_train.{module} " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                           else sys.argv[1:]))


def make_parser(module: str, doc: str, default_out: str, image_encoder: bool = False) -> argparse.ArgumentParser:
    """The entrypoint's parser (described by the first line of ``doc``) with the options all
    trainers share, and ``--image-encoder`` for the stages that use the frozen f_V."""
    ap = argparse.ArgumentParser(prog=f"python -m soundsight_train.{module}", description=doc.split("\n")[0])
    common_args(ap, default_out)
    if image_encoder:
        ap.add_argument("--image-encoder", default="scene-image-encoder-64", help="f_V: registry name or folder")
    return ap


def parse_with_tiny(ap: argparse.ArgumentParser, argv, tiny: dict):
    """Parse; with ``--tiny`` the values ``tiny`` for the options not given (see apply_tiny)."""
    args = ap.parse_args(argv)
    if args.tiny:
        apply_tiny(args, argv, tiny)
    return args


def common_args(ap: argparse.ArgumentParser, default_out: str) -> None:
    ap.add_argument("--data", default=None, help="scenes dataset folder or data root (default $SOUNDSIGHT_DATA "
                                                 "or ~/.cache/soundsight/data, scenes-5s-s0)")
    ap.add_argument("--out", default=f"models/{default_out}", help="registry model folder to write")
    ap.add_argument("--name", default=None, help="model name in the card (default: the folder name)")
    ap.add_argument("--run-dir", dest="run", default=None, help="checkpoints and curve (default runs/<out name>)")
    ap.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="resume from a checkpoint folder (default <run>/ckpt; a fresh start if none)")
    ap.add_argument("--tiny", action="store_true", help="tiny model, few steps, few samples (tests, smoke runs)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None, help="auto|cpu|cuda[:i]|mps (torchrun: one GPU per process)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop (checkpoint, evaluate, write the model) after this much training time; 0: no limit")


def apply_tiny(args, argv, values: dict) -> None:
    """``--tiny``: set these arguments unless they were given on the command line."""
    given = {a.split("=", 1)[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
    for key, value in values.items():
        if "--" + key.replace("_", "-") not in given:
            setattr(args, key, value)


def start(args, module: str, argv):
    """Parse-time setup shared by the entrypoints: device, threads, run folder, logging."""
    rank, world, local, dev = setup_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    main_proc = rank == 0
    out = Path(args.out)
    run = Path(args.run) if args.run else Path("runs") / out.name
    if main_proc:
        run.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: print(*a, flush=True)) if main_proc else (lambda *a: None)
    return rank, world, dev, main_proc, out, run, log, command_line(module, argv)
