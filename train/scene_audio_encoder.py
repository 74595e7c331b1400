"""Stage 3 of scene-gen: the audio encoder f_A, aligned to the frozen image encoder f_V.

    python -m soundsight_train.scene_audio_encoder --image-encoder models/scene-image-encoder-64 \
        [--data DIR] [--steps 3000] [--batch 64] [--out models/scene-audio-encoder-64] [--resume] [--threads 2]
    torchrun --nproc_per_node 4 -m soundsight_train.scene_audio_encoder --preset paper ...   # DDP
    python -m soundsight_train.scene_audio_encoder --tiny --data DIR --image-encoder FV_FOLDER --out /tmp/fa

Loss: symmetric InfoNCE with negative L2 distances of unit-norm features as logits (Sound2Scene),
L = 1/(2B) sum_j (L^A_j + L^V_j), temperature ``--temperature``. Adam, lr 1e-3, weight decay
1e-5 (the paper's), warm-up + cosine decay. Targets: f_V of the paired image, computed once for
the image and its mirror image (a random half of each batch uses the mirrored target — the
sound does not change when the picture is mirrored).

Audio: each sample's mix is rendered from the dataset's bank with its stored gains
(``SceneSplit.audio``), so the loudness a picture was composed for is the loudness the encoder
hears; augmentation is a random circular shift of the clip (the recordings are tiled loops, so
a shift is another valid offset) and, optionally, a small gain jitter (``--gain-jitter-db``; the
dataset maps gain to object size, so large jitter would teach the wrong size).

Front end: ``AudioEncoderConfig`` (see soundsight_plugins.scene_gen.encoders): the global mean
and std of the log-spectrogram are measured on ``--stats-clips`` training clips before training
and stored in the config (level-keeping normalisation, so ``--gain`` reaches the embedding).

Evaluation on val: retrieval audio → image among the val images by L2 distance of unit-norm
features (R@1, R@5 of the paired image; ``class_r1``: the top image's loudest object has the
sound's loudest class), retrieval among the train images (class of the nearest training image:
the paper's baseline C), and the gain response: ``gain_monotonic`` is the fraction of val clips
for which a size probe (ridge regression from f_V features to log gain, fit on train images)
predicts a strictly larger size for the clip at x0.25 → x1 → x4 level.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

from soundsight_plugins.scene_gen.encoders import (
    AUDIO_ARCHITECTURE,
    AUDIO_TASK,
    AudioEncoder,
    AudioEncoderConfig,
    AudioFrontEnd,
    count_parameters,
)
from soundsight_plugins.scene_gen.losses import infonce_l2, l2_logits
from soundsight_train import scene_common as sc
from soundsight_train.scene_loop import TrainLoop, epoch_line, lr_epoch_fields


def parse(argv=None):
    ap = sc.make_parser("scene_audio_encoder", __doc__, "scene-audio-encoder-64", image_encoder=True)
    ap.add_argument("--size", type=int, choices=[32, 64, 128], default=None,
                    help="image size fed to f_V (default: f_V's own)")
    ap.add_argument("--preset", choices=["cpu", "paper", "tiny"], default="cpu")
    ap.add_argument("--seconds", type=float, default=None, help="front-end length (default: the dataset's clips)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64, help="per process (paper 64)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=0.1, help="logits = -L2 distance / temperature")
    ap.add_argument("--gain-jitter-db", type=float, default=0.0, help="uniform ± dB on the whole mix (0: off)")
    ap.add_argument("--stats-clips", type=int, default=256, help="training clips for the front end's mean/std")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-n", type=int, default=500)
    return sc.parse_with_tiny(ap, argv, dict(preset="tiny", steps=3, batch=8, warmup=1, eval_every=2, eval_n=8,
                                             stats_clips=8, log_every=1))


def _audio(split, idx, gains=None) -> torch.Tensor:
    return torch.from_numpy(split.audio(np.asarray(idx), gains=gains))


@torch.no_grad()
def embed_audio(model, split, idx, dev, scale: float = 1.0, batch: int = 64) -> torch.Tensor:
    m = sc.unwrap(model)
    out = []
    for i in range(0, len(idx), batch):
        a = _audio(split, idx[i:i + batch]) * scale
        with dev.autocast():
            out.append(F.normalize(m(a.to(dev.torch_device)).float(), dim=-1).cpu())
    return torch.cat(out, 0)


@torch.no_grad()
def evaluate(model, val, train, val_f, train_f, dev, n: int, probe) -> dict:
    m = sc.unwrap(model)
    was = m.training
    m.eval()
    n = min(n, len(val_f))
    idx = np.arange(n)
    ea = embed_audio(m, val, idx, dev)
    logits = l2_logits(ea, val_f[:n])  # (n audio, n images)
    rank = (logits > logits.diag()[:, None]).sum(1)  # images closer than the paired one
    yv = torch.from_numpy(val.labels[:n, 0].astype("int64"))
    top = logits.argmax(1)
    out = {"n": n, "r1": round(float((rank < 1).float().mean()), 4), "r5": round(float((rank < 5).float().mean()), 4),
           "class_r1": round(float((yv[top] == yv).float().mean()), 4), "chance_r1": round(1 / n, 4)}
    # nearest training image (baseline C of the issue)
    yt = torch.from_numpy(train.labels[:, 0].astype("int64"))
    near = torch.cat([l2_logits(ea[i:i + 256], train_f).argmax(1) for i in range(0, n, 256)])
    out["train_retrieval_class_r1"] = round(float((yt[near] == yv).float().mean()), 4)
    # gain response
    lo, hi = embed_audio(m, val, idx, dev, 0.25), embed_audio(m, val, idx, dev, 4.0)
    s_lo, s_mid, s_hi = probe(lo), probe(ea), probe(hi)
    out["gain_monotonic"] = round(float(((s_lo < s_mid) & (s_mid < s_hi)).float().mean()), 4)
    out["gain_shift_l2"] = round(float((hi - lo).norm(dim=1).mean()), 4)
    out["pair_l2"] = round(float((ea - ea.roll(1, 0)).norm(dim=1).mean()), 4)
    m.train(was)
    return out


def size_probe(train_f: torch.Tensor, train_gains: np.ndarray, lam: float = 1e-2):
    """Ridge regression f_V feature → log gain of the loudest object, as a callable on embeddings."""
    X = torch.cat([train_f.double(), torch.ones(len(train_f), 1, dtype=torch.double)], 1)
    t = torch.log(torch.from_numpy(train_gains[:, 0].astype("float64")))
    w = torch.linalg.solve(X.t() @ X + lam * torch.eye(X.shape[1], dtype=torch.double), X.t() @ t)
    return lambda e: torch.cat([e.double(), torch.ones(len(e), 1, dtype=torch.double)], 1) @ w


def write_registry(out, model, cfg, args, state, metrics, data, enc_folder):
    training = {"command": state["command"], "steps": state["step"], "batch": args.batch,
                "world_size": state["world"], "clips_seen": state["step"] * args.batch * state["world"],
                "seconds": round(state["elapsed"], 1), "device": state["device"],
                "loss": f"symmetric InfoNCE, logits = -L2(unit-norm) / {args.temperature}",
                "optimizer": {"type": "Adam", "lr": args.lr, "weight_decay": args.wd,
                              "schedule": f"warm-up {args.warmup} + cosine"},
                "augment": {"circular_shift": True, "gain_jitter_db": args.gain_jitter_db, "mirrored_targets": True},
                "frontend_stats_clips": args.stats_clips, "curve": "curve.jsonl in the run folder"}
    sc.save_registry(out, args, model, cfg, task=AUDIO_TASK, architecture=AUDIO_ARCHITECTURE, training=training,
                     metrics=metrics, data=data, extra={"aligned_to": {"image_encoder": sc.model_ref(enc_folder)}},
                     description=f"scene-gen audio encoder f_A: ResNet-18 layout on a level-keeping log-"
                                 f"{'mel ' if cfg.n_mels else ''}spectrogram of {cfg.seconds:g} s at "
                                 f"{cfg.sample_rate} Hz, aligned to {enc_folder.name} ({cfg.feature_dim}-d).")


def main(argv=None) -> int:
    args = parse(argv)
    rank, world, dev, main_proc, out, run, log, command = sc.start(args, "scene_audio_encoder", argv)
    from soundsight_train import scenes

    folder, (train, val) = sc.scene_splits(args.data, "train", "val")
    encoder, enc_folder = sc.load_image_encoder(args.image_encoder, dev)
    size = args.size or encoder.cfg.image_size
    train_u8, val_u8 = sc.images_nchw(train, size), sc.images_nchw(val, size)
    feats, feats_flip, val_f = sc.conditioning_features(encoder, train_u8, val_u8, dev, log)
    probe = size_probe(feats, train.gains)

    cfg = AudioEncoderConfig.preset(args.preset, feature_dim=encoder.cfg.feature_dim, sample_rate=train.sample_rate,
                                    seconds=args.seconds or train.spec.seconds)
    ck = sc.resume_state(args, run, cfg.to_dict(), log)
    if ck is not None:
        saved = json.loads((ck / "state.json").read_text())["config"]
        cfg.norm_mean, cfg.norm_std = saved["norm_mean"], saved["norm_std"]
    else:
        n_stats = min(args.stats_clips, len(train))
        stats_idx = np.linspace(0, len(train) - 1, n_stats).astype(int)
        cfg.norm_mean, cfg.norm_std = AudioFrontEnd(cfg).statistics(_audio(train, stats_idx))
    log(f"front end: {cfg.n_bins} {'mel' if cfg.n_mels else 'linear'} bins x {cfg.n_frames} frames "
        f"(n_fft {cfg.n_fft}, hop {cfg.hop}, {cfg.seconds:g} s); log-spectrogram mean {cfg.norm_mean:.3f} "
        f"std {cfg.norm_std:.3f} (fixed)")

    torch.manual_seed(args.seed)
    model = AudioEncoder(cfg).to(dev.torch_device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.wd)
    scaler = sc.make_scaler(dev)
    modules, optims = {"model": model}, {"opt": opt, "scaler": scaler}
    state = sc.initial_state({"step": 0, "elapsed": 0.0}, command, world, dev, cfg, args)
    sc.restore(ck, modules, optims, dev, state)
    ddp = sc.wrap_ddp(model, dev, world)
    gen = sc.batch_generator(args.seed, rank, state["step"])

    log(f"data: {folder} ({len(train)} train / {len(val)} val clips)")
    log(f"model: f_A {count_parameters(model) / 1e6:.2f}M params -> D={cfg.feature_dim} (aligned to "
        f"{enc_folder.name}); device {dev}; world {world}; batch {args.batch}/process")
    log(f"run folder: {run}; registry folder: {out}")

    loop = TrainLoop(args, run, state, modules, optims, main_proc, log,
                     lr_epoch_fields(opt, args.batch * world, len(train)), epoch_line)

    def train_step(step):
        sc.set_lr(opt, sc.lr_at(step, args.steps, args.lr, args.warmup))
        idx = sc.take(len(train), args.batch, gen)
        a = _audio(train, idx.numpy())
        shift = torch.randint(a.shape[1], (len(a), 1), generator=gen)
        a = torch.gather(a, 1, (torch.arange(a.shape[1])[None] + shift) % a.shape[1])
        if args.gain_jitter_db > 0:
            db = (torch.rand(len(a), 1, generator=gen) * 2 - 1) * args.gain_jitter_db
            a = a * 10 ** (db / 20)
        flip = torch.rand(len(idx), generator=gen) < 0.5
        v = torch.where(flip[:, None], feats_flip[idx], feats[idx]).to(dev.torch_device)
        with dev.autocast():
            e = ddp(a.to(dev.torch_device))
            loss = infonce_l2(e, v, args.temperature)
        sc.backward_step(loss, opt, scaler)
        return {"loss": loss.detach()}

    def evaluate_now(step):
        m = evaluate(model, val, train, val_f, feats, dev, min(args.eval_n, 200), probe)
        return m, (f"eval: R@1 {m['r1']} R@5 {m['r5']} class@1 {m['class_r1']} (chance R@1 {m['chance_r1']}); "
                   f"gain monotonic {m['gain_monotonic']}")

    model.train()
    step = loop.run(state["step"], args.steps, train_step, evaluate_now)
    if step is None:
        return 1

    if main_proc:
        log("final evaluation ...")
        m = evaluate(model, val, train, val_f, feats, dev, args.eval_n, probe)
        loop.curve.write({"step": step, "val_final": m})
        write_registry(out, model, cfg, args, state, {"val": m}, scenes.data_card(folder), enc_folder)
        log(f"val ({m['n']} clips): audio->image R@1 {m['r1']} R@5 {m['r5']} (chance {m['chance_r1']}); class@1 "
            f"{m['class_r1']}; nearest-train-image class@1 {m['train_retrieval_class_r1']}; gain monotonic "
            f"{m['gain_monotonic']} (|e(4x)-e(x/4)| {m['gain_shift_l2']} vs pairs {m['pair_l2']})")
        log(f"wrote registry model {out}")
    loop.close()
    sc.cleanup_distributed(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
