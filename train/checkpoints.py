"""Run checkpoints shared by every trainer.

``<run>/ckpt`` holds each module's state dict as ``<name>.safetensors``, the optimizers' (and a
grad scaler's) state plus the torch RNG in ``optim.pt`` (read back with
``torch.load(weights_only=True)``, so no pickle code runs) and ``state.json``. The folder is
written as ``.ckpt.tmp`` and swapped in by renames, so a run killed mid-write still has its
previous checkpoint.

``state.json`` also records how long the run's ``curve.jsonl`` was at the checkpoint. A resume
drops the records written after that point for steps past the checkpoint (of a run killed
between checkpoints): those steps are trained again and would otherwise appear twice. Records
of the checkpoint's own step (a final evaluation) stay.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from soundsight_train.distributed import unwrap

CURVE = "curve.jsonl"  # a run's learning curve, next to its ckpt folder


def save_checkpoint(run: Path, modules: dict, optimizers: dict, state: dict, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    tmp = run / ".ckpt.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, m in modules.items():  # a module, or a state dict of its own (e.g. the best weights so far)
        if m is not None:
            sd = m if isinstance(m, dict) else unwrap(m).state_dict()
            save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(tmp / f"{name}.safetensors"))
    opt = {name: (o.state_dict() if o is not None else None) for name, o in optimizers.items()}
    opt["torch_rng"] = torch.get_rng_state()
    opt.update(extra or {})
    torch.save(opt, tmp / "optim.pt")
    curve = run / CURVE
    if curve.is_file():
        state = {**state, "curve_bytes": curve.stat().st_size}
    (tmp / "state.json").write_text(json.dumps(state, indent=2, default=str) + "\n")
    ck, old = run / "ckpt", run / ".ckpt.old"
    if ck.exists():
        ck.rename(old)
    tmp.rename(ck)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(ck: Path, modules: dict, optimizers: dict, device) -> tuple[dict, dict]:
    """Restore modules and optimizers in place; returns (state, the optim.pt dict)."""
    from safetensors.torch import load_file

    for name, m in modules.items():
        f = ck / f"{name}.safetensors"
        if m is not None and f.is_file():
            unwrap(m).load_state_dict(load_file(str(f), device=str(device)))
    opt = torch.load(ck / "optim.pt", map_location=device, weights_only=True)
    for name, o in optimizers.items():
        if o is not None and opt.get(name) is not None:
            o.load_state_dict(opt[name])
    if opt.get("torch_rng") is not None:
        torch.set_rng_state(opt["torch_rng"].cpu())
    state = json.loads((ck / "state.json").read_text())
    rewind_curve(ck.parent / CURVE, state)
    return state, opt


def rewind_curve(curve: Path, state: dict) -> None:
    """Drop the records of steps past checkpoint ``state`` written after it; a checkpoint from
    before curve lengths were recorded leaves the curve as it is."""
    length = state.get("curve_bytes")
    if length is None or not curve.is_file() or curve.stat().st_size <= length:
        return
    with open(curve, "rb") as f:
        head, tail = f.read(length), f.read()

    def past(line: bytes) -> bool:
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut short by the kill
            return True
        if "step" in rec and "step" in state:
            return rec["step"] > state["step"]
        # a trainer with a step per phase (scene_ldm): training seconds, rounded to 0.1 in records
        return rec.get("elapsed", 0.0) > state.get("elapsed", 0.0) + 0.05

    kept = [line for line in tail.splitlines(keepends=True) if line.strip() and not past(line)]
    tmp = curve.with_suffix(".tmp")
    tmp.write_bytes(head + b"".join(kept))
    tmp.replace(curve)


# A generator / discriminator pair with a mixed-precision grad scaler (forecast, avitar): the file
# names are part of the on-disk format that old runs resume from.

def save_gan(run: Path, G, D, opt_g, opt_d, scaler, state: dict) -> None:
    scaler_state = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    save_checkpoint(run, {"gen": G, "disc": D}, {"g": opt_g, "d": opt_d}, state, extra={"scaler": scaler_state})


def load_gan(ck: Path, G, D, opt_g, opt_d, scaler, device) -> dict:
    state, opt = load_checkpoint(ck, {"gen": G, "disc": D}, {"g": opt_g, "d": opt_d}, device)
    if scaler is not None and opt.get("scaler"):
        scaler.load_state_dict(opt["scaler"])
    return state
