"""The ``soundsight`` command line: core commands here, the rest from plugins.

Keep this module's imports light: ``soundsight --help`` must never import torch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from soundsight import __version__, session
from soundsight.errors import BatchError, UserError

DEBUG_HINT = "(rerun with --debug for the traceback)"  # the tail of every bug's one-line error

app = typer.Typer(
    name="soundsight",
    help="Audio-driven media editing: imagine scenes from sound, forecast video from its "
    "soundtrack, match speech to a pictured room, edit photos with sound.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="List, inspect, verify and import registry models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _version(value: bool):
    if value:
        typer.echo(f"soundsight {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    device: Optional[str] = typer.Option(
        None, "--device", envvar="SOUNDSIGHT_DEVICE", help="auto | cpu | cuda[:i] | mps (default auto: cuda → mps → cpu)."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    debug: bool = typer.Option(False, "--debug", envvar="SOUNDSIGHT_DEBUG", help="Show tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr; no progress or warnings."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    session.configure(device_spec=device, threads=threads, debug=debug, quiet=quiet)


# ---------------------------------------------------------------- plugins
@app.command("plugins")
def plugins_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Loaded plugins, their hooks, and any that failed to load (with the reason)."""
    from soundsight.plugins import allow_list, plugin_status

    rows = plugin_status()
    if as_json:
        echo_json([r.__dict__ for r in rows])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="soundsight plugins")
    for col in ("name", "status", "hooks", "module", "distribution"):
        table.add_column(col)
    for r in rows:
        state = "loaded" if r.loaded else ("skipped (not in SOUNDSIGHT_LOAD_PLUGINS)" if r.skipped else f"FAILED: {r.error}")
        table.add_row(r.name, state, ", ".join(r.hooks), r.target, r.distribution)
    Console().print(table)
    allowed = allow_list()
    if allowed is not None:
        typer.echo(f"SOUNDSIGHT_LOAD_PLUGINS limits loading to: {', '.join(sorted(allowed)) or '(none)'}")


# ---------------------------------------------------------------- models
def _model_specs():
    from soundsight.registry import model_specs

    return {s.name: s for s in model_specs() if s.name}


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Models on the search path, and the ones plugins expect."""
    from soundsight import registry

    specs = _model_specs()
    found = registry.known_models()
    rows = []
    for m in found:
        spec = specs.get(m["name"])
        rows.append({
            "name": m["name"], "task": m.get("task", ""), "path": m["path"], "size_bytes": m.get("size_bytes"),
            "used_by": spec.plugin if spec else "", "error": m.get("error", ""),
        })
    names = {m["name"] for m in found}
    for name, spec in specs.items():
        if name not in names:
            rows.append({"name": name, "task": spec.task, "path": None, "size_bytes": None,
                         "used_by": spec.plugin, "error": "not installed"})
    if as_json:
        echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="soundsight models")
    for col in ("name", "task", "size", "used by", "where"):
        table.add_column(col)
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.1f} MB" if r["size_bytes"] else ""
        table.add_row(r["name"], r["task"], size, r["used_by"], r["error"] or r["path"])
    Console().print(table)
    typer.echo("search path: " + " → ".join(str(p) for p in registry.search_dirs()))


@models_app.command("show")
def models_show(name: str = typer.Argument(..., help="Model name or folder."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """A model's card (architecture, config, files, training command, metrics, licence)."""
    from soundsight import registry

    folder = registry.locate(name)
    card = registry.read_card(folder)
    if as_json:
        echo_json({"path": str(folder), **card})
        return
    typer.echo(f"{card['name']}  ({card.get('task', '')}, {card.get('architecture', '')})")
    typer.echo(f"path: {folder}")
    if card.get("description"):
        typer.echo(card["description"])
    for f, meta in card["files"].items():
        typer.echo(f"file: {f}  {meta.get('bytes', '?')} bytes  sha256 {meta['sha256']}")
    for key in ("training", "data", "metrics", "license"):
        if card.get(key):
            typer.echo(f"{key}: {json.dumps(card[key], default=str)}")


