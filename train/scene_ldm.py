"""Stage 2 (latent-diffusion back end) of scene-gen: AutoencoderKL, then a conditional UNet on its latents.

    python -m soundsight_train.scene_ldm --image-encoder models/scene-image-encoder-64 [--data DIR] \
        [--size 64] [--vae-steps 1000] [--unet-steps 3000] [--out models/scene-ldm-64] [--resume] [--threads 2]
    torchrun --nproc_per_node 4 -m soundsight_train.scene_ldm --preset paper ...   # DDP
    python -m soundsight_train.scene_ldm --tiny --data DIR --image-encoder FV_FOLDER --out /tmp/ldm

Phase 1 (``--vae-steps``): the diffusers ``AutoencoderKL`` of ``LDMConfig`` learns to reconstruct
the scene images (L1 + MSE + ``--kl-weight`` x KL, random mirror images). Then every training
image and its mirror image are encoded once (posterior mean); ``--latent-norm channel`` (the
default) puts their per-channel mean (``latent_shift``) and ``latent_scale`` = 1 / std of the
centred latents into the config (``global``: the scale alone, as models before it had; their
samples came out tinted, the latent mean pulled toward 0). Phase 2 (``--unet-steps``): the ``UNet2DConditionModel``
learns noise prediction on the scaled latents, conditioned by cross-attention on f_V(image)
(the frozen image encoder of stage 1; mirrored features for mirrored latents), the condition
dropped with probability ``cond_drop`` for classifier-free guidance; AdamW; an EMA of the
weights (``--ema``) is what is written. ``--vae-steps 0`` with ``--resume`` skips to phase 2;
``--init-from MODEL --vae-steps 0`` starts phase 2 from a trained LDM's weights (its autoencoder
kept, the latents re-normalised).

Evaluation at the end: VAE reconstruction PSNR on val, then DDIM sampling (``--sample-steps``,
guidance from the config) for ``--eval-n`` val conditions: FID-lite in f_V space and
conditioning consistency (see scene_common.generation_metrics); ``<run>/samples.png``.
"""

from __future__ import annotations

import copy
import math
import sys
import time

import torch
import torch.nn as nn

from soundsight_plugins.scene_gen.encoders import count_parameters
from soundsight_plugins.scene_gen.ldm import ARCHITECTURE, TASK, LDMConfig, SceneLDM
from soundsight_train import scene_common as sc
from soundsight_train.scene_loop import TrainLoop


class _Loss(nn.Module):
    """DDP entry point: forward(kind, ...) → the loss dict of one phase."""

    def __init__(self, ldm: SceneLDM):
        super().__init__()
        self.ldm = ldm

    def forward(self, kind: str, *args, **kwargs):
        return self.ldm.vae_loss(*args, **kwargs) if kind == "vae" else self.ldm.unet_loss(*args, **kwargs)


def parse(argv=None):
    ap = sc.make_parser("scene_ldm", __doc__, "scene-ldm-64", image_encoder=True)
    ap.add_argument("--size", type=int, choices=[32, 64, 128], default=64)
    ap.add_argument("--preset", choices=["cpu", "paper", "tiny"], default="cpu")
    ap.add_argument("--vae-steps", type=int, default=1000)
    ap.add_argument("--vae-batch", type=int, default=32)
    ap.add_argument("--vae-lr", type=float, default=5e-4)
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument("--unet-steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64, help="UNet batch per process")
    ap.add_argument("--lr", type=float, default=3e-4, help="UNet learning rate (AdamW)")
    ap.add_argument("--wd", type=float, default=1e-2)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--unet-channels", default=None,
                    help="UNet widths per level, comma-separated, e.g. 32,64,64 (default: the preset's)")
    sc.add_cond_norm_arg(ap)
    ap.add_argument("--guidance", type=float, default=None, help="classifier-free guidance in the config (default 2)")
    ap.add_argument("--latent-norm", choices=["channel", "global"], default="channel",
                    help="channel: remove the latents' per-channel mean, then scale (default); global: scale only")
    ap.add_argument("--init-from", default=None, metavar="MODEL",
                    help="start from a trained LDM (registry name or folder) of the same architecture; with "
                         "--vae-steps 0 its autoencoder is kept and only the UNet trains")
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--eval-n", type=int, default=200)
    return sc.parse_with_tiny(ap, argv, dict(preset="tiny", size=32, vae_steps=2, unet_steps=3, vae_batch=4, batch=8,
                                             warmup=1, sample_steps=3, eval_n=8, log_every=1))


@torch.no_grad()
def encode_latents(ldm: SceneLDM, images_u8, dev, flip=False, batch: int = 128) -> torch.Tensor:
    out = []
    for i in range(0, len(images_u8), batch):
        x = sc.to_unit(images_u8[i:i + batch], dev.torch_device) * 2 - 1
        if flip:
            x = x.flip(-1)
        with dev.autocast():
            out.append(ldm.vae.encode(x).latent_dist.mode().float().cpu())
    return torch.cat(out, 0)


