"""Tiny scene-gen models for command and evaluation tests, made by the real training entrypoints.

``build_scene_models(root)`` writes the toy scenes dataset of test_scene_models (coloured
squares that grow with gain, tones) and runs every stage's ``--tiny`` entrypoint into
``root/home/models`` under the default names (scene-image-encoder-64, scene-gan-64,
scene-audio-encoder-64, scene-ldm-64, scene-evaluator-64), so a ``SOUNDSIGHT_HOME=root/home``
process finds them exactly as it would find the shipped models. The GAN and the LDM are built
at 64 px, the image encoder and the evaluator at their --tiny 32 px. The session fixture
``scene_models`` (conftest.py) builds them once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from test_scene_models import write_toy_scenes

NAMES = {"fv": "scene-image-encoder-64", "gan": "scene-gan-64", "fa": "scene-audio-encoder-64",
         "ldm": "scene-ldm-64", "ev": "scene-evaluator-64"}
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None


def build_scene_models(root: Path) -> dict:
    from soundsight_train import scene_audio_encoder, scene_evaluator, scene_gan, scene_image_encoder, scene_ldm

    root = Path(root)
    toy = write_toy_scenes(root / "data" / "scenes-toy")
    home = root / "home"
    out = {k: home / "models" / name for k, name in NAMES.items()}
    common = ["--data", str(toy), "--threads", "1"]

    def run(module, key, *extra):
        code = module.main(["--tiny", *common, "--out", str(out[key]), "--run-dir", str(root / "runs" / key), *extra])
        assert code == 0, f"{module.__name__} --tiny failed"

    run(scene_image_encoder, "fv", "--steps", "2")
    fv = ("--image-encoder", str(out["fv"]))
    run(scene_gan, "gan", *fv, "--size", "64")
    run(scene_audio_encoder, "fa", *fv)
    if HAS_DIFFUSERS:
        run(scene_ldm, "ldm", *fv, "--size", "64")
    else:
        del out["ldm"]
    run(scene_evaluator, "ev")
    return {"root": root, "toy": toy, "home": home, "env": {"SOUNDSIGHT_HOME": str(home)}, **out}
