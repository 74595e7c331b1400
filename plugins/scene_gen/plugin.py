"""Hooks of the `scene_gen` plugin (Sound2Scene / Sound2Vision). Top level stays light (no torch).

`soundsight imagine SOUND_EXPR`: sound → images of the scene (GAN or LDM back end); the
registry loaders of its architectures (image encoder, audio encoder, GAN generator, LDM,
evaluator), so ``soundsight.registry.load(name)`` builds scene-gen models in any plugin; the
recipe step `imagine` and a demo step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from soundsight.hookspecs import hookimpl
from soundsight.registry import ModelSpec
from soundsight.steps import Param, RecipeStep

from .loaders import ARCHITECTURES

ASSETS = Path(__file__).resolve().parent / "assets"
BACKENDS = ("gan", "ldm")  # also in .imagine (kept here so --help needs no import of it)


@hookimpl
def register_models(register):
    for arch, (task, loader, name, description) in ARCHITECTURES.items():
        register(ModelSpec(name=name, task=task, plugin="scene_gen", description=description,
                           architecture=arch, loader=loader))


@hookimpl
def register_commands(app):
    @app.command("imagine")
    def imagine_cmd(
        sound: str = typer.Argument(..., help="A sound file or mix expression: bark.wav+river.wav, wind.wav*2+bird.wav*0.5."),
        gain: float = typer.Option(1.0, "--gain", help="Linear gain on the whole mix: louder draws the source bigger / closer."),
        gain_db: Optional[float] = typer.Option(None, "--gain-db", help="The same gain in decibels (instead of --gain)."),
        n: int = typer.Option(1, "--n", help="Images to draw (different noise, same sound)."),
        seed: int = typer.Option(0, "--seed", help="Same seed + same sound, same images."),
        backend: Optional[str] = typer.Option(None, "--backend", help="gan (one pass; the default) or ldm "
                                              "(latent diffusion, DDIM; the default with --steps or --guidance)."),
        steps: Optional[int] = typer.Option(None, "--steps", help="DDIM steps of --backend ldm (default 25)."),
        guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance of --backend ldm "
                                                 "(default: the model's; 1 = none, higher follows the sound harder)."),
        size: Optional[int] = typer.Option(None, "--size", help="Output size in px (default: the model's). A 64 px model's "
                                           "images are upscaled to 128 when no 128 px model is installed (with a note)."),
        model: Optional[str] = typer.Option(None, "--model", help="Generator: registry name or folder (default scene-gan-64 / scene-ldm-64)."),
        anchor: Optional[float] = typer.Option(None, "--anchor", help="Pull the sound's feature toward the nearest "
                                               "training image's by this weight, 0-1 (default: the model's; 0.5 for "
                                               "scene-gan-64, which keeps the level and scale better; 0 = the paper's)."),
        instances: Optional[str] = typer.Option(None, "--instances", help="Instance bank for --anchor (default "
                                                "scene-instances-64)."),
        audio_model: Optional[str] = typer.Option(None, "--audio-model", help="Audio encoder f_A (default scene-audio-encoder-64)."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Output PNG or pattern with {i} (image number) and {seed}; "
                                          "default SOUND.imagine.png (SOUND.imagine-{i}.png for --n > 1) next to the first sound."),
        grid: Optional[Path] = typer.Option(None, "--grid", help="Also write all N images in one PNG."),
        sweep_gain: Optional[str] = typer.Option(None, "--sweep-gain", help="Gains like 0.25,1,4: one strip (--out, default "
                                                 "SOUND.imagine-sweep.png), a column per gain, a row per image, same noise."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ):
        """Imagine the scene a sound comes from (Sound2Scene): sound → audio encoder → image generator.

        The sound is resampled to 16 kHz mono and tiled or cropped to the audio encoder's 5 s. Its level is kept: the models learned that a louder source is bigger and closer, so --gain changes the picture (the training clips sit at -34 dBFS RMS for gain 1; the report gives the input's level on that scale).
        """
        from soundsight import console, session

        from .imagine import run_imagine

        report = run_imagine(sound, gain=gain, gain_db=gain_db, n=n, seed=seed, backend=backend, steps=steps,
                             guidance=guidance, size=size, model=model, anchor=anchor, instances=instances,
                             audio_model=audio_model, out=out, grid=grid,
                             sweep_gain=sweep_gain, force=force, device=session.current().device())
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        for path in report["outputs"]:
            console.out(f"wrote {path}")
        lv = report["level"]
        if lv.get("scene_gain") is not None:
            console.info(f"input level {lv['rms_dbfs']} dBFS RMS = gain {lv['scene_gain']:g} of the training scenes "
                         "(0.25 … 4: small and far … large and close)")


def _imagine_step(params: dict, ctx) -> list[Path]:
    """One PNG per item: the image (n = 1), a grid of all n, or the gain-sweep strip."""
    from .imagine import run_imagine

    n = params["n"]
    sweep = params.get("sweep_gain")
    as_grid = n > 1 and not sweep
    report = run_imagine(
        params["sound"], gain=params["gain"], gain_db=params.get("gain_db"), n=n, seed=params["seed"],
        backend=params.get("backend"), steps=params.get("steps"), guidance=params.get("guidance"), size=params.get("size"),
        model=params.get("model"), anchor=params.get("anchor"), instances=params.get("instances"),
        audio_model=params.get("audio_model"), out=None if as_grid else params["out"],
        grid=params["out"] if as_grid else None, sweep_gain=sweep, write_images=not as_grid, force=ctx.force,
        device=ctx.device, extra_provenance=ctx.provenance,
    )
    return [Path(p) for p in report["outputs"]]


@hookimpl
def register_recipe_steps(register):
    register(RecipeStep(
        name="imagine",
        run=_imagine_step,
        params={
            "sound": Param(str, kind="sound", required=True, help="Sound file or mix expression."),
            "out": Param(str, kind="output", required=True,
                         help="Output PNG: the image (n = 1), a grid of all n, or the sweep strip."),
            "n": Param(int, default=1), "seed": Param(int, default=0),
            "backend": Param(str, choices=BACKENDS, help="gan (the default when installed) or ldm"),
            "steps": Param(int), "guidance": Param(float), "size": Param(int),
            "model": Param(str), "audio_model": Param(str), "anchor": Param(float), "instances": Param(str),
            "gain": Param(float, default=1.0), "gain_db": Param(float), "sweep_gain": Param(str),
        },
        help="Imagine the scene of a sound (Sound2Scene).",
        plugin="scene_gen",
    ))


@hookimpl
def register_demo(register):
    register("imagine", _demo)


def _demo(workdir: Path) -> list[Path]:
    """Held-out recordings (bundled, CC0) → images: a sheep, a truck, both mixed, and a gain sweep."""
    import shutil

    from soundsight import console, session
    from soundsight.outputs import write_json_atomic

    from .imagine import DEFAULT_AUDIO_ENCODER, default_generator, is_installed, run_imagine, train_command

    generators = [default_generator(b, 64) for b in ("ldm", "gan")]
    missing = [m for m in (DEFAULT_AUDIO_ENCODER,) if not is_installed(m)]
    if not any(is_installed(g) for g in generators):
        missing.append(generators[1])
    if missing:
        console.warn(f"imagine demo skipped: {', '.join(missing)} not installed (train with "
                     f"`{train_command(missing[0])}`)")
        return []
    sounds = []
    for name in ("sheep.flac", "truck.flac"):
        shutil.copyfile(ASSETS / name, workdir / name)
        sounds.append(workdir / name)
    dev = session.current().device()
    common = dict(seed=0, force=True, device=dev)
    reports = [
        run_imagine(str(sounds[0]), n=4, out=str(workdir / "sheep-{i}.png"), grid=workdir / "sheep-grid.png", **common),
        run_imagine(f"{sounds[0]}+{sounds[1]}", n=4, out=str(workdir / "sheep+truck-{i}.png"),
                    grid=workdir / "sheep+truck-grid.png", **common),
        run_imagine(str(sounds[1]), n=3, sweep_gain="0.25,1,4", out=str(workdir / "truck-sweep.png"), **common),
    ]
    report_path = workdir / "imagine.json"
    write_json_atomic(report_path, reports)
    return [*sounds, *[Path(p) for r in reports for p in r["outputs"]], report_path]