@torch.no_grad()
def recon_psnr(ldm: SceneLDM, images_u8, dev) -> float:
    x = sc.to_unit(images_u8, dev.torch_device) * 2 - 1
    with dev.autocast():
        rec = ldm.vae.decode(ldm.vae.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
    mse = ((rec - x) / 2).square().mean((1, 2, 3)).clamp_min(1e-10)
    return round(float((10 * torch.log10(1 / mse)).mean()), 3)


@torch.no_grad()
def evaluate(ldm: SceneLDM, encoder, val_u8, val_f, train_u8, dev, n: int, steps: int, seed: int = 0):
    was = ldm.training
    ldm.eval()
    n = min(n, len(val_f))
    gen = torch.Generator().manual_seed(seed)
    fakes = []
    t0 = time.time()
    for i in range(0, n, 32):
        with dev.autocast():
            fakes.append(ldm.sample(val_f[i:min(i + 32, n)].to(dev.torch_device), steps, gen).float().cpu())
    sec = (time.time() - t0) / n
    fake = torch.cat(fakes, 0)
    m = sc.generation_metrics(encoder, val_u8[:n], fake, val_f[:n], dev.torch_device)
    m["fid_fv_real_train_vs_val"] = sc.generation_metrics(encoder, val_u8[:n], train_u8[:n].float() / 255, val_f[:n],
                                                          dev.torch_device)["fid_fv"]
    m.update(sample_steps=steps, guidance=ldm.cfg.guidance, sec_per_image_batched=round(sec, 4),
             vae_psnr=recon_psnr(ldm, val_u8[:min(n, 64)], dev))
    ldm.train(was)
    return m


@torch.no_grad()
def sample_grid(ldm: SceneLDM, val_u8, val_f, path, steps: int, seed: int = 0, rows: int = 8, per_row: int = 6):
    was = ldm.training
    ldm.eval()
    gen = torch.Generator().manual_seed(seed)
    rows = min(rows, len(val_f))
    feats = val_f[:rows].repeat_interleave(per_row, 0)
    imgs = ldm.sample(feats.to(next(ldm.parameters()).device), steps, gen).float().cpu()
    x = sc.to_unit(val_u8[:rows], next(ldm.parameters()).device) * 2 - 1
    rec = ((ldm.vae.decode(ldm.vae.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1) + 1) / 2).cpu()
    out = [torch.cat([val_u8[i:i + 1].float() / 255, rec[i:i + 1], imgs[i * per_row:(i + 1) * per_row]], 0)
           for i in range(rows)]
    ldm.train(was)
    return sc.save_grid(path, out)


def write_registry(out, ldm, cfg, args, state, metrics, data, enc_folder):
    import diffusers

    training = {"command": state["command"], "vae_steps": state["vae_step"], "unet_steps": state["unet_step"],
                "vae_batch": args.vae_batch, "unet_batch": args.batch, "world_size": state["world"],
                "seconds": round(state["elapsed"], 1), "device": state["device"],
                "vae": {"loss": f"L1 + MSE + {args.kl_weight} KL", "optimizer": "AdamW", "lr": args.vae_lr},
                "unet": {"loss": f"{cfg.prediction_type} MSE, condition dropped with p={cfg.cond_drop}",
                         "optimizer": "AdamW", "lr": args.lr, "weight_decay": args.wd, "ema": args.ema},
                "diffusers_version": diffusers.__version__, "curve": "curve.jsonl in the run folder; samples.png"}
    if args.init_from:  # the steps above continue that model's (its card has its own history)
        from soundsight.registry import resolve

        training["init_from"] = sc.model_ref(resolve(args.init_from))
    sc.save_registry(out, args, ldm, cfg, task=TASK, architecture=ARCHITECTURE, training=training, metrics=metrics,
                     data=data,
                     extra={"conditioning": {"image_encoder": sc.model_ref(enc_folder)},
                            "diffusers": {"AutoencoderKL": cfg.vae_kwargs(), "UNet2DConditionModel": cfg.unet_kwargs(),
                                          "DDIMScheduler": cfg.scheduler_kwargs()}},
                     description=f"scene-gen latent-diffusion back end, {cfg.image_size} px: AutoencoderKL "
                                 f"({cfg.latent_size}x{cfg.latent_size}x{cfg.latent_channels} latents) + "
                                 f"UNet2DConditionModel cross-attending to the features of {enc_folder.name}; "
                                 "DDIM sampling.")


def main(argv=None) -> int:
    args = parse(argv)
    rank, world, dev, main_proc, out, run, log, command = sc.start(args, "scene_ldm", argv)
    from soundsight_train import scenes

    folder, (train, val) = sc.scene_splits(args.data, "train", "val")
    train_u8, val_u8 = sc.images_nchw(train, args.size), sc.images_nchw(val, args.size)
    encoder, enc_folder = sc.load_image_encoder(args.image_encoder, dev)
    feats, feats_flip, val_f = sc.conditioning_features(encoder, train_u8, val_u8, dev, log)

    overrides = {"guidance": args.guidance} if args.guidance is not None else {}
    if args.unet_channels:
        overrides["unet_channels"] = tuple(int(c) for c in args.unet_channels.split(","))
    saved = sc.saved_state(args, run)
    # only the UNet reads the condition: a run stopped in the autoencoder phase may still set it up
    keep = saved["config"] if saved is not None and saved.get("phase") != "vae" else None
    overrides.update(sc.conditioning_statistics(args, keep, feats, feats_flip, log))
    cfg = LDMConfig.for_size(args.size, args.preset, feature_dim=encoder.cfg.feature_dim, **overrides)
    torch.manual_seed(args.seed)
    ldm = SceneLDM(cfg).to(dev.torch_device)
    if args.init_from and saved is None:  # a resume continues from its own checkpoint
        from soundsight.registry import resolve

        src = resolve(args.init_from)
        try:
            ldm.load_state_dict(src.tensors("model.safetensors"))
        except RuntimeError as e:
            raise SystemExit(f"error: --init-from {src.name}: not the architecture of this run ({e})") from None
        log(f"initialised from {src.name} (trained {src.card.get('training', {}).get('unet_steps')} UNet steps)")
    ema = copy.deepcopy(ldm).eval().requires_grad_(False) if args.ema > 0 else None
    if ema is not None:
        ema.cfg = cfg  # one config: the latent statistics measured below (or restored) hold for both
    vae_params = list(ldm.vae.parameters())
    unet_params = [p for n, p in ldm.named_parameters() if not n.startswith("vae.")]
    opt_vae = torch.optim.AdamW(vae_params, lr=args.vae_lr, weight_decay=0.0)
    opt_unet = torch.optim.AdamW(unet_params, lr=args.lr, weight_decay=args.wd)
    scaler = sc.make_scaler(dev)
    state = sc.initial_state({"phase": "vae", "vae_step": 0, "unet_step": 0, "elapsed": 0.0}, command, world, dev,
                             cfg, args)
    modules = {"model": ldm, "ema": ema}
    optims = {"opt_vae": opt_vae, "opt_unet": opt_unet, "scaler": scaler}
    prev = sc.restore(sc.resume_state(args, run, cfg.to_dict(), log), modules, optims, dev, state)
    if prev is not None:
        cfg.latent_scale = prev["config"].get("latent_scale", 1.0)
        cfg.latent_shift = prev["config"].get("latent_shift")
        state["config"] = cfg.to_dict()  # the config a checkpoint saves follows latent_scale
    gen = sc.batch_generator(args.seed, rank, state["vae_step"] + state["unet_step"])

    log(f"data: {folder} ({len(train_u8)} train / {len(val_u8)} val images at {args.size} px)")
    log(f"model: VAE {count_parameters(ldm.vae) / 1e6:.2f}M params ({cfg.latent_size}x{cfg.latent_size}x"
        f"{cfg.latent_channels} latents), UNet {count_parameters(ldm.unet) / 1e6:.2f}M, condition "
        f"{cfg.cond_tokens} token(s) x {cfg.cross_dim} from {enc_folder.name}; device {dev}; world {world}")
    log(f"run folder: {run}; registry folder: {out}")

    phase_opt = {"vae": opt_vae, "unet": opt_unet}

    def fields(step, elapsed):
        return dict(phase=state["phase"], lr=round(phase_opt[state["phase"]].param_groups[0]["lr"], 7), elapsed=elapsed)

    def line(rec, total):  # the loss parts (phase 1: l1, mse, kl) are the record's other running means
        parts = "  ".join(f"{k} {rec[k]:.4f}" for k in rec
                          if k not in ("step", "loss", "sec_per_step", "phase", "lr", "elapsed"))
        return (f"{rec['phase']} step {rec['step']}/{total}  loss {rec['loss']:.4f}  {parts}  "
                f"{rec['sec_per_step']:.2f}s/step  [{rec['elapsed'] / 60:.1f} min]")

    loop = TrainLoop(args, run, state, modules, optims, main_proc, log, fields, line)
    stopped = False

    def tick(phase: str, step: int, total: int, stats: dict) -> bool:
        """Bookkeeping after a step; True when training must stop (time budget)."""
        if not loop.add(stats):
            raise SystemExit(f"error: non-finite loss at {phase} step {step}")
        out_of_time = loop.step_done(step, total, **{f"{phase}_step": step, "phase": phase})
        if out_of_time:
            loop.budget_spent(f"{phase} step {step}")
        return out_of_time

    # ---- phase 1: autoencoder ----------------------------------------------------------------
    if state["phase"] == "vae" and state["vae_step"] < args.vae_steps:
        ldm.requires_grad_(False)
        ldm.vae.requires_grad_(True)
        net = sc.wrap_ddp(_Loss(ldm), dev, world)
        ldm.train()
        step = state["vae_step"]
        while step < args.vae_steps and not stopped:
            sc.set_lr(opt_vae, sc.lr_at(step, args.vae_steps, args.vae_lr, min(args.warmup, args.vae_steps)))
            idx = sc.take(len(train_u8), args.vae_batch, gen)
            x = sc.to_unit(train_u8[idx], dev.torch_device) * 2 - 1
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(dev.torch_device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            with dev.autocast():
                res = net("vae", x, kl_weight=args.kl_weight)
            sc.backward_step(res["loss"], opt_vae, scaler)
            step += 1
            stopped = tick("vae", step, args.vae_steps, {k: v.detach() for k, v in res.items()})
        del net
        if stopped:
            log(f"stopped during phase 1 (autoencoder) at step {step}; continue with --resume")
            loop.close()
            sc.cleanup_distributed(world)
            return 0

    # ---- latents ------------------------------------------------------------------------------
    ldm.eval()
    with loop.off_the_clock() as t0:  # one pass each; not counted as training time
        lat = encode_latents(ldm, train_u8, dev)
        lat_flip = encode_latents(ldm, train_u8, dev, flip=True)
        if state["phase"] == "vae":
            both = torch.cat([lat, lat_flip])
            if args.latent_norm == "channel":
                mean = both.mean(dim=(0, 2, 3))
                cfg.latent_shift = tuple(round(float(v), 6) for v in mean)
                both = both - mean[None, :, None, None]
            cfg.latent_scale = float(1.0 / both.std())
            state["phase"] = "unet"
            if ema is not None:
                sc.ema_update(ema, ldm, 0.0)
        state["config"] = cfg.to_dict()
        lat, lat_flip = ldm.normalize(lat), ldm.normalize(lat_flip)
        log(f"latents: {tuple(lat.shape)} (+ mirrored) in {time.time() - t0:.0f}s; "
            f"latent_scale {cfg.latent_scale:.4f}, latent_shift {cfg.latent_shift}")

    # ---- phase 2: UNet -----------------------------------------------------------------------
    if not stopped:
        ldm.requires_grad_(False)
        for p in unet_params:
            p.requires_grad_(True)
        net = sc.wrap_ddp(_Loss(ldm), dev, world)
        sched = ldm.scheduler()
        ldm.train()
        ldm.vae.eval()
        loop.meter.reset()
        step = state["unet_step"]
        while step < args.unet_steps and not stopped:
            sc.set_lr(opt_unet, sc.lr_at(step, args.unet_steps, args.lr, args.warmup))
            idx = sc.take(len(lat), args.batch, gen)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            z = torch.where(flip[:, None, None, None], lat_flip[idx], lat[idx]).to(dev.torch_device)
            h = torch.where(flip[:, None], feats_flip[idx], feats[idx]).to(dev.torch_device)
            with dev.autocast():
                res = net("unet", z, h, generator=gen, scheduler=sched)
            sc.backward_step(res["loss"], opt_unet, scaler, unet_params, clip=1.0)
            step += 1
            if ema is not None:
                sc.ema_update(ema, ldm, args.ema if step > 100 else 0.0)
            stopped = tick("unet", step, args.unet_steps, {"loss": res["loss"].detach()})
        del net

    if main_proc:
        final = ema if ema is not None else ldm
        log("final evaluation ...")
        m = evaluate(final, encoder, val_u8, val_f, train_u8, dev, args.eval_n, args.sample_steps)
        loop.curve.write({"step": state["unet_step"], "val_final": m})
        grid = sample_grid(final, val_u8, val_f, run / "samples.png", args.sample_steps)
        write_registry(out, final, cfg, args, state, {"val": m}, scenes.data_card(folder), enc_folder)
        log(f"val ({m['n']} conditions, DDIM {m['sample_steps']} steps, guidance {m['guidance']}): FID-lite "
            f"{m['fid_fv']} (real train vs val {m['fid_fv_real_train_vs_val']}); cond cosine {m['cond_cosine']} "
            f"(unpaired {m['cond_cosine_unpaired']}); VAE PSNR {m['vae_psnr']} dB")
        log(f"samples: {grid}")
        log(f"wrote registry model {out}")
    loop.close()
    sc.cleanup_distributed(world)
    return 0 if not math.isnan(cfg.latent_scale) else 1


if __name__ == "__main__":
    sys.exit(main())
