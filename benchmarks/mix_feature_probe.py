"""Does the audio feature of a two-sound mix point at both sources? A check of f_A alone, no
generator and no judge.

    python benchmarks/mix_feature_probe.py [--split val] [--mixes 200] [--threads 1]

The mixing control of ``eval_scene`` (both classes in the judge's top 3 of the generated image)
fails when any of f_A, the generator or the judge does. This looks at f_A: for the same pairs
of single-object sounds as ``eval_scene`` (each at gain 1), it finds the k nearest training
images to f_A(sound) in f_V space and asks whether their labels hold the first source's class,
the second's, and both. Alone, each sound gives the floor for "both" (the other class turning
up by chance); f_V of the split's real two-object scenes gives what an image feature of a true
two-object scene reaches. Prints a markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def neighbours_hold(feats: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, cls: torch.Tensor,
                    k: int) -> torch.Tensor:
    """(M,) bool: class ``cls[i]`` is a label of one of the k training images nearest to feats[i]
    (unit-norm features: the largest cosine is the nearest)."""
    near = torch.cat([(feats[i:i + 256] @ bank.t()).topk(k, 1).indices for i in range(0, len(feats), 256)])
    return (bank_labels[near] == cls[:, None, None]).any(2).any(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="scenes dataset folder (default: scenes-5s-s0)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--mixes", type=int, default=200)
    ap.add_argument("--k", default="1,10,50", help="neighbourhood sizes")
    ap.add_argument("--image-encoder", default="scene-image-encoder-64")
    ap.add_argument("--audio-encoder", default="scene-audio-encoder-64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from soundsight import registry
    from soundsight.device import resolve_device
    from soundsight_train import scene_common as sc
    from soundsight_train.eval_scene import embed_audio, mix_pairs

    dev = resolve_device("cpu", threads=args.threads)
    fv = registry.load(registry.resolve(args.image_encoder, task="scene-image-embedding"), "cpu")
    fa = registry.load(registry.resolve(args.audio_encoder, task="scene-audio-embedding"), "cpu")
    _, (split, train) = sc.scene_splits(args.data, args.split, "train")
    bank = sc.encode_images(fv, sc.images_nchw(train, fv.cfg.image_size), "cpu")
    bank_labels = torch.from_numpy(train.labels.astype("int64"))
    pairs = mix_pairs(split.labels, split.n_objects, args.mixes, args.seed)
    a = split.audio(pairs[:, 0], gains=[[1.0, 0.0]])
    b = split.audio(pairs[:, 1], gains=[[1.0, 0.0]])
    ca = torch.from_numpy(split.labels[pairs[:, 0], 0].astype("int64"))
    cb = torch.from_numpy(split.labels[pairs[:, 1], 0].astype("int64"))
    two = np.flatnonzero(split.n_objects == 2)[:args.mixes]
    scenes_f = sc.encode_images(fv, sc.images_nchw(split, fv.cfg.image_size)[two], "cpu")
    scene_labels = torch.from_numpy(split.labels[two].astype("int64"))
    queries = {"f_A(first sound alone)": (embed_audio(fa, a, dev, 64), ca, cb),
               "f_A(second sound alone)": (embed_audio(fa, b, dev, 64), ca, cb),
               "f_A(mix of both)": (embed_audio(fa, a + b, dev, 64), ca, cb),
               "f_V(real two-object scene): loud, quiet object": (scenes_f, scene_labels[:, 0], scene_labels[:, 1])}
    ks = [int(k) for k in args.k.split(",")]
    print(f"{len(pairs)} mixes of {args.split} sounds, {len(two)} real two-object {args.split} scenes; "
          f"neighbours among {len(train)} training images (f_V)\n")
    print("| query | " + " | ".join(f"k = {k}: first / second / both" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    for name, (f, c1, c2) in queries.items():
        cells = []
        for k in ks:
            h1, h2 = neighbours_hold(f, bank, bank_labels, c1, k), neighbours_hold(f, bank, bank_labels, c2, k)
            cells.append(f"{h1.float().mean():.3f} / {h2.float().mean():.3f} / {(h1 & h2).float().mean():.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
