"""Run checkpoints shared by every trainer.

``<run>/ckpt`` holds each module's state dict as ``<name>.safetensors``, the optimizers' (and a
grad scaler's) state plus the torch RNG in ``optim.pt`` (read back with
``torch.load(weights_only=True)``, so no pickle code runs) and ``state.json``. The folder is
written as ``.ckpt.tmp`` and swapped in by renames, so a run killed mid-write still has its
previous checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from soundsight_train.distributed import unwrap


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
    return json.loads((ck / "state.json").read_text()), opt


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
