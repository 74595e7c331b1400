"""Stage 2 (GAN back end) of scene-gen: the IC-GAN-style generator G(z_N, z_V) on the scene images.

    python -m soundsight_train.scene_gan --image-encoder models/scene-image-encoder-64 [--data DIR] \
        [--size 64] [--steps 4000] [--batch 32] [--out models/scene-gan-64] [--resume] [--threads 2]
    torchrun --nproc_per_node 4 -m soundsight_train.scene_gan --preset paper --size 128 ...   # DDP
    python -m soundsight_train.scene_gan --tiny --data DIR --image-encoder FV_FOLDER --out /tmp/g

Pairs (image, z_V = f_V(image)) with the frozen image encoder of stage 1 (features of each
image and of its mirror image are computed once; a random half of each batch is mirrored).
With ``--neighbours K`` > 1 the real image shown to D for a condition z_V(i) is drawn from the
K nearest training images of i in feature space (IC-GAN's neighbourhood); K = 1 is the image
itself. Hinge loss, Adam with betas (0, 0.999), G lr 1e-4 / D lr 4e-4 (two time-scale),
``--d-steps`` D updates per G update, DiffAugment (colour, translation) on real and fake
inputs of D (small data), exponential moving average of G's weights (``--ema``; the EMA copy
is the model written to the registry). ``--recon W`` adds W times the L1 distance between
G(z, z_V(i)) and image i, both average-pooled ``--recon-pool`` times (a coarse layout term, as
pix2pix's L1; 0 = off, the IC-GAN loss alone). ``--feat W`` adds W times (1 - cosine) between
f_V(G(z, z_V)) and z_V, back-propagated through the frozen f_V: a feature-consistency term that
makes G draw what its condition encodes (0 = off).

Evaluation at the end (and every ``--eval-every`` steps): one sample per val condition, FID-lite
(Fréchet distance in f_V's pooled feature space to the real val images; the train→val distance
of real images is the floor) and conditioning consistency (cosine between f_V(G(z, z_V)) and
z_V, and how often a sample's feature retrieves its own condition among all val conditions);
``<run>/samples.png``: for 8 val images, the image then samples from its feature.
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F

from soundsight_plugins.scene_gen.gan import (
    ARCHITECTURE,
    TASK,
    Discriminator,
    GANConfig,
    Generator,
    count_parameters,
    diff_augment,
)
from soundsight_plugins.scene_gen.losses import hinge_d, hinge_g
from soundsight_train import scene_common as sc
from soundsight_train.scene_loop import TrainLoop
from soundsight_train.schedules import check_decay_from, decay_text, linear_decay


def parse(argv=None):
    ap = sc.make_parser("scene_gan", __doc__, "scene-gan-64", image_encoder=True)
    ap.add_argument("--size", type=int, choices=[32, 64, 128], default=64)
    ap.add_argument("--preset", choices=["cpu", "paper", "tiny"], default="cpu")
    ap.add_argument("--ch", type=int, default=None, help="G width (default: the preset's, 16 on cpu)")
    ap.add_argument("--d-ch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=4000, help="G updates")
    ap.add_argument("--batch", type=int, default=32, help="per process")
    ap.add_argument("--lr-g", type=float, default=1e-4)
    ap.add_argument("--lr-d", type=float, default=4e-4)
    ap.add_argument("--decay-from", type=int, default=0,
                    help="from this step, both learning rates fall linearly to 0 at --steps (0: constant)")
    ap.add_argument("--beta1", type=float, default=0.0)
    ap.add_argument("--beta2", type=float, default=0.999)
    ap.add_argument("--d-steps", type=int, default=1)
    ap.add_argument("--neighbours", type=int, default=1, help="IC-GAN neighbourhood size K (1: the image itself)")
    ap.add_argument("--diffaug", default="color,translation", help="DiffAugment policy for D's inputs ('' = off)")
    ap.add_argument("--recon", type=float, default=0.0,
                    help="weight of an L1 term between G(z, z_V(i)) and image i, both average-pooled by "
                         "--recon-pool (0: off, the pure IC-GAN loss)")
    ap.add_argument("--recon-pool", type=int, default=4, help="pooling factor of the --recon term")
    ap.add_argument("--feat", type=float, default=0.0,
                    help="weight of a feature-consistency term 1 - cos(f_V(G(z, z_V)), z_V) through the frozen "
                         "f_V (0: off)")
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of G's weights (0: no EMA)")
    ap.add_argument("--ema-start", type=int, default=500, help="copy G into the EMA until this step")
    ap.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                    help="channels-last memory format (auto: on for CPU, where it is faster)")
    sc.add_cond_norm_arg(ap)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--eval-n", type=int, default=500, help="val conditions in the evaluation")
    return sc.parse_with_tiny(ap, argv, dict(preset="tiny", size=32, steps=3, batch=4, eval_every=2, eval_n=8,
                                             ema_start=1, log_every=1))


def knn_indices(feats: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """(N, k) indices of each feature's k nearest (cosine) neighbours, itself included."""
    f = F.normalize(feats.float(), dim=-1)
    out = [(f[i:i + chunk] @ f.t()).topk(k, dim=1).indices for i in range(0, len(f), chunk)]
    return torch.cat(out, 0)


