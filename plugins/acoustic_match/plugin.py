"""Hooks of the `acoustic_match` plugin (Visual Acoustic Matching / AViTAR). Top level stays light
(no numpy, no torch): the command's work is in ``rematch.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from soundsight.hookspecs import hookimpl
from soundsight.registry import ModelSpec
from soundsight.steps import Param, RecipeStep

from .loaders import ARCHITECTURES, ROOM_PARAMS

DEFAULT_MODEL = "rooms-avitar-16k"
DEFAULT_PARAMS_MODEL = ARCHITECTURES[ROOM_PARAMS][2]  # --mode params (task room-acoustics)
ASSETS = Path(__file__).resolve().parent / "assets"
MODES = ("waveform", "ir", "params")


def _fmt_s(v) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


def _summary(report: dict) -> list[str]:
    """The lines a person reads after a plain run."""
    src = report["source"]
    how = {"room": f"model {report['model']}, {report['mode']} mode", "like": "blind reverberator",
           "ir": "measured IR"}[src]
    lines = [f"wrote {report['outputs'][0]} ({how}; {report['input_duration_s']:.2f} s + "
             f"{report['tail_s']:.2f} s tail, {report['sample_rate']} Hz, {report['channels']} ch, "
             f"mix {report['mix']:g})"]
    ir = report.get("ir")
    if ir:
        ref = ir.get("reference")
        if ref:
            lines.append(f"reference: RT60 {_fmt_s(ref['rt60'])}, DRR {ref['drr_db']:.1f} dB (blind estimate)")
        pred = ir.get("predicted")
        if pred:
            lines.append(f"picture: RT60 {_fmt_s(pred['rt60'])}, DRR {pred['drr_db']:.1f} dB (predicted by the model)")
        lines.append(f"impulse response: RT60 {_fmt_s(ir['rt60_speech'])} (speech band), DRR "
                     + ("n/a" if ir["drr_db"] is None else f"{ir['drr_db']:.1f} dB") + f", {ir['length_s']:.2f} s")
    est = report.get("estimates")
    if est:
        eff = est.get("output_vs_input") or {}
        lines.append(f"RT60 blind estimate: input {_fmt_s(est['input']['rt60'])} -> output "
                     f"{_fmt_s(est['output']['rt60'])}; output measured against the input: "
                     f"{_fmt_s(eff.get('rt60_speech'))}")
    for extra in report["outputs"][1:]:
        lines.append(f"wrote {extra}")
    return lines


def run(params: dict, *, force: bool, device, estimates: bool, extra_provenance: Optional[dict] = None) -> dict:
    from .rematch import Request, run_rematch

    req = Request(audio=params["audio"], room=params.get("room"), like=params.get("like"), ir=params.get("ir"),
                  out=params.get("out"), mode=params.get("mode"), mix=params.get("mix", 1.0),
                  model=params.get("model") or DEFAULT_MODEL,
                  params_model=params.get("params_model") or DEFAULT_PARAMS_MODEL, report=params.get("report"), force=force,
                  estimates=estimates)
    return run_rematch(req, device=device, extra_provenance=extra_provenance)


@hookimpl
def register_commands(app):
    @app.command("rematch")
    def rematch_cmd(
        audio: str = typer.Argument(..., help="Speech to re-render (a file or a mix expression a.wav+b.wav*0.5)."),
        room: Optional[Path] = typer.Option(None, "--room", help="Picture of the target room: a learned model (see --mode)."),
        like: Optional[Path] = typer.Option(None, "--like", help="A reverberant recording made in the target room: "
                                            "blind RT60 + DRR -> synthetic impulse response."),
        ir: Optional[Path] = typer.Option(None, "--ir", help="A measured impulse response (any audio file, any rate)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output audio (default AUDIO.rematch.wav); "
                                           "wav, flac, ogg, mp3 or aiff."),
        mode: Optional[str] = typer.Option(None, "--mode", help="With --room: params (default: the picture "
                                           "predicts octave RT60s + DRR, rendered like --like at full rate), ir "
                                           "(AViTAR's impulse response applied at full rate) or waveform (AViTAR's "
                                           "16 kHz output itself, as in the paper)."),
        mix: float = typer.Option(1.0, "--mix", help="Wet share, 0 (the input unchanged) .. 1 (only the re-rendered sound)."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", help="Registry name or folder of an acoustic-match model."),
        params_model: str = typer.Option(DEFAULT_PARAMS_MODEL, "--params-model", help="With --mode params: registry "
                                         "name or folder of a room-acoustics (picture -> RT60s + DRR) model."),
        report: Optional[Path] = typer.Option(None, "--report", help="Also write a PNG: input and output spectrograms "
                                              "with their RT60 estimates."),
        as_json: bool = typer.Option(False, "--json", help="Print the estimates and what was written as JSON."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    ):
        """Re-render speech with the acoustics of another room: pictured (--room), heard (--like) or measured (--ir).

        Exactly one of --room, --like, --ir. The output keeps the input's sample rate and channels, is matched to its loudness (BS.1770) and is longer by the reverberation tail; long files stream in blocks.
        """
        from soundsight import console, session

        params = {"audio": audio, "room": str(room) if room else None, "like": str(like) if like else None,
                  "ir": str(ir) if ir else None, "out": str(out) if out else None, "mode": mode, "mix": mix,
                  "model": model, "params_model": params_model, "report": str(report) if report else None}
        # the device is resolved (torch imported) only if the model runs: --like / --ir need neither
        rep = run(params, force=force, device=session.current().device, estimates=as_json or report is not None)
        if as_json:
            typer.echo(json.dumps(rep, indent=2))
            return
        for line in _summary(rep):
            console.out(line)


def _rematch_step(params: dict, ctx) -> list[Path]:
    rep = run(params, force=ctx.force, device=ctx.get_device, estimates=bool(params.get("report")),
              extra_provenance=ctx.provenance)
    return [Path(p) for p in rep["outputs"]]


@hookimpl
def register_recipe_steps(register):
    register(RecipeStep(
        name="rematch",
        run=_rematch_step,
        params={
            "audio": Param(str, kind="sound", required=True, help="Speech (a file or mix expression)."),
            "room": Param(str, kind="input", help="Picture of the target room (the learned model)."),
            "like": Param(str, kind="input", help="Reverberant recording of the target room (blind reverberator)."),
            "ir": Param(str, kind="input", help="Measured impulse response."),
            "out": Param(str, kind="output", required=True, help="Output audio."),
            "mode": Param(str, choices=MODES, help="With room: params (default), ir or waveform."),
            "mix": Param((int, float), default=1.0, help="Wet share 0..1."),
            "model": Param(str, default=DEFAULT_MODEL),
            "params_model": Param(str, default=DEFAULT_PARAMS_MODEL, help="With mode params: the room-acoustics model."),
            "report": Param(str, kind="output", help="Optional PNG with spectrograms and RT60 estimates."),
        },
        help="Re-render speech for another room (picture, reverberant reference or measured IR).",
        plugin="acoustic_match",
    ))


@hookimpl
def register_models(register):
    for arch, (task, loader, name, description) in ARCHITECTURES.items():
        register(ModelSpec(name=name, task=task, plugin="acoustic_match", description=description,
                           architecture=arch, loader=loader))


@hookimpl
def register_demo(register):
    register("rematch", _demo)


def _demo(workdir: Path) -> list[Path]:
    """A real dry voice (bundled, BSD) re-rendered for a simulated large room: from a reverberant
    recording made there (--like), from the room's impulse response (--ir) and, when the model is
    installed, from the room's picture (--room)."""
    import shutil

    from soundsight import console, registry, session
    from soundsight.errors import ModelError
    from soundsight.outputs import write_json_atomic

    from .demo import demo_inputs

    voice, reference, ir_path, picture, room_meta = demo_inputs(workdir)
    device = session.current().device
    written: list[Path] = [voice, reference, ir_path, picture]
    reports = {"room_description": room_meta}
    runs = [("like", {"like": str(reference)}), ("ir", {"ir": str(ir_path)})]
    try:
        registry.resolve(DEFAULT_PARAMS_MODEL, task="room-acoustics")
        runs.append(("room", {"room": str(picture)}))
    except ModelError:
        console.info(f"  (skipping --room: model {DEFAULT_PARAMS_MODEL} is not installed; "
                     "python -m soundsight_train.room_params trains it)")
    for name, extra in runs:
        params = {"audio": str(voice), "out": str(workdir / f"voice.{name}.wav"), **extra}
        if name == "room":
            params["report"] = str(workdir / "voice.room.png")
        rep = run(params, force=True, device=device, estimates=True)
        reports[name] = rep
        written += [Path(p) for p in rep["outputs"]]
    report_path = workdir / "rematch.json"
    write_json_atomic(report_path, reports)
    shutil.copyfile(ASSETS / "LICENSES.md", workdir / "LICENSES.md")
    return written + [report_path, workdir / "LICENSES.md"]
