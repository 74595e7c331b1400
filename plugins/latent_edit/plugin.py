"""Hooks of the `latent_edit` plugin (Sound2Scene / Sound2Vision §5.2). Top level stays light (no torch).

`soundsight edit photo.jpg --sound falls.wav`: invert the photo into scene-gen's generator,
then move its condition toward the sound (insert) or along the sound's volume direction.
scene-gen's models are loaded by name through the registry; nothing is imported from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from soundsight.hookspecs import hookimpl
from soundsight.steps import Param, RecipeStep

COMPOSITES = ("masked", "residual", "none")
INSERT_RULES = ("mix", "add")
REFINE_STEPS = 100  # per-image generator fine-tuning steps of --refine
DEFAULT_STRENGTH = {"insert": 0.5, "volume": 1.0}
# An insert draws its object in a region and keeps the rest of the picture (eval_edit: the same
# insert success, SSIM outside the object 0.81-0.92 against 0.25-0.62 for the whole picture);
# a volume edit moves the object the photo already has, and measured better on the whole picture.
DEFAULT_REGION = {"insert": "auto", "volume": "none"}


def _edit_mode(louder: bool, quieter: bool, gains: Optional[str]):
    from soundsight.errors import InputError

    from .pipeline import LOUDER, QUIETER, parse_gains

    if sum(bool(x) for x in (louder, quieter, gains)) > 1:
        raise InputError("give at most one of --louder, --quieter and --gains")
    if gains:
        return "volume", parse_gains(gains)
    if louder:
        return "volume", LOUDER
    if quieter:
        return "volume", QUIETER
    return "insert", (1.0, 1.0)


def run_edit_command(image: Path, sound: str, *, strength: Optional[float] = None, louder: bool = False,
                     quieter: bool = False, gains: Optional[str] = None, sweep: Optional[str] = None,
                     steps: Optional[int] = None, refine: bool = False, seed: int = 0, gain: float = 1.0,
                     composite: str = "masked", rule: str = "mix", region: Optional[str] = None,
                     generator: Optional[str] = None, image_encoder: Optional[str] = None,
                     audio_encoder: Optional[str] = None, out: Optional[Path] = None, strip: Optional[Path] = None,
                     force: bool = False, device=None, extra_provenance: Optional[dict] = None) -> dict:
    """The whole command: validate everything, load, invert, edit, write. Returns the JSON report."""
    import math
    import time

    from soundsight import console
    from soundsight.audio import parse_mix
    from soundsight.errors import InputError
    from soundsight.image import save_image
    from soundsight.inputs import check_input_file
    from soundsight.outputs import check_output, make_provenance

    from . import pipeline as P

    t_start = time.perf_counter()
    # --- arguments (cheap checks first: nothing is loaded or written before they pass)
    if composite not in COMPOSITES:
        raise InputError(f"--composite must be one of {', '.join(COMPOSITES)}, got {composite!r}")
    if rule not in INSERT_RULES:
        raise InputError(f"--rule must be one of {', '.join(INSERT_RULES)}, got {rule!r}")
    if steps is not None and not 0 <= steps <= 100000:
        raise InputError(f"--steps must be between 0 and 100000, got {steps}")
    if not (math.isfinite(gain) and gain > 0):
        raise InputError(f"--gain must be a positive number, got {gain}")
    mode, gain_pair = _edit_mode(louder, quieter, gains)
    if strength is None:
        strength = DEFAULT_STRENGTH[mode]
    region_value = P.parse_region(DEFAULT_REGION[mode] if region is None else region)
    region_report = region_value if isinstance(region_value, str) else list(region_value)
    if not math.isfinite(strength):
        raise InputError(f"--strength must be a finite number, got {strength}")
    sweep_values = P.parse_strengths(sweep) if sweep else None
    image = Path(image)
    check_input_file(image, "image file")
    sources = [Path(p) for p, _ in parse_mix(sound)]  # bad expression / missing file → one line
    inputs = [image, *sources]
    out = Path(out) if out else image.with_name(f"{image.stem}.edit.png")
    if sweep_values is not None and strip is None:
        strip = image.with_name(f"{image.stem}.edit-strip.png")
    check_output(out, force=force, inputs=inputs)
    if strip is not None:
        strip = Path(strip)
        check_output(strip, force=force, inputs=inputs)
        if strip.resolve() == out.resolve():
            raise InputError("--out and --strip name the same file")
        if sweep_values is None:
            sweep_values = list(P.DEFAULT_SWEEP)

    # --- inputs and models
    folders = P.resolve_models({"generator": generator, "image_encoder": image_encoder,
                                "audio_encoder": audio_encoder})
    photo = P.load_photo(image)
    sr = int(folders["audio_encoder"].config.get("sample_rate", 16000))
    wave = P.load_sound(sound, sr, gain=gain)
    warning = P.conditioning_mismatch(folders)
    if warning:
        console.warn(warning)
    if device is None:
        from soundsight import session

        device = session.current().device()
    t_load = time.perf_counter()
    models = P.load_models(folders, device)
    t_models = time.perf_counter()

    strengths = [strength] + [s for s in (sweep_values or []) if s != strength]
    result = P.run_edit(photo, wave, models, mode=mode, strengths=strengths, gains=gain_pair, steps=steps,
                        refine=REFINE_STEPS if refine else 0, seed=seed, device=device, composite_how=composite,
                        rule=rule, region=region_value)

    # --- outputs
    insert_rule = rule if mode == "insert" else None  # a volume edit has no insert rule
    params = {"image": str(image), "sound": sound, "mode": mode, "strength": strength, "gains": list(gain_pair),
              "sweep": sweep_values, "steps": result.inversion["steps"], "refine": refine, "seed": seed,
              "gain": gain, "composite": composite, "rule": insert_rule,
              "region": region_report}
    prov = make_provenance(models={f.name: f.provenance() for f in folders.values()}, seed=seed, params=params)
    prov.update(extra_provenance or {})
    save_image(out, result.composites[0], provenance=prov)
    written = [str(out)]
    if strip is not None:
        order = [strengths.index(s) for s in sweep_values]
        view = P.EditResult(**{**result.__dict__, "edits": result.edits[order], "strengths": sweep_values,
                               "regions": [result.regions[i] for i in order] if result.regions else []})
        save_image(strip, P.strip_image(view), provenance=prov)
        written.append(str(strip))
    t_end = time.perf_counter()

    import torch

    change = float((result.edits[0] - result.recon[0]).abs().mean())
    return {
        "image": str(image), "sound": sound, "mode": mode, "rule": insert_rule,
        "strength": strength,
        "gains": list(gain_pair) if mode == "volume" else None, "sweep": sweep_values,
        "photo_size": [int(photo.shape[1]), int(photo.shape[0])], "edited_box": list(result.box),
        "model_size": int(result.target.shape[-1]),
        "models": {role: {"name": f.name, "path": str(f.path), "sha256": f.sha256()} for role, f in folders.items()},
        "device": str(device), "seed": seed,
        "inversion": result.inversion,
        "edit_mean_abs_change": round(change, 4),
        "region": region_report,
        "region_boxes_model_px": result.regions or None,
        "sound_level": P.sound_level(wave, folders["audio_encoder"]),
        "timings": {"load_inputs_s": round(t_load - t_start, 3), "load_models_s": round(t_models - t_load, 3),
                    **result.timings, "write_s": round(t_end - t_models - sum(result.timings.values()), 3),
                    "total_s": round(t_end - t_start, 3), "threads": torch.get_num_threads()},
        "outputs": written,
    }


@hookimpl
def register_commands(app):
    @app.command("edit")
    def edit_cmd(
        image: Path = typer.Argument(..., help="The photo to edit (any size; the centred square is edited)."),
        sound: str = typer.Option(..., "--sound", "-s", help="The sound: a file or mix expression (a.wav+b.wav*0.5). "
                                  "Its level matters: louder means a bigger, closer source."),
        strength: Optional[float] = typer.Option(None, "--strength", help="λ of the edit (default 0.5 for an insert, "
                                                 "1 for a volume edit)."),
        louder: bool = typer.Option(False, "--louder", help="Volume edit: move along z_A(2x) - z_A(x/2) (bigger / closer)."),
        quieter: bool = typer.Option(False, "--quieter", help="Volume edit: move along z_A(x/2) - z_A(2x) (smaller / farther)."),
        gains: Optional[str] = typer.Option(None, "--gains", help="Volume edit with explicit gains G1,G2: z_V + λ (z_A(G1) - z_A(G2))."),
        sweep: Optional[str] = typer.Option(None, "--sweep", help="Strengths for a strip, e.g. 0,0.25,0.5,0.75,1 "
                                            "(written to --strip, default IMAGE.edit-strip.png)."),
        steps: Optional[int] = typer.Option(None, "--steps", help="Inversion steps (default 150: a few seconds at 64 px on a CPU)."),
        refine: bool = typer.Option(False, "--refine", help=f"Also fine-tune the generator on this photo ({REFINE_STEPS} "
                                    "steps): a closer reconstruction, slower."),
        seed: int = typer.Option(0, "--seed", help="Same seed, same result."),
        gain: float = typer.Option(1.0, "--gain", help="Linear gain on the whole sound before it is embedded."),
        rule: str = typer.Option("mix", "--rule", help="Insert rule: mix, z = (1-λ) z_V + λ z_A (the paper's; "
                                 "the scene drifts toward the sound's), or add, z = z_V + λ (z_A - μ): the sound's "
                                 "departure from the mean scene feature μ, added, so the photo's scene is kept."),
        region: Optional[str] = typer.Option(None, "--region", help="Where the edit acts, in latent space: auto (the square "
                                             "where the whole-picture edit drew its change; the default for an insert), "
                                             "X0,Y0,X1,Y1 (fractions of the photo) or none (the whole picture; the "
                                             "default for a volume edit). Outside it the photo's own condition is kept."),
        composite: str = typer.Option("masked", "--composite", help="How the edit goes back onto the photo: masked "
                                      "(photo + change, the edit itself where it changed a lot), residual (photo + change), "
                                      "none (the upscaled edit)."),
        generator: Optional[str] = typer.Option(None, "--generator", help="Generator (registry name or folder; default scene-gan-64)."),
        image_encoder: Optional[str] = typer.Option(None, "--image-encoder", help="Image encoder f_V (default scene-image-encoder-64)."),
        audio_encoder: Optional[str] = typer.Option(None, "--audio-encoder", help="Audio encoder f_A (default scene-audio-encoder-64)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Edited photo, at the photo's size (default IMAGE.edit.png)."),
        strip: Optional[Path] = typer.Option(None, "--strip", help="Also write a strip: photo, reconstruction, the edit at each "
                                             "--sweep strength (default 0,0.25,0.5,0.75,1)."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
        as_json: bool = typer.Option(False, "--json", help="Print the report: inversion PSNR/SSIM at model size, models, timings."),
    ):
        """Edit a photo with a sound: GAN inversion into scene-gen's generator, then a sound-driven latent edit.

        Insert (default): z = (1-λ) z_V + λ z_A(sound) (--rule mix), or z = z_V + λ (z_A(sound) - μ) (--rule add, keeps the photo's scene), keeping the inverted noise. Volume (--louder, --quieter, --gains): z = z_V + λ (z_A(G1) - z_A(G2)) (Sound2Vision §5.2).

        The centred square of the photo is inverted and edited at the model's size (64 px) and composited back onto the photo at its own size; the rest of the photo is kept.
        """
        from soundsight import console, session

        report = run_edit_command(image, sound, strength=strength, louder=louder, quieter=quieter, gains=gains,
                                  sweep=sweep, steps=steps, refine=refine, seed=seed, gain=gain, composite=composite,
                                  rule=rule, region=region,
                                  generator=generator, image_encoder=image_encoder, audio_encoder=audio_encoder,
                                  out=out, strip=strip, force=force, device=session.current().device())
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        for path in report["outputs"]:
            console.out(f"wrote {path}")
        inv = report["inversion"]
        console.out(f"inversion at {report['model_size']} px: PSNR {inv['psnr']:.2f} dB, SSIM {inv['ssim']:.3f} "
                    f"({inv['steps']} steps{', refined' if inv['refine_steps'] else ''}, {inv['seconds']:.1f} s)")


def _edit_step(params: dict, ctx) -> list[Path]:
    report = run_edit_command(
        Path(params["image"]), params["sound"], strength=params.get("strength"), louder=params["louder"],
        quieter=params["quieter"], gains=params.get("gains"), sweep=params.get("sweep"), steps=params.get("steps"),
        refine=params["refine"], seed=params["seed"], gain=params["gain"], composite=params["composite"],
        rule=params["rule"], region=params.get("region"), generator=params.get("generator"),
        image_encoder=params.get("image_encoder"),
        audio_encoder=params.get("audio_encoder"), out=Path(params["out"]),
        strip=Path(params["strip"]) if params.get("strip") else None, force=ctx.force, device=ctx.device,
        extra_provenance=ctx.provenance)
    return [Path(p) for p in report["outputs"]]


@hookimpl
def register_recipe_steps(register):
    register(RecipeStep(
        name="edit",
        run=_edit_step,
        params={
            "image": Param(str, kind="input", required=True, help="Photo to edit."),
            "sound": Param(str, kind="sound", required=True, help="Sound file or mix expression."),
            "out": Param(str, kind="output", required=True, help="Edited photo."),
            "strip": Param(str, kind="output", help="Optional strip PNG (photo, reconstruction, sweep)."),
            "strength": Param(float), "louder": Param(bool, default=False), "quieter": Param(bool, default=False),
            "gains": Param(str), "sweep": Param(str), "steps": Param(int), "refine": Param(bool, default=False),
            "seed": Param(int, default=0), "gain": Param(float, default=1.0),
            "composite": Param(str, default="masked", choices=COMPOSITES),
            "rule": Param(str, default="mix", choices=INSERT_RULES),
            "region": Param(str, help="auto (an insert's default), none (a volume edit's) or X0,Y0,X1,Y1 "
                                      "(fractions of the photo)."),
            "generator": Param(str), "image_encoder": Param(str), "audio_encoder": Param(str),
        },
        help="Insert a sound's source into a photo, or move it along the sound's volume direction.",
        plugin="latent_edit",
    ))


@hookimpl
def register_demo(register):
    register("edit", _demo)


def _demo_photo(path: Path) -> Path:
    """A real photo: a MATE nature background if installed, else skimage's coffee, else a drawn scene."""
    import numpy as np

    from soundsight.image import save_image

    mate = Path("/usr/share/backgrounds/mate/nature/GreenMeadow.jpg")
    if mate.is_file():
        from soundsight.image import load_image

        img = load_image(mate)
        img.thumbnail((480, 480))
        save_image(path, img)
        return path
    try:
        from skimage import data

        save_image(path, data.coffee())
        return path
    except Exception:
        pass
    h, w = 240, 320  # sky over a meadow
    y = np.linspace(0, 1, h)[:, None, None]
    sky = np.array([110, 160, 230]) * (1 - y) + np.array([200, 220, 250]) * y
    grass = np.array([60, 130, 50]) * np.ones((h, w, 3))
    img = np.where(np.arange(h)[:, None, None] < h * 0.55, sky, grass)
    save_image(path, img.astype(np.uint8))
    return path


def _demo_sound(path: Path) -> Path:
    """A bundled scene-gen sound if there is one, else synthesised bird chirps (at about twice the
    training reference level)."""
    import shutil

    import numpy as np

    from soundsight.audio import save_audio

    assets = Path(__file__).resolve().parents[1] / "scene_gen" / "assets"
    for ext in ("*.wav", "*.flac", "*.ogg"):
        found = sorted(assets.glob(ext)) if assets.is_dir() else []
        if found:
            dest = path.with_suffix(found[0].suffix)
            shutil.copyfile(found[0], dest)
            return dest
    sr = 16000
    t = np.arange(int(0.12 * sr)) / sr
    chirp = np.sin(2 * np.pi * (2500 * t + 6000 * t ** 2)) * np.hanning(len(t))
    x = np.zeros(2 * sr)
    for start in (0.1, 0.35, 0.6, 1.2, 1.45):
        i = int(start * sr)
        x[i:i + len(chirp)] += chirp
    x *= 0.04 / np.sqrt(np.mean(x ** 2))
    save_audio(path, x.astype(np.float32), sr)
    return path


def _demo(workdir: Path) -> list[Path]:
    """Insert a sound into a photo with the installed scene-gen models (skipped when they are not)."""
    from soundsight import console, session
    from soundsight.errors import ModelError
    from soundsight.outputs import write_json_atomic

    from .pipeline import resolve_models

    try:
        resolve_models()
    except ModelError as exc:
        note = workdir / "skipped.txt"
        note.write_text(f"edit demo skipped: {exc}\n")
        console.warn(f"edit demo skipped: {exc}")
        return [note]
    photo = _demo_photo(workdir / "photo.jpg")
    sound = _demo_sound(workdir / "sound.wav")
    report = run_edit_command(photo, str(sound), out=workdir / "edit.png", strip=workdir / "edit-strip.png",
                              force=True, device=session.current().device())
    path = write_json_atomic(workdir / "edit.json", report)
    return [photo, sound, *map(Path, report["outputs"]), path]
