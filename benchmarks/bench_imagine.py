"""scene-gen speed and memory: seconds per image of `soundsight imagine`'s stages on CPU.

    python benchmarks/bench_imagine.py [--threads 2] [--repeat 3] [--device cpu|cuda] [--batch 8]

Rows: the audio encoder f_A (one 5 s clip → feature), the GAN generator at 64 px (and at 128 px),
the LDM at 25 DDIM steps (classifier-free guidance: two UNet passes per step), each for one
image and per image in a batch of ``--batch``; and the whole command (`soundsight imagine`,
process start and PNG included) when the shipped models are installed. A row uses the
installed model of that name (scene-audio-encoder-64, scene-gan-64, scene-gan-128,
scene-ldm-64) or, when there is none, random weights of the same architecture's CPU preset
(speed does not depend on the weights; such rows say "config"). Each row runs in its own
process, so peak RSS is that row's alone. Goals (issue 5): <= 0.5 s per 128 px GAN image and
<= 5 s per LDM image at 25 steps, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROW = r"""
import json, resource, statistics, sys, time, torch
from soundsight.device import resolve_device
args = json.loads(sys.argv[1])
dev = resolve_device(args["device"], threads=args["threads"])
sync = torch.cuda.synchronize if dev.is_cuda else (lambda: None)

def build(kind, name, size):
    from soundsight import registry
    from soundsight.errors import ModelError
    try:
        return registry.load(name, dev), "model " + name
    except ModelError:
        pass
    torch.manual_seed(0)
    if kind == "fa":
        from soundsight_plugins.scene_gen.encoders import AudioEncoder, AudioEncoderConfig
        m = AudioEncoder(AudioEncoderConfig.preset("cpu"))
    elif kind == "gan":
        from soundsight_plugins.scene_gen.gan import GANConfig, Generator
        m = Generator(GANConfig.for_size(size, "cpu"))
    else:
        from soundsight_plugins.scene_gen.ldm import LDMConfig, SceneLDM
        m = SceneLDM(LDMConfig.for_size(size, "cpu"))
    return dev.to(m).eval(), "config (no model named " + name + ")"

m, source = build(args["kind"], args["name"], args["size"])
b = args["batch"]
gen = dev.generator(0)
if args["kind"] == "fa":
    x = 0.02 * torch.randn(b, m.cfg.n_samples, generator=gen, device=dev.torch_device)
    run = lambda: m.embed(x)
else:
    feats = torch.nn.functional.normalize(torch.randn(b, m.cfg.feature_dim, generator=gen, device=dev.torch_device), dim=-1)
    if args["kind"] == "gan":
        run = lambda: m.generate(feats, generator=gen)
    else:
        run = lambda: m.sample(feats, steps=args["steps"], generator=gen)
with torch.inference_mode(), dev.autocast():
    run(); sync()
    times = []
    for _ in range(args["repeat"]):
        t = time.perf_counter(); run(); sync()
        times.append(time.perf_counter() - t)
out = {"seconds": statistics.median(times), "per_item": statistics.median(times) / b, "source": source,
       "params": sum(p.numel() for p in m.parameters()),
       "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}
if dev.is_cuda:
    out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
print(json.dumps(out))
"""


def run_row(**kw) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(kw["threads"]), "MKL_NUM_THREADS": str(kw["threads"])}
    proc = subprocess.run([sys.executable, "-c", ROW, json.dumps(kw)], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def installed(name: str) -> bool:
    from soundsight import registry
    from soundsight.errors import ModelError

    try:
        registry.locate(name)
        return True
    except ModelError:
        return False


def command_row(threads: int, repeat: int) -> dict | None:
    """Wall time of the whole `soundsight imagine` (start-up, loading, f_A, G, PNG) with the shipped models."""
    if not (installed("scene-audio-encoder-64") and installed("scene-gan-64")):
        return None
    sound = Path(__file__).resolve().parents[1] / "plugins" / "scene_gen" / "assets" / "sheep.flac"
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "soundsight", "--device", "cpu", "--threads", str(threads),
                            "imagine", str(sound), "--out", f"{tmp}/x{i}.png"], check=True, capture_output=True)
            times.append(time.perf_counter() - t)
    return {"seconds": sorted(times)[len(times) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    common = {"device": args.device, "threads": args.threads, "repeat": args.repeat, "steps": args.steps}
    rows = [("f_A: 5 s clip → feature", "fa", "scene-audio-encoder-64", 64, "—"),
            ("GAN 64 px", "gan", "scene-gan-64", 64, "—"),
            ("GAN 128 px", "gan", "scene-gan-128", 128, "≤ 0.5 s"),
            (f"LDM 64 px, {args.steps} DDIM steps", "ldm", "scene-ldm-64", 64, "≤ 5 s")]
    print(f"device {args.device}, {args.threads} thread(s), median of {args.repeat}\n")
    print(f"| stage | weights | params | 1 item | per item in a batch of {args.batch} | peak RSS | goal |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for label, kind, name, size, goal in rows:
        one = run_row(kind=kind, name=name, size=size, batch=1, **common)
        many = run_row(kind=kind, name=name, size=size, batch=args.batch, **common)
        results.append({"stage": label, "one": one, "batch": many})
        print(f"| {label} | {one['source']} | {one['params'] / 1e6:.2f} M | {one['seconds']:.3f} s | "
              f"{many['per_item']:.3f} s | {max(one['peak_rss_gb'], many['peak_rss_gb']):.2f} GB | {goal} |", flush=True)
    cmd = command_row(args.threads, args.repeat)
    if cmd:
        print(f"\nwhole command, `soundsight imagine sheep.flac` (process start, model loading, one 64 px PNG): "
              f"{cmd['seconds']:.2f} s")


if __name__ == "__main__":
    main()