@models_app.command("verify")
def models_verify(names: Optional[List[str]] = typer.Argument(None, help="Names or folders (default: all)."),
                  as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Check every file's sha256 against the card; exit 2 if any model fails."""
    from soundsight import registry
    from soundsight.errors import ModelError

    targets = names or [m["path"] for m in registry.known_models()]
    results = []
    for target in targets:
        try:
            folder = registry.resolve(target)
            results.append({"name": folder.name, "path": str(folder.path), "ok": True, "error": ""})
        except ModelError as exc:
            results.append({"name": str(target), "path": "", "ok": False, "error": str(exc)})
    if as_json:
        echo_json(results)
    else:
        for r in results:
            typer.echo(f"{'ok  ' if r['ok'] else 'FAIL'} {r['name']}  {r['error'] or r['path']}")
        if not results:
            typer.echo("no models installed")
    bad = [r for r in results if not r["ok"]]
    if bad:
        raise UserError(f"{len(bad)} of {len(results)} model(s) failed verification: {bad[0]['error']}")


@models_app.command("import")
def models_import(path: Path = typer.Argument(..., help="A model folder (card.json + safetensors)."),
                  force: bool = typer.Option(False, "--force", help="Replace an installed model of the same name.")):
    """Verify a model folder and copy it into $SOUNDSIGHT_HOME/models."""
    from soundsight import registry

    dest = registry.import_model(path, force=force)
    typer.echo(f"imported {dest.name} → {dest}")


# ---------------------------------------------------------------- doctor
@app.command("doctor")
def doctor(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Versions, device, ffmpeg, and where models and caches live."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from soundsight import registry
    from soundsight.device import describe
    from soundsight.plugins import plugin_status

    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    try:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # missing ffmpeg is a finding, not a crash
        ffmpeg = f"missing ({exc})"
    dev = session.current().device()
    report = {
        "soundsight": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: v(p) for p in ("torch", "numpy", "scipy", "soundfile", "soxr", "pedalboard", "Pillow",
                                       "moviepy", "imageio-ffmpeg", "typer", "pluggy", "safetensors", "PyYAML")},
        "device": {"selected": str(dev), "autocast": str(dev.autocast_dtype), **describe()},
        "ffmpeg": ffmpeg,
        "home": str(registry.soundsight_home()),
        "model_search_path": [str(p) for p in registry.search_dirs()],
        "models": [m["name"] for m in registry.known_models()],
        "plugins": {s.name: ("loaded" if s.loaded else s.error or "skipped") for s in plugin_status()},
    }
    if as_json:
        echo_json(report)
        return
    for key, value in report.items():
        if isinstance(value, dict):
            typer.echo(f"{key}:")
            for k, val in value.items():
                typer.echo(f"  {k}: {val}")
        else:
            typer.echo(f"{key}: {value}")


# ---------------------------------------------------------------- run
@app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(..., help="A YAML recipe (see recipes/)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list what would run; write nothing."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip items whose outputs exist with matching provenance."),
    force: bool = typer.Option(False, "--force", help="Redo every item and overwrite outputs."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: run only the i-th of n interleaved shards (1-based)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
):
    """Run a batch recipe: validated first, one bad item fails alone, reruns resume."""
    from soundsight import recipes

    summary = recipes.run_recipe(recipe, dry_run=dry_run, resume=resume, force=force, shard=shard,
                                 show_progress=not (as_json or session.current().quiet))
    if as_json:
        echo_json(summary.as_dict())
    else:
        summary.print()
    if summary.failed:
        bugs = [f for f in summary.failed if f.get("internal")]
        first = (bugs or summary.failed)[0]  # a bug outranks bad input: name it
        hint = f" {DEBUG_HINT}" if bugs else ""
        raise BatchError(f"{len(summary.failed)} of {summary.total} item(s) failed: {first['item']}: {first['error']}{hint}",
                         internal=bool(bugs))


# ---------------------------------------------------------------- demo
@app.command("demo")
def demo(out: Path = typer.Option(Path("soundsight-demo"), "--out", help="Folder for the demo's inputs and outputs."),
         force: bool = typer.Option(False, "--force", help="Reuse a non-empty --out folder.")):
    """Run every plugin's demo on inputs it makes itself and the bundled default models."""
    from soundsight.plugins import get_plugin_manager

    parts: list[tuple[str, object]] = []
    get_plugin_manager().hook.register_demo(register=lambda name, fn: parts.append((name, fn)))
    if not parts:
        raise UserError("no plugin provides a demo (check `soundsight plugins`)")
    marker = out / ".soundsight-demo"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not marker.exists() and not force:
        raise UserError(f"{out} exists, is not empty and is not a demo folder (use --force to reuse it)")
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    for name, fn in parts:
        workdir = out / name
        if workdir.exists():  # a previous demo's outputs: the demo folder is ours to refresh
            import shutil

            shutil.rmtree(workdir)
        workdir.mkdir()
        typer.echo(f"[{name}]")
        for path in fn(workdir):
            typer.echo(f"  wrote {path}")
    typer.echo(f"demo finished: outputs in {out}")


# ---------------------------------------------------------------- entry point
def build_app() -> typer.Typer:
    from soundsight.plugins import get_plugin_manager

    get_plugin_manager().hook.register_commands(app=app)
    return app


def _fail(message: str, code: int) -> None:
    if len(message) > 400:  # one line, but readable
        message = message[:400] + "…"
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


def _click_exceptions():
    """Exception classes of the click that Typer runs on (recent Typer vendors its own copy)."""
    try:
        from typer._click import exceptions as cx
    except ImportError:  # older Typer on upstream click
        from click import exceptions as cx
    return cx


def main(argv: list[str] | None = None) -> None:
    cx = _click_exceptions()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("SOUNDSIGHT_DEBUG") not in (None, "", "0")
    try:
        command = typer.main.get_command(build_app())
        rc = command.main(args=args, prog_name="soundsight", standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except UserError as exc:
        if debug or session.current().debug:
            raise
        _fail(str(exc), exc.exit_code)
    except cx.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            sys.exit(0)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(" ".join(exc.format_message().split()) + hint, exc.exit_code)
    except (typer.Abort, getattr(cx, "Abort", typer.Abort), KeyboardInterrupt):
        _fail("interrupted", 130)
    except (typer.Exit, getattr(cx, "Exit", typer.Exit)) as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        if debug or session.current().debug:
            raise
        _fail(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} {DEBUG_HINT}", 1)
