"""Recipe step declarations: what a plugin registers through ``register_recipe_steps``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# Parameter kinds:
#   "input"  – a path that must exist before the recipe runs
#   "sound"  – a mix expression (a.wav*0.5+b.wav); every source must exist
#   "inputs" – a list of paths that must exist
#   "output" – a path the step writes; used to skip finished items on resume
#   "value"  – anything else, checked against ``type``
KINDS = {"input", "sound", "inputs", "output", "value"}


@dataclass
class Param:
    type: type | tuple = str
    kind: str = "value"
    required: bool = False
    default: Any = None
    help: str = ""
    choices: tuple | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown parameter kind {self.kind!r}")


@dataclass
class StepContext:
    """What the runner hands a step: resolved device spec, seed policy, overwrite flag."""

    get_device: Callable[[], Any]  # returns the run's soundsight.device.Device (resolved once, lazily)
    force: bool = False
    provenance: dict = field(default_factory=dict)  # merge into every output's provenance

    @property
    def device(self):
        return self.get_device()


@dataclass
class RecipeStep:
    name: str
    run: Callable[[dict, StepContext], list[Path]]
    params: dict[str, Param]
    help: str = ""
    plugin: str = ""
