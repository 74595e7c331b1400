"""Does the scene LDM draw the colours of the scenes? Latent and pixel statistics of its samples
next to the real validation images they are conditioned on.

    python benchmarks/ldm_colour_check.py [--model scene-ldm-64 ...] [--image-encoder scene-image-encoder-64] \
        [--n 48] [--steps 25] [--threads 2]

For each model: the per-channel mean of the autoencoder latents (in the units the UNet learns
on: after ``latent_shift`` and ``latent_scale``) of the real val images and of the samples
(re-encoded), and the mean RGB of both. A sampler that drops the latent mean tints every
picture; the models trained before ``--latent-norm channel`` did (see the README).
"""

from __future__ import annotations

import argparse

import torch


def _r(t: torch.Tensor) -> list[float]:
    return [round(float(v), 3) for v in t]


def stats(model_name: str, fv, x: torch.Tensor, steps: int) -> dict:
    from soundsight.registry import resolve
    from soundsight_plugins.scene_gen.loaders import load_ldm

    ldm = load_ldm(resolve(model_name), "cpu")
    with torch.no_grad():
        f = fv.embed(x)
        z_real = ldm.encode(x * 2 - 1)
        y = ldm.sample(f, steps=steps, generator=torch.Generator().manual_seed(0))
        z_fake = ldm.encode(y * 2 - 1)
    return {"model": model_name,
            "latent_mean_real": _r(z_real.mean(dim=(0, 2, 3))),
            "latent_mean_samples": _r(z_fake.mean(dim=(0, 2, 3))),
            "rgb_real": _r(x.mean(dim=(0, 2, 3))),
            "rgb_samples": _r(y.mean(dim=(0, 2, 3))),
            "rgb_abs_error": round(float((y.mean(dim=(0, 2, 3)) - x.mean(dim=(0, 2, 3))).abs().mean()), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=None, help="LDM registry name or folder (repeatable)")
    ap.add_argument("--image-encoder", default="scene-image-encoder-64")
    ap.add_argument("--data", default=None, help="scenes dataset folder (default: scenes-5s-s0)")
    ap.add_argument("--n", type=int, default=48, help="val images (conditions)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from soundsight.registry import resolve
    from soundsight_plugins.scene_gen.loaders import load_image_encoder
    from soundsight_train import scene_common as sc
    from soundsight_train.scenes import SceneSplit

    ds = SceneSplit(sc.find_scenes(args.data), "val")
    fv = load_image_encoder(resolve(args.image_encoder), "cpu")
    x = sc.to_unit(sc.images_nchw(ds, fv.cfg.image_size)[: args.n], "cpu")
    print(f"{args.n} val conditions, DDIM {args.steps} steps, each model's own guidance")
    print("| model | latent mean per channel: real | samples | mean RGB: real | samples | mean abs RGB error |")
    print("|---|---|---|---|---|---|")
    for name in args.model or ["scene-ldm-64"]:
        s = stats(name, fv, x, args.steps)
        print(f"| {s['model']} | {s['latent_mean_real']} | {s['latent_mean_samples']} | {s['rgb_real']} | "
              f"{s['rgb_samples']} | {s['rgb_abs_error']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
