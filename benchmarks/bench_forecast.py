"""Sound2Sight speed and memory: K futures x 25 frames in one batched pass, and training
throughput, on the shipped model's configuration and on the paper's.

    python benchmarks/bench_forecast.py [--threads 2] [--repeat 3] [--device cpu|cuda]

Goal (issue 3): K=100 futures x 25 frames at 48 px in <= 5 s on 2 CPU cores. Each row runs in
its own process so peak RSS is that row's alone. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

ROW = r"""
import json, resource, statistics, sys, time, torch
from soundsight.device import resolve_device
from soundsight_plugins.forecast.model import MultimodalDiscriminator, Sound2Sight, Sound2SightConfig
args = json.loads(sys.argv[1])
dev = resolve_device(args["device"], threads=args["threads"])
cfg = Sound2SightConfig.for_size(48, **args["overrides"])
G = dev.to(Sound2Sight(cfg))
out = {"params": sum(p.numel() for p in G.parameters())}
gen = dev.generator(0)
seen = torch.rand(1, 5, 1, 48, 48, generator=gen, device=dev.torch_device)
audio = torch.randn(1, 30, 440, generator=gen, device=dev.torch_device) * 0.1
sync = torch.cuda.synchronize if dev.is_cuda else (lambda: None)
if args["mode"] == "sample":
    G.eval()
    with torch.inference_mode(), dev.autocast():
        G.sample(seen, audio, 25, args["k"], generator=gen); sync()
        times = []
        for _ in range(args["repeat"]):
            t = time.perf_counter(); G.sample(seen, audio, 25, args["k"], generator=gen); sync()
            times.append(time.perf_counter() - t)
    out["seconds"] = statistics.median(times)
else:
    from soundsight_train.forecast import train_step
    D = dev.to(MultimodalDiscriminator(cfg))
    opt_g = torch.optim.Adam(G.parameters(), 2e-3); opt_d = torch.optim.Adam(D.parameters(), 2.5e-3)
    b = args["batch"]
    frames = torch.rand(b, 20, 1, 48, 48, device=dev.torch_device)
    chunks = torch.randn(b, 20, 440, device=dev.torch_device) * 0.1
    pick = torch.Generator().manual_seed(0)
    step = lambda: train_step(G, D, opt_g, opt_d, None, frames, chunks, cfg, beta=1e-4, gamma=1e-4, pick_gen=pick, autocast=dev.autocast)
    step(); sync()
    t = time.perf_counter()
    for _ in range(args["repeat"]):
        step()
    sync()
    out["seconds"] = (time.perf_counter() - t) / args["repeat"]
    out["seq_per_s"] = b / out["seconds"]
out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
if dev.is_cuda:
    out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
print(json.dumps(out))
"""

SHIPPED = {"nf": 16, "rnn_size": 128, "d_nf": 16, "d_hidden": 16}  # models/m3so-nb-48
PAPER = {}  # Sound2SightConfig defaults: nf 64, rnn 256, d_nf 64


def run(**kw) -> dict:
    proc = subprocess.run([sys.executable, "-c", ROW, json.dumps(kw)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    common = {"device": args.device, "threads": args.threads, "repeat": args.repeat}
    print(f"device {args.device}, {args.threads} thread(s), median of {args.repeat}\n")
    print("| configuration | params | K=100 x 25 frames, 48 px | peak RSS | training (batch "
          f"{args.batch}, 5+15 frames) | goal |\n|---|---|---|---|---|---|")
    for name, over in (("shipped (m3so-nb-48)", SHIPPED), ("paper size", PAPER)):
        s = run(mode="sample", k=100, overrides=over, **common)
        t = run(mode="train", batch=args.batch, overrides=over, **common)
        print(f"| {name} | {s['params'] / 1e6:.2f} M | {s['seconds']:.2f} s | {s['peak_rss_gb']:.2f} GB | "
              f"{t['seq_per_s']:.1f} seq/s ({t['seconds']:.2f} s/step, {t['peak_rss_gb']:.2f} GB) | ≤ 5 s |")


if __name__ == "__main__":
    main()
