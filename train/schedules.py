"""Learning-rate schedules shared by the trainers."""

from __future__ import annotations


def linear_decay(step: int, steps: int, decay_from: int) -> float:
    """Multiplier of the learning rates at ``step``: 1, then linear to 0 at ``steps`` from
    ``decay_from`` (0: constant). A constant-rate run plateaus while its weights still wander
    around the minimum; a decay phase lets them settle."""
    if decay_from <= 0 or step < decay_from:
        return 1.0
    return max(0.0, (steps - step) / max(1, steps - decay_from))


def check_decay_from(decay_from: int, steps: int) -> None:
    if decay_from and not 0 < decay_from < steps:
        raise SystemExit(f"error: --decay-from must be between 1 and --steps - 1 ({steps - 1}), got {decay_from}")


def decay_text(decay_from: int, steps: int) -> str:
    return f"constant to step {decay_from}, then linear to 0 at step {steps}" if decay_from > 0 else "constant"


def set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr
