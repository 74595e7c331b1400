"""Is the scene evaluator a fair judge of generated pictures? Its accuracy on real images degraded
the way a small generator degrades them (lost resolution, noise, a periodic block pattern).

    python benchmarks/judge_robustness.py [--evaluator scene-evaluator-64] [--split val] [--threads 1]

If the judge's top-1 collapsed under mild degradation, low R@k of generated images would say
more about the judge than about the generator. Prints top-1 / top-5 of the loudest object's
class per degradation, on the real images of the split.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def degradations(x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    side = x.shape[-1]
    out = {"real": x}
    for f in (2, 4):
        low = F.interpolate(x, scale_factor=1 / f, mode="area")
        out[f"down {f}x, bilinear up"] = F.interpolate(low, size=side, mode="bilinear", align_corners=False)
    for s in (0.03, 0.06, 0.1):
        out[f"Gaussian noise sd {s}"] = x + s * torch.randn(x.shape, generator=gen)
    # a fixed 4 px periodic pattern, like a young generator's upsampling artefacts
    pattern = (torch.rand(1, 3, 4, 4, generator=gen) - 0.5) * 0.15
    out["4 px block pattern, +-0.075"] = x + pattern.repeat(1, 1, side // 4, side // 4)
    return {k: v.clamp(0, 1) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evaluator", default="scene-evaluator-64")
    ap.add_argument("--data", default=None, help="scenes dataset folder (default: scenes-5s-s0)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from soundsight import registry
    from soundsight_plugins.scene_gen.evaluator import topk_hits
    from soundsight_train import scene_common as sc

    ev = registry.load(registry.resolve(args.evaluator, task="scene-evaluation"), "cpu")
    _, (split,) = sc.scene_splits(args.data, args.split)
    x = sc.to_unit(sc.images_nchw(split, ev.cfg.image_size), "cpu")
    labels = torch.from_numpy(split.labels.astype("int64"))[:, 0]
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{args.evaluator} on {len(x)} real {args.split} images\n")
    print("| images | top-1 | top-5 |\n|---|---|---|")
    for name, y in degradations(x, gen).items():
        logits = ev.predict(y, batch=250)["logits"]
        print(f"| {name} | {topk_hits(logits, labels, 1).float().mean():.3f} | "
              f"{topk_hits(logits, labels, 5).float().mean():.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
