"""Hooks of the `scene_gen` plugin (Sound2Scene / Sound2Vision). Top level stays light (no torch).

For now: the registry loaders of its four architectures (image encoder, audio encoder, GAN
generator, LDM), so ``soundsight.registry.load(name)`` builds scene-gen models in any plugin.
"""

from __future__ import annotations

from soundsight.hookspecs import hookimpl
from soundsight.registry import ModelSpec

from .loaders import ARCHITECTURES


@hookimpl
def register_models(register):
    for arch, (task, loader, name, description) in ARCHITECTURES.items():
        register(ModelSpec(name=name, task=task, plugin="scene_gen", description=description,
                           architecture=arch, loader=loader))
