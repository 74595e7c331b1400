"""Core speed and memory: CLI start-up, import time, audio decode + resample throughput.

    python benchmarks/bench_core.py [--minutes 10] [--repeat 7]

Prints a markdown table. Goals (issue 2): `soundsight --help` ≤ 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


MEASURE = r"""
import json, resource, sys, time
from soundsight.audio import load_audio, stream_audio
path, mode = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if mode == "load":
    x, sr = load_audio(path, sr=16000, channels=1)
    n = x.shape[-1]
else:
    n = sum(b.shape[-1] for b in stream_audio(path, block_seconds=10.0, sr=16000, channels=1))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "samples": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def decode(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    rows = []
    help_s = wall([sys.executable, "-m", "soundsight", "--help"], args.repeat)
    rows.append(("`soundsight --help` wall (median)", f"{help_s:.3f} s", "≤ 0.3 s"))
    import_s = wall([sys.executable, "-c", "import soundsight.cli"], args.repeat) - wall([sys.executable, "-c", "pass"], args.repeat)
    rows.append(("`import soundsight.cli` (over bare interpreter)", f"{import_s:.3f} s", ""))

    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        seconds = args.minutes * 60
        sr = 44100
        path = Path(tmp) / "long.flac"
        rng = np.random.default_rng(0)
        with sf.SoundFile(path, "w", samplerate=sr, channels=2, subtype="PCM_16") as f:
            for start in range(0, int(seconds * sr), sr * 30):
                n = min(sr * 30, int(seconds * sr) - start)
                t = (start + np.arange(n)) / sr
                tone = 0.3 * np.sin(2 * np.pi * 440 * t)
                f.write(np.stack([tone, tone], 1) + 0.01 * rng.standard_normal((n, 2)))
        for mode in ("load", "stream"):
            r = decode(path, mode)
            rows.append((f"{args.minutes:g}-min 44.1 kHz stereo FLAC → 16 kHz mono ({mode})",
                         f"{seconds / r['seconds']:.0f}x real time ({r['seconds']:.2f} s), peak RSS {r['peak_rss_mb']:.0f} MB", ""))

    print("| measure | result | goal |\n|---|---|---|")
    for name, value, goal in rows:
        print(f"| {name} | {value} | {goal} |")


if __name__ == "__main__":
    main()
