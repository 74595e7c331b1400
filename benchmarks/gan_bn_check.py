"""Which batch-norm statistics should a GAN checkpoint's generator sample with? The EMA as the
checkpoint holds it, the EMA with standing statistics, and the live G, on the same val conditions.

    python benchmarks/gan_bn_check.py --run runs/gan-std [--run runs/gan-ae ...] \
        [--image-encoder scene-image-encoder-64] [--n 200] [--threads 1]

Each ``--run`` is a ``scene_gan`` run folder (its ``ckpt`` holds ``G`` and ``G_ema``). Printed
per checkpoint and variant: FID-lite in f_V space against the val images and the f_V cosine of
a sample to its own condition against a random one (the trainer's own evaluation). Before
``scene_gan`` computed standing statistics, the EMA was written with the live G's, which do not
fit its averaged weights (see the README's imagine section).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, help="scene_gan run folder (repeatable)")
    ap.add_argument("--image-encoder", default="scene-image-encoder-64")
    ap.add_argument("--data", default=None, help="scenes dataset folder (default: scenes-5s-s0)")
    ap.add_argument("--n", type=int, default=200, help="val conditions")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from safetensors.torch import load_file

    from soundsight.device import resolve_device
    from soundsight_plugins.scene_gen.gan import GANConfig, Generator
    from soundsight_train import scene_common as sc
    from soundsight_train.scene_gan import evaluate, standing_stats

    dev = resolve_device("cpu")
    _, (train, val) = sc.scene_splits(args.data, "train", "val")
    train_u8, val_u8 = sc.images_nchw(train, 64), sc.images_nchw(val, 64)
    encoder, _ = sc.load_image_encoder(args.image_encoder, dev)
    encoder.eval()
    feats, _, val_f = sc.conditioning_features(encoder, train_u8, val_u8, dev, lambda *a: None)

    print(f"{min(args.n, len(val_f))} val conditions, one sample each (seed 0)")
    print("| checkpoint | G | FID-lite | cond cosine | unpaired |")
    print("|---|---|---|---|---|")
    for run in map(Path, args.run):
        cfg = GANConfig.from_dict(json.loads((run / "ckpt" / "state.json").read_text())["config"])

        def load(name: str) -> Generator:
            g = Generator(cfg)
            g.load_state_dict(load_file(str(run / "ckpt" / f"{name}.safetensors")))
            return g.eval()

        ema_standing = load("G_ema")
        standing_stats(ema_standing, feats, dev)
        for label, g in (("EMA as written", load("G_ema")), ("EMA, standing statistics", ema_standing),
                         ("live G", load("G"))):
            m, _ = evaluate(g, encoder, val_u8, val_f, train_u8, dev, args.n)
            print(f"| {run.name} | {label} | {m['fid_fv']:.2f} | {m['cond_cosine']:.3f} | {m['cond_cosine_unpaired']:.3f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
