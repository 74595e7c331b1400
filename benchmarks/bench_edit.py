"""latent-edit speed and memory: GAN inversion of one photo with the default step budget.

    python benchmarks/bench_edit.py [--threads 2] [--repeat 3] [--device cpu|cuda] [--steps N]

Rows: the scene-gen GAN configuration at 64 px (``cpu`` preset, the shape of scene-gan-64)
and at 128 px, with random weights of the same shapes (speed does not depend on them), and the
installed scene-gen models when they exist (``scene-gan-64`` … by name). Each row runs in its
own process so its peak RSS is its own. Goal (issue 6): <= 20 s at 128 px on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

ROW = r"""
import json, resource, statistics, sys, time, torch
from soundsight.device import resolve_device
from soundsight_plugins.latent_edit.invert import InversionConfig, invert
from soundsight_plugins.latent_edit.plugin import REFINE_STEPS
args = json.loads(sys.argv[1])
dev = resolve_device(args["device"], threads=args["threads"])
if args.get("installed"):
    from soundsight import registry
    G = registry.load(args["installed"]["generator"], dev)
    fv = registry.load(args["installed"]["image_encoder"], dev)
else:
    from soundsight_plugins.scene_gen.encoders import ImageEncoder, ImageEncoderConfig
    from soundsight_plugins.scene_gen.gan import GANConfig, Generator
    torch.manual_seed(0)
    fv = dev.to(ImageEncoder(ImageEncoderConfig.for_size(args["size"], args["preset"])).eval())
    G = dev.to(Generator(GANConfig.for_size(args["size"], args["preset"], feature_dim=fv.cfg.feature_dim)).eval())
S = G.cfg.image_size
cfg = InversionConfig()
if args["steps"]:
    cfg.steps = args["steps"]
if args["refine"]:
    cfg.refine_steps = REFINE_STEPS
yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
target = dev.to(torch.stack([xx, yy, 0.5 + 0.5 * torch.sin(6 * xx * yy)])[None])
sync = torch.cuda.synchronize if dev.is_cuda else (lambda: None)
invert(G, fv, target, InversionConfig(steps=2, draws=2), seed=0); sync()  # warm-up
times = []
for r in range(args["repeat"]):
    t = time.perf_counter(); inv = invert(G, fv, target, cfg, seed=r); sync()
    times.append(time.perf_counter() - t)
out = {"size": S, "steps": cfg.steps, "refine_steps": cfg.refine_steps, "seconds": statistics.median(times),
       "g_params": sum(p.numel() for p in G.parameters()), "fv_params": sum(p.numel() for p in fv.parameters()),
       "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}
if dev.is_cuda:
    out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
print(json.dumps(out))
"""


def run(**kw) -> dict:
    proc = subprocess.run([sys.executable, "-c", ROW, json.dumps(kw)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout)


def installed_models() -> dict | None:
    from soundsight.errors import ModelError
    from soundsight_plugins.latent_edit.pipeline import resolve_models

    try:
        folders = resolve_models()
    except ModelError:
        return None
    return {role: str(f.path) for role, f in folders.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=0, help="inversion steps (0: the command's default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    common = {"device": args.device, "threads": args.threads, "repeat": args.repeat, "steps": args.steps}
    rows = []
    for name, kw in [("random weights, cpu preset, 64 px", {"size": 64, "preset": "cpu"}),
                     ("random weights, cpu preset, 128 px", {"size": 128, "preset": "cpu"})]:
        rows.append((name, run(**common, **kw, refine=False)))
    inst = installed_models()
    if inst:
        name = f"installed {inst['generator'].rstrip('/').split('/')[-1]}"
        rows.append((name, run(**common, installed=inst, refine=False)))
        rows.append((name + " --refine", run(**common, installed=inst, refine=True)))
    if args.json:
        print(json.dumps([{"row": n, **r} for n, r in rows], indent=2))
        return
    print(f"device {args.device}, {args.threads} thread(s), median of {args.repeat}\n")
    print("| configuration | G params | f_V params | steps | inversion | peak RSS | goal |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        steps = f"{r['steps']}" + (f" + {r['refine_steps']} refine" if r["refine_steps"] else "")
        goal = "≤ 20 s" if r["size"] == 128 else ""
        print(f"| {name} | {r['g_params'] / 1e6:.2f} M | {r['fv_params'] / 1e6:.2f} M | {steps} | {r['seconds']:.2f} s | "
              f"{r['peak_rss_gb']:.2f} GB | {goal} |")


if __name__ == "__main__":
    main()
