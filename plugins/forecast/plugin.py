"""Hooks of the `forecast` plugin (Sound2Sight)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from soundsight.hookspecs import hookimpl
from soundsight.registry import ModelSpec
from soundsight.steps import Param, RecipeStep


DEFAULT_MODEL = "m3so-nb-48"
ASSETS = Path(__file__).resolve().parent / "assets"
PICKS = ("best", "first", "all")


def run_forecast(clip: Path, *, seen: Optional[int], predict: Optional[int], samples: int, pick: str,
                 audio: Optional[str], model_name: str, seed: int, out: Optional[Path], strip: Optional[Path],
                 upscale: bool, force: bool, device, extra_provenance: Optional[dict] = None) -> dict:
    """The whole command: validate, load, sample, write. Returns the JSON report."""
    from soundsight import registry
    from soundsight.errors import InputError
    from soundsight.image import save_image
    from soundsight.outputs import check_output, make_provenance
    from soundsight.video import write_video

    from .pipeline import forecast, load_clip_for_model, strip_image, video_frames

    if pick not in PICKS:
        raise InputError(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    if samples < 1:
        raise InputError("--samples must be at least 1")
    clip = Path(clip)
    inputs = [clip] + ([Path(audio)] if audio and Path(audio).exists() else [])
    out = Path(out) if out else clip.with_name(f"{clip.stem}.forecast.mp4")
    check_output(out, force=force, inputs=inputs)
    if strip:
        check_output(strip, force=force, inputs=inputs)

    folder = registry.resolve(model_name, task="frame-forecast")
    cfg_seen = folder.config.get("n_past", 5)
    seen = cfg_seen if seen is None else seen
    predict = folder.config.get("n_eval", 25) if predict is None else predict
    max_len = folder.config.get("max_len", 512)
    if predict < 1:
        raise InputError("--predict must be at least 1")
    if not 2 <= seen <= max_len - predict:
        raise InputError(f"--seen {seen} is outside what {folder.name} supports (2..{max_len - predict} with --predict {predict})")

    model = registry.load(folder, device)  # already verified above
    cfg = model.cfg
    frames, chunks, meta = load_clip_for_model(clip, cfg, seen, predict, audio)
    result = forecast(model, cfg, frames, chunks, seen=seen, predict=predict, samples=samples, seed=seed,
                      pick=pick, device=device)

    params = {"clip": str(clip), "seen": seen, "predict": predict, "samples": samples, "pick": pick,
              "audio": audio, "seed": seed, "upscale": upscale}
    prov = make_provenance(models={folder.name: folder.provenance()}, seed=seed, params=params)
    prov.update(extra_provenance or {})  # a recipe's own parameters and digest decide resume
    size = (meta["width"], meta["height"]) if upscale else None
    vid = video_frames(result, size)
    write_video(out, vid, result.fps, audio=result.audio[None, :], sr=result.sample_rate, provenance=prov)
    written = [str(out)]
    if strip:
        save_image(strip, strip_image(result), provenance=prov)
        written.append(str(strip))
    if seen != cfg_seen:
        from soundsight import console

        console.warn(f"{folder.name} was trained with {cfg_seen} seen frames; --seen {seen} may forecast worse")
    return {"clip": str(clip), "model": folder.name, "device": str(device), "seen": seen, "predict": predict,
            "samples": samples, "picked": result.picked, "fps": result.fps, "size": cfg.image_size,
            "real_future_frames": 0 if result.truth is None else len(result.truth),
            "metrics": result.metrics, "outputs": written}


@hookimpl
def register_commands(app):
    @app.command("forecast")
    def forecast_cmd(
        clip: Path = typer.Argument(..., help="A video with sound (any resolution, fps and container ffmpeg reads)."),
        seen: Optional[int] = typer.Option(None, "--seen", help="Frames given to the model (default: the model's, 5 for m3so-nb-48)."),
        predict: Optional[int] = typer.Option(None, "--predict", help="Frames to forecast (default: the model's test horizon, 25)."),
        samples: int = typer.Option(10, "--samples", "-k", help="Futures to draw, all in one batched pass (the paper uses 100)."),
        pick: str = typer.Option("best", "--pick", help="best: the sample closest to the real future (falls back to first "
                                 "when the clip ends after the seen frames); first; all: tiled in one video."),
        audio: Optional[str] = typer.Option(None, "--audio", help="Soundtrack to use instead of the clip's (a file or mix expression)."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", help="Registry name or folder of a frame-forecast model."),
        seed: int = typer.Option(0, "--seed", help="Same seed, same futures."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output mp4 (default CLIP.forecast.mp4): seen frames, then the forecast, with the clip's audio."),
        strip: Optional[Path] = typer.Option(None, "--strip", help="Also write a PNG: seen frames, then one row per sample."),
        upscale: bool = typer.Option(False, "--upscale", help="Scale the output video back to the clip's size."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
        as_json: bool = typer.Option(False, "--json", help="Print the report (and per-frame SSIM/PSNR) as JSON."),
    ):
        """Forecast the next frames of a clip from its first frames and its whole soundtrack (Sound2Sight).

        The clip is resampled to the model's frame rate and size (m3so-nb-48: 10 fps, 48x48 grey, audio 4400 Hz, 440 samples per frame); audio chunk t is the sound during frame t.

        If the clip goes on past the forecast, per-frame SSIM/PSNR of the picked sample against the real frames are printed (the paper's protocol).
        """
        from soundsight import console, session

        report = run_forecast(clip, seen=seen, predict=predict, samples=samples, pick=pick, audio=audio,
                              model_name=model, seed=seed, out=out, strip=strip, upscale=upscale, force=force,
                              device=session.current().device())
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        for path in report["outputs"]:
            console.out(f"wrote {path}")
        m = report["metrics"]
        if m:
            console.out(f"sample {m['best_sample']} of {report['samples']} is closest to the real future; "
                        f"mean SSIM {m['ssim_best_mean']:.4f}, PSNR {m['psnr_best_mean']:.2f} dB")
            console.out("frame  " + " ".join(f"{f:>6d}" for f in m["frames"]))
            console.out("SSIM   " + " ".join(f"{v:6.3f}" for v in m["ssim_best"]))
            console.out("PSNR   " + " ".join(f"{v:6.2f}" for v in m["psnr_best"]))


def _forecast_step(params: dict, ctx) -> list[Path]:
    report = run_forecast(
        Path(params["clip"]), seen=params.get("seen"), predict=params.get("predict"), samples=params["samples"],
        pick=params["pick"], audio=params.get("audio"), model_name=params["model"], seed=params["seed"],
        out=Path(params["out"]), strip=Path(params["strip"]) if params.get("strip") else None,
        upscale=params["upscale"], force=ctx.force, device=ctx.device, extra_provenance=ctx.provenance,
    )
    return [Path(p) for p in report["outputs"]]


@hookimpl
def register_recipe_steps(register):
    register(RecipeStep(
        name="forecast",
        run=_forecast_step,
        params={
            "clip": Param(str, kind="input", required=True, help="Video with sound."),
            "out": Param(str, kind="output", required=True, help="Output mp4."),
            "strip": Param(str, kind="output", help="Optional PNG strip."),
            "seen": Param(int), "predict": Param(int),
            "samples": Param(int, default=10), "pick": Param(str, default="best", choices=PICKS),
            "audio": Param(str, kind="sound"), "model": Param(str, default=DEFAULT_MODEL),
            "seed": Param(int, default=0), "upscale": Param(bool, default=False),
        },
        help="Forecast future frames of a clip from its soundtrack.",
        plugin="forecast",
    ))


def _load_sound2sight(folder, device):
    from .model import Sound2Sight

    return Sound2Sight.from_registry(folder, device.torch_device)


@hookimpl
def register_models(register):
    register(ModelSpec(name=DEFAULT_MODEL, task="frame-forecast", plugin="forecast",
                       description="Sound2Sight trained on M3SO-NB, 48 px",
                       architecture="sound2sight", loader=_load_sound2sight))
    register(ModelSpec(name="m3so-48", task="frame-forecast", plugin="forecast",
                       description="Sound2Sight trained on M3SO (with the block), 48 px; --seen 30 --predict 40",
                       architecture="sound2sight"))
    register(ModelSpec(name="m3so-nb-48-noaudio", task="frame-forecast", plugin="forecast",
                       description="the no-audio ablation of m3so-nb-48 (the evaluation's baseline): frames only, silent clips work",
                       architecture="sound2sight"))
    register(ModelSpec(name="m3so-48-noaudio", task="frame-forecast", plugin="forecast",
                       description="the no-audio ablation of m3so-48 (the M3SO evaluation's baseline); --seen 30 --predict 40",
                       architecture="sound2sight"))


@hookimpl
def register_demo(register):
    register("forecast", _demo)


def _demo(workdir: Path) -> list[Path]:
    """Forecast 25 frames of a held-out M3SO clip (bundled) from 5 seen frames + its sound."""
    import shutil

    from soundsight import session
    from soundsight.outputs import write_json_atomic

    clip = workdir / "m3so-test.mp4"
    shutil.copyfile(ASSETS / "m3so-test.mp4", clip)
    report = run_forecast(clip, seen=None, predict=None, samples=100, pick="best", audio=None,
                          model_name=DEFAULT_MODEL, seed=0, out=workdir / "forecast.mp4",
                          strip=workdir / "forecast-strip.png", upscale=False, force=True,
                          device=session.current().device())
    report_path = workdir / "forecast.json"
    write_json_atomic(report_path, report)
    return [clip, *map(Path, report["outputs"]), report_path]
