"""Does drawing each source of a mix in its own region help the GAN show both? A probe of the
generator's regional condition on the mixing control.

    python benchmarks/regional_mix_probe.py [--split val] [--mixes 200] [--threads 1]

The paper embeds the summed waveform once, f_A(a + b). The generator also takes a regional
condition (``Generator.forward(z, f, outside=, mask=)``, what ``soundsight edit --region`` uses),
so when the sources are separate files each can condition its own part of the picture. For
the same pairs as ``eval_scene``'s mixing control (single-object sounds of different classes,
each at gain 1; the same noise for every layout), this prints how often the judge has the
first source's class, the second's, and both in its top 3, per layout. Each sound alone gives
what one condition draws of its class.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import torch


def layouts(size: int) -> dict:
    """name -> (1, 1, S, S) mask of the first source's region (the second has the rest)."""
    left = torch.zeros(1, 1, size, size)
    left[..., : size // 2] = 1
    soft = torch.sigmoid((size / 2 - 0.5 - torch.arange(size)) / 3.0).view(1, 1, 1, size).expand(1, 1, size, size)
    top = torch.zeros(1, 1, size, size)
    top[..., : size // 2, :] = 1
    centre = torch.zeros(1, 1, size, size)
    centre[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return {"left / right halves": left, "left / right, soft seam": soft, "top / bottom halves": top,
            "centre square / surround": centre}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="scenes dataset folder (default: scenes-5s-s0)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--mixes", type=int, default=200)
    ap.add_argument("--gan", default="scene-gan-64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    from soundsight.device import resolve_device
    from soundsight_plugins.scene_gen.evaluator import all_in_topk
    from soundsight_train import eval_scene as E
    from soundsight_train import scene_common as sc
    from soundsight_train import scenes

    dev = resolve_device("cpu", threads=args.threads)
    names = SimpleNamespace(**{**E.DEFAULTS, "gan": args.gan, "ldm": "none"})
    models, _ = E.load_models(names, dev)
    G, fa, ev = models["gan"], models["audio_encoder"], models["evaluator"]
    split = scenes.SceneSplit(sc.find_scenes(args.data), args.split)
    pairs = E.mix_pairs(split.labels, split.n_objects, args.mixes, args.seed)
    first, second = (split.audio(pairs[:, k], gains=[[1.0, 0.0]]) for k in (0, 1))
    labels = torch.from_numpy(np.stack([split.labels[pairs[:, 0], 0], split.labels[pairs[:, 1], 0]], 1).astype("int64"))
    za, zb, zm = (E.embed_audio(fa, w, dev, 64) for w in (first, second, first + second))
    noise = G.sample_z(len(pairs), torch.Generator().manual_seed(args.seed + 2))  # eval_scene's mix noise

    @torch.no_grad()
    def draw(f, outside=None, mask=None):
        m = None if mask is None else mask.expand(len(f), -1, -1, -1)
        return ((G(noise, f, outside=outside, mask=m) + 1) / 2).clamp(0, 1)

    rows = {"the paper: f_A(a + b), one condition": draw(zm)}
    rows.update({f"regional: {k}": draw(za, zb, m) for k, m in layouts(G.cfg.image_size).items()})
    rows.update({"a alone": draw(za), "b alone": draw(zb)})
    print(f"{args.split}, {len(pairs)} mixes, {args.gan}; the judge's top 3 holds:\n")
    print("| condition | a | b | both |\n|---|---|---|---|")
    for name, images in rows.items():
        top3 = ev.predict(images, batch=64)["logits"].topk(3, 1).indices
        a, b = ((top3 == labels[:, k:k + 1]).any(1).float().mean() for k in (0, 1))
        both = all_in_topk(ev.predict(images, batch=64)["logits"], labels, 3).float().mean()
        print(f"| {name} | {a:.3f} | {b:.3f} | {both:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