@torch.no_grad()
def standing_stats(G, feats: torch.Tensor, dev, batches: int = 40, batch: int = 32, seed: int = 0) -> None:
    """BigGAN's standing statistics: G's batch-norm running statistics (and spectral-norm power
    iterates) recomputed for its current weights, from ``batches`` batches of training conditions.

    The EMA copy's weights average the last ~1 / (1 - decay) steps, so the live G's running
    statistics it inherits do not fit them: on runs/gan-std (1662 steps) the EMA with inherited
    statistics scored val FID-lite 23.4, with standing statistics 2.5, the live G 1.6.
    """
    g = sc.unwrap(G)
    was = g.training
    bns = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    g.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        idx = torch.randint(len(feats), (batch,), generator=gen)
        with dev.autocast():
            g(g.sample_z(batch, gen).to(dev.torch_device), feats[idx].to(dev.torch_device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    g.train(was)


@torch.no_grad()
def evaluate(G, encoder, val_u8, val_f, train_u8, dev, n: int, seed: int = 0) -> tuple[dict, torch.Tensor]:
    g = sc.unwrap(G)
    was = g.training
    g.eval()
    n = min(n, len(val_f))
    gen = torch.Generator().manual_seed(seed)
    fakes = []
    for i in range(0, n, 64):
        with dev.autocast():
            fakes.append(g.generate(val_f[i:min(i + 64, n)], gen).float().cpu())
    fake = torch.cat(fakes, 0)
    m = sc.generation_metrics(encoder, val_u8[:n], fake, val_f[:n], dev.torch_device)
    real_ref = sc.generation_metrics(encoder, val_u8[:n], train_u8[:n].float() / 255, val_f[:n], dev.torch_device)
    m["fid_fv_real_train_vs_val"] = real_ref["fid_fv"]
    g.train(was)
    return m, fake


@torch.no_grad()
def sample_grid(G, val_u8, val_f, path, seed: int = 0, rows: int = 8, per_row: int = 6):
    g = sc.unwrap(G)
    was = g.training
    g.eval()
    gen = torch.Generator().manual_seed(seed)
    rows = min(rows, len(val_f))
    out = []
    for i in range(rows):
        f = val_f[i:i + 1].expand(per_row, -1)
        out.append(torch.cat([val_u8[i:i + 1].float() / 255, g.generate(f, gen).float().cpu()], 0))
    g.train(was)
    return sc.save_grid(path, out)


def write_registry(out, G, cfg, args, state, metrics, data, enc_folder):
    training = {"command": state["command"], "steps": state["step"], "batch": args.batch,
                "world_size": state["world"], "seconds": round(state["elapsed"], 1), "device": state["device"],
                "loss": "hinge", "optimizer": {"type": "Adam", "lr_g": args.lr_g, "lr_d": args.lr_d,
                                               "betas": [args.beta1, args.beta2], "d_steps": args.d_steps,
                                               "schedule": decay_text(args.decay_from, args.steps)},
                "ema": args.ema, "weights": "EMA of G, standing batch-norm statistics" if args.ema > 0 else "G", "neighbours": args.neighbours,
                "diffaugment": args.diffaug,
                "recon": {"weight": args.recon, "pool": args.recon_pool, "loss": "L1 of average-pooled images"}
                if args.recon > 0 else None,
                "feature_consistency": {"weight": args.feat, "loss": "1 - cos(f_V(G(z, z_V)), z_V), f_V frozen"}
                if args.feat > 0 else None, "curve": "curve.jsonl in the run folder; samples.png"}
    sc.save_registry(out, args, G, cfg, task=TASK, architecture=ARCHITECTURE, training=training, metrics=metrics,
                     data=data, extra={"conditioning": {"image_encoder": sc.model_ref(enc_folder)}},
                     description=f"scene-gen GAN back end: IC-GAN-style generator G(z_N, z_V), {cfg.image_size} px, "
                                 f"conditioned on the unit-norm features of {enc_folder.name}.")


def main(argv=None) -> int:
    args = parse(argv)
    check_decay_from(args.decay_from, args.steps)
    rank, world, dev, main_proc, out, run, log, command = sc.start(args, "scene_gan", argv)
    from soundsight_train import scenes

    folder, (train, val) = sc.scene_splits(args.data, "train", "val")
    train_u8, val_u8 = sc.images_nchw(train, args.size), sc.images_nchw(val, args.size)
    encoder, enc_folder = sc.load_image_encoder(args.image_encoder, dev)
    encoder.eval()  # frozen, BN in inference mode: --feat back-propagates through it
    feats, feats_flip, val_f = sc.conditioning_features(encoder, train_u8, val_u8, dev, log)
    nbrs = knn_indices(feats, args.neighbours) if args.neighbours > 1 else None

    overrides = {k: v for k, v in {"ch": args.ch, "d_ch": args.d_ch}.items() if v}
    saved = sc.saved_state(args, run)
    overrides.update(sc.conditioning_statistics(args, saved and saved["config"], feats, feats_flip, log))
    cfg = GANConfig.for_size(args.size, args.preset, feature_dim=encoder.cfg.feature_dim, **overrides)
    cl = args.channels_last == "on" or (args.channels_last == "auto" and dev.type == "cpu")
    mf = torch.channels_last if cl else torch.contiguous_format
    torch.manual_seed(args.seed)
    G = Generator(cfg).to(dev.torch_device, memory_format=mf)
    D = Discriminator(cfg).to(dev.torch_device, memory_format=mf)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if args.ema > 0 else None
    betas = (float(args.beta1), float(args.beta2))
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=betas)
    scaler = sc.make_scaler(dev)
    state = sc.initial_state({"step": 0, "elapsed": 0.0}, command, world, dev, cfg, args)
    modules = {"G": G, "D": D, "G_ema": G_ema}
    optims = {"opt_g": opt_g, "opt_d": opt_d, "scaler": scaler}
    sc.restore(sc.resume_state(args, run, cfg.to_dict(), log), modules, optims, dev, state)
    Gd, Dd = sc.wrap_ddp(G, dev, world), sc.wrap_ddp(D, dev, world)
    gen = sc.batch_generator(args.seed, rank, state["step"])

    log(f"data: {folder} ({len(train_u8)} train / {len(val_u8)} val images at {args.size} px)")
    log(f"model: G {count_parameters(G) / 1e6:.2f}M params, D {count_parameters(D) / 1e6:.2f}M; z {cfg.z_dim}; "
        f"condition {enc_folder.name} (D={cfg.feature_dim}); device {dev}; world {world}; batch {args.batch}/process"
        f"{'; channels-last' if cl else ''}")
    log(f"run folder: {run}; registry folder: {out}")

    def batch():
        idx = sc.take(len(train_u8), args.batch, gen)
        flip = torch.rand(args.batch, generator=gen) < 0.5
        h = torch.where(flip[:, None], feats_flip[idx], feats[idx])
        src = idx if nbrs is None else nbrs[idx, torch.randint(args.neighbours, (args.batch,), generator=gen)]
        flip4 = flip.to(dev.torch_device)[:, None, None, None]

        def load(i):
            x = sc.to_unit(train_u8[i], dev.torch_device) * 2 - 1
            return torch.where(flip4, x.flip(-1), x).contiguous(memory_format=mf)

        x = load(src)
        return x, h.to(dev.torch_device), (x if nbrs is None else load(idx))

    def z_batch():
        return torch.randn(args.batch, cfg.z_dim, generator=gen).to(dev.torch_device)

    def aug(x):
        return diff_augment(x, args.diffaug, gen)

    def fields(step, elapsed):
        return dict(elapsed=elapsed, epoch=round(step * args.batch * (args.d_steps + 1) * world / len(train_u8), 3))

    def line(rec, total):
        return (f"step {rec['step']}/{total}  D {rec['loss_d']:.3f}  G {rec['loss_g']:.3f}  D(x) {rec['d_real']:.2f}  "
                f"D(G) {rec['d_fake']:.2f}  {rec['sec_per_step']:.2f}s/step  [{rec['elapsed'] / 60:.1f} min]")

    loop = TrainLoop(args, run, state, modules, optims, main_proc, log, fields, line)

    def train_step(step):
        f = linear_decay(step, args.steps, args.decay_from)
        sc.set_lr(opt_g, args.lr_g * f)
        sc.set_lr(opt_d, args.lr_d * f)
        for _ in range(args.d_steps):
            x, h, _ = batch()
            with dev.autocast():
                with torch.no_grad():
                    fake = Gd(z_batch(), h)
                logits = Dd(torch.cat([aug(x), aug(fake)], 0), torch.cat([h, h], 0))
                loss_d = hinge_d(logits[:len(x)], logits[len(x):])
            sc.backward_step(loss_d, opt_d, scaler)
        _, h, target = batch()
        d_raw = sc.unwrap(Dd)  # D frozen for G's step; no DDP sync needed through it
        d_raw.requires_grad_(False)
        with dev.autocast():
            fake = Gd(z_batch(), h)
            d_fake = d_raw(aug(fake), h)
            loss_g = hinge_g(d_fake)
            if args.recon > 0:
                # the adversarial loss alone takes far more steps than a CPU run has before G
                # heeds its condition (cond cosine 0.395 vs 0.385 unpaired after 1060 steps); the
                # coarse L1 to the conditioning image teaches the layout first, D the detail
                loss_recon = F.l1_loss(F.avg_pool2d(fake.float(), args.recon_pool),
                                       F.avg_pool2d(target.float(), args.recon_pool))
                loss_g = loss_g + args.recon * loss_recon
            if args.feat > 0:
                loss_feat = 1 - (F.normalize(encoder((fake.float() + 1) / 2).float(), dim=-1) * h).sum(1).mean()
                loss_g = loss_g + args.feat * loss_feat
        sc.backward_step(loss_g, opt_g, scaler)
        d_raw.requires_grad_(True)
        if G_ema is not None:  # step + 1: the step this call completes
            sc.ema_update(G_ema, G, args.ema if step + 1 > args.ema_start else 0.0)
        extra = {"recon": loss_recon.detach()} if args.recon > 0 else {}
        if args.feat > 0:
            extra["feat"] = loss_feat.detach()
        return {**extra, "loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                "d_real": logits[:len(x)].detach().float().mean(), "d_fake": d_fake.detach().float().mean()}

    def sampler():
        """The G that is evaluated and written: the EMA, with its own batch-norm statistics."""
        if G_ema is None:
            return G
        standing_stats(G_ema, feats, dev)
        return G_ema

    def evaluate_now(step):
        g = sampler()
        m, _ = evaluate(g, encoder, val_u8, val_f, train_u8, dev, min(args.eval_n, 200))
        sample_grid(g, val_u8, val_f, run / f"samples-{step:06d}.png")
        return m, (f"eval: FID-lite {m['fid_fv']} (real floor {m['fid_fv_real_train_vs_val']}); cond cosine "
                   f"{m['cond_cosine']} vs unpaired {m['cond_cosine_unpaired']}")

    G.train()
    D.train()
    step = loop.run(state["step"], args.steps, train_step, evaluate_now)
    if step is None:
        return 1

    if main_proc:
        log("final evaluation ...")
        final = sampler()
        m, _ = evaluate(final, encoder, val_u8, val_f, train_u8, dev, args.eval_n)
        loop.curve.write({"step": step, "val_final": m})
        grid = sample_grid(final, val_u8, val_f, run / "samples.png")
        write_registry(out, sc.unwrap(final), cfg, args, state, {"val": m}, scenes.data_card(folder), enc_folder)
        log(f"val ({m['n']} conditions): FID-lite {m['fid_fv']} (real train vs val {m['fid_fv_real_train_vs_val']}); "
            f"cond cosine {m['cond_cosine']} (unpaired {m['cond_cosine_unpaired']}); self-retrieval R@1 "
            f"{m['cond_retrieval_r1']}")
        log(f"samples: {grid}")
        log(f"wrote registry model {out}")
    loop.close()
    sc.cleanup_distributed(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
