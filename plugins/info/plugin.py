"""Hooks of the built-in `info` plugin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from soundsight.hookspecs import hookimpl
from soundsight.steps import Param, RecipeStep


@hookimpl
def register_commands(app):
    @app.command("info")
    def info(
        files: List[Path] = typer.Argument(..., help="Audio (wav/flac/ogg/mp3), image or video files."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (a list, one object per file)."),
    ):
        """Duration, rate, channels and levels of audio; size and mode of images; fps, frames and audio of video."""
        from soundsight import console
        from soundsight.errors import InputError, UserError

        from .describe import describe, summary_line

        results, errors = [], []
        for f in files:
            try:
                results.append(describe(f))
            except InputError as exc:
                if len(files) == 1:
                    raise
                errors.append(str(exc))
        if as_json:
            typer.echo(json.dumps(results, indent=2))
        else:
            for d in results:
                console.out(summary_line(d))
        if errors:
            for e in errors[1:]:
                console.err(f"error: {e}")
            raise UserError(errors[0] + (f" ({len(errors)} of {len(files)} files failed)" if len(errors) > 1 else ""))


def _run_info_step(params: dict, ctx) -> list[Path]:
    from soundsight.outputs import check_output, make_provenance, write_json_atomic, write_sidecar

    from .describe import describe

    report = describe(params["input"])
    out = params.get("out")
    if not out:
        return []
    check_output(out, force=ctx.force, inputs=(params["input"],))
    write_sidecar(out, make_provenance(**ctx.provenance))
    write_json_atomic(out, report)
    return [Path(out)]


@hookimpl
def register_recipe_steps(register):
    register(RecipeStep(
        name="info",
        run=_run_info_step,
        params={
            "input": Param(str, kind="input", required=True, help="A media file."),
            "out": Param(str, kind="output", help="Where to write the JSON report."),
        },
        help="Describe a media file; write the report as JSON.",
        plugin="info",
    ))


@hookimpl
def register_demo(register):
    register("info", _demo)


def _demo(workdir: Path) -> list[Path]:
    """Make a tone, a picture and a short clip, then describe each."""
    import numpy as np

    from soundsight.audio import save_audio
    from soundsight.image import save_image
    from soundsight.outputs import make_provenance, write_json_atomic, write_sidecar
    from soundsight.video import write_video

    from .describe import describe

    sr = 16000
    t = np.arange(sr * 2) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-t)).astype(np.float32)
    audio_path = workdir / "tone.wav"
    save_audio(audio_path, tone, sr)
    yy, xx = np.mgrid[0:96, 0:128]
    picture = np.stack([xx * 2, yy * 2, np.full_like(xx, 128)], -1).astype(np.uint8)
    image_path = workdir / "gradient.png"
    save_image(image_path, picture)
    frames = np.stack([np.roll(picture, 4 * i, axis=1) for i in range(20)])
    video_path = workdir / "clip.mp4"
    write_video(video_path, frames, 10, audio=tone[None, :sr * 2], sr=sr)
    report = [describe(p) for p in (audio_path, image_path, video_path)]
    report_path = workdir / "info.json"
    write_sidecar(report_path, make_provenance(command="soundsight demo"))
    write_json_atomic(report_path, report)
    return [audio_path, image_path, video_path, report_path]
