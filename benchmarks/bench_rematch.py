"""`soundsight rematch` speed and memory: real-time factor per mode on 10 s and 10 min of speech,
peak memory on a one-hour input.

    python benchmarks/bench_rematch.py [--threads 2] [--hour] [--hour-modes like,ir,room-ir] [--json out.json]

Goals (issue 4): real-time factor <= 0.02 on 2 CPU cores (10 s and 10 min of speech); peak
memory <= 1.5 GB for a one-hour input. Speech is the bundled real voice (44.1 kHz, mono for the
speed rows, stereo for the hour) repeated with pauses. Modes: ``like`` (blind reverberator from a
reverberant recording), ``ir`` (measured IR, pedalboard), ``room-params`` (picture -> room
parameters), ``room-ir`` and ``room-waveform`` (the
model; the shipped ``rooms-avitar-16k`` when installed, else random weights of its configuration:
speed does not depend on the weights). Each row runs in its own process (peak RSS from
``resource.getrusage`` is that row's alone) and times ``run_rematch`` after a warm-up run on 1 s
(imports and first-call costs excluded); estimates/report off, as in a plain run. The real-time
factor is wall seconds / input seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "plugins" / "acoustic_match" / "assets"

ROW = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
from soundsight_plugins.acoustic_match.rematch import Request, run_rematch
kw = args["kw"]
dev = None
if "room" in kw:  # only the model rows import torch (as the command does)
    from soundsight.device import resolve_device
    dev = resolve_device("cpu", threads=args["threads"])
def go(audio, out):
    return run_rematch(Request(audio=audio, out=out, force=True, estimates=False, **kw), device=dev)
go(args["warm"], args["out"])
t = time.perf_counter()
rep = go(args["audio"], args["out"])
sec = time.perf_counter() - t
print(json.dumps({"seconds": sec, "input_s": rep["input_duration_s"], "output_s": rep["output_duration_s"],
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}))
"""


def speech(seconds: float, channels: int = 1) -> tuple[np.ndarray, int]:
    import soundfile as sf

    v, sr = sf.read(str(ASSETS / "voice.flac"), dtype="float32")
    unit = np.concatenate([v, np.zeros(int(0.6 * sr), np.float32)])
    n = int(seconds * sr)
    x = np.tile(unit, n // len(unit) + 1)[:n]
    return (x if channels == 1 else np.stack([x, 0.8 * x], axis=1)), sr


def write_long(path: Path, seconds: float, channels: int) -> None:
    """A long file written in minutes (never held in memory whole)."""
    import soundfile as sf

    minute, sr = speech(60.0, channels)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=channels, subtype="PCM_16") as f:
        for _ in range(int(seconds // 60)):
            f.write(minute)


def make_inputs(d: Path, hour: bool) -> dict:
    import soundfile as sf

    from soundsight_plugins.acoustic_match import acoustics as ac
    from soundsight.audio import load_audio, resample

    files = {}
    for name, sec in (("warm", 1.0), ("10s", 10.0), ("10min", 600.0)):
        x, sr = speech(sec)
        files[name] = d / f"{name}.wav"
        sf.write(str(files[name]), x, sr, subtype="PCM_16")
    if hour:
        files["1h"] = d / "1h-stereo.wav"
        write_long(files["1h"], 3600.0, 2)
    x, sr = speech(8.0)
    h, hsr = load_audio(ASSETS / "room27-ir.flac")
    ref = ac.convolve(x, resample(h, hsr, sr)[0])
    files["reference"] = d / "reference.wav"
    sf.write(str(files["reference"]), 0.5 * ref / np.abs(ref).max(), sr, subtype="PCM_16")
    return files


def model_home(d: Path) -> tuple[dict, str]:
    """Environment for the model rows: the shipped model if installed, else random weights of
    the shipped configuration in a temporary SOUNDSIGHT_HOME."""
    from soundsight import registry
    from soundsight.errors import ModelError

    try:
        registry.resolve("rooms-avitar-16k", task="acoustic-match")
        return {}, "rooms-avitar-16k (shipped)"
    except ModelError:
        pass
    import torch

    from soundsight_plugins.acoustic_match.avitar import AViTAR, AViTARConfig

    cfg = AViTARConfig.preset("cpu")
    model = AViTAR(cfg).eval()
    registry.save_model(d / "home" / "models" / "rooms-avitar-16k", name="rooms-avitar-16k", task="acoustic-match",
                        architecture="avitar", config=cfg.to_dict(), tensors={"model.safetensors": model.state_dict()})
    n = sum(p.numel() for p in model.parameters())
    del torch
    return {"SOUNDSIGHT_HOME": str(d / "home")}, f"random weights, shipped configuration ({n / 1e6:.2f} M parameters)"


MODES = {
    "like": lambda f: {"like": str(f["reference"])},
    "ir": lambda f: {"ir": str(ASSETS / "room27-ir.flac")},
    "room-params": lambda f: {"room": str(ASSETS / "room27.png"), "mode": "params"},
    "room-ir": lambda f: {"room": str(ASSETS / "room27.png"), "mode": "ir"},
    "room-waveform": lambda f: {"room": str(ASSETS / "room27.png"), "mode": "waveform"},
}


def run_row(mode: str, audio: Path, files: dict, d: Path, threads: int, env: dict) -> dict:
    args = {"threads": threads, "kw": MODES[mode](files), "warm": str(files["warm"]), "audio": str(audio),
            "out": str(d / "out.wav")}
    full_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **env}
    p = subprocess.run([sys.executable, "-c", ROW, json.dumps(args)], capture_output=True, text=True, env=full_env)
    if p.returncode != 0:
        raise SystemExit(f"{mode} on {audio.name} failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["rtf"] = out["seconds"] / out["input_s"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hour", action="store_true", help="also the one-hour stereo input (peak memory)")
    ap.add_argument("--hour-modes", default="like,ir,room-ir", help="modes for the hour (room-waveform takes long)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--lengths", default="10s,10min")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-rematch-") as tmp:
        d = Path(tmp)
        files = make_inputs(d, a.hour)
        env, model_note = model_home(d)
        plan = [(m, n) for n in a.lengths.split(",") for m in a.modes.split(",")]
        if a.hour:
            plan += [(m, "1h") for m in a.hour_modes.split(",")]
        print(f"model rows: {model_note}; {a.threads} threads; input 44.1 kHz (mono, the hour stereo)", flush=True)
        print("| mode | input | wall (s) | real-time factor | peak RSS (GB) |")
        print("|---|---|---|---|---|", flush=True)
        for mode, length in plan:
            r = run_row(mode, files[length], files, d, a.threads, env if mode.startswith("room") else {})
            r.update(mode=mode, input=length)
            rows.append(r)
            print(f"| {mode} | {length} | {r['seconds']:.2f} | {r['rtf']:.4f} | {r['peak_rss_gb']:.2f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"model": model_note, "threads": a.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
