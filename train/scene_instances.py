"""The instance bank of ``imagine --anchor``: f_V features of the scenes dataset's training images.

    python -m soundsight_train.scene_instances [--data DIR] [--image-encoder scene-image-encoder-64] \
        [--out models/scene-instances-64] [--threads 1]

No training: the image encoder G was conditioned on encodes every training image once (unit
norm, float16: 5000 x 256 is 2.6 MB, about 15 s on one CPU thread). The card names that encoder
(``conditioning.image_encoder``) so ``imagine`` refuses a bank made with another, and carries
the dataset's sources and licences: the features are derived from its images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.scene_instances", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="scenes dataset folder or data root (default: scenes-5s-s0)")
    ap.add_argument("--split", default="train", help="the images the generator was trained on")
    ap.add_argument("--image-encoder", default="scene-image-encoder-64")
    ap.add_argument("--out", default="models/scene-instances-64")
    ap.add_argument("--name", default=None, help="registry name (default: the folder's name)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from soundsight.device import resolve_device
    from soundsight.registry import save_model
    from soundsight_plugins.scene_gen.instances import ARCHITECTURE, FILE, TASK, BankConfig
    from soundsight_train import scene_common as sc
    from soundsight_train import scenes

    dev = resolve_device(args.device, threads=args.threads)
    t0 = time.time()
    folder = sc.find_scenes(args.data)
    split = scenes.SceneSplit(folder, args.split)
    enc, enc_folder = sc.load_image_encoder(args.image_encoder, dev)
    feats = sc.encode_images(enc, sc.images_nchw(split, enc.cfg.image_size), dev.torch_device)
    cfg = BankConfig(feature_dim=int(feats.shape[1]), n=int(feats.shape[0]), dataset=folder.name, split=args.split)
    out = Path(args.out)
    command = "python -m soundsight_train.scene_instances " + " ".join(argv if argv is not None else sys.argv[1:])
    save_model(out, name=args.name or out.name, task=TASK, architecture=ARCHITECTURE, config=cfg.to_dict(),
               tensors={FILE: {"features": feats.half()}},
               training={"command": command, "seconds": round(time.time() - t0, 1), "device": str(dev),
                         "what": f"f_V features (unit norm, float16) of the {args.split} images; no training"},
               data=scenes.data_card(folder), license="Apache-2.0",
               extra={"conditioning": {"image_encoder": sc.model_ref(enc_folder)}},
               description=f"scene-gen instance bank: {cfg.n} {args.split} images of {folder.name} encoded by "
                           f"{enc_folder.name}, the instances `soundsight imagine --anchor` pulls a sound toward.")
    print(f"wrote {out}: {cfg.n} x {cfg.feature_dim} features from {enc_folder.name} ({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
