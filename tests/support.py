"""Helpers shared by the CLI-level tests: run the real `soundsight` process, install a test
plugin through a real entry point (a dist-info folder on PYTHONPATH)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 120) -> Result:
    full_env = {**os.environ, "SOUNDSIGHT_DEVICE": "cpu", "SOUNDSIGHT_THREADS": "1", **(env or {})}
    full_env.pop("SOUNDSIGHT_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "soundsight", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(result: Result, *needles: str) -> None:
    """Exit 2, exactly one line on stderr starting with `error:`, no traceback."""
    assert result.code == 2, (result.code, result.out, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


TEST_PLUGIN = '''
"""A third-party plugin used by the tests: a command, a crash, and a slow recipe step."""
import shutil, time
from pathlib import Path
import typer
from soundsight.hookspecs import hookimpl
from soundsight.steps import Param, RecipeStep
from soundsight.registry import ModelSpec


@hookimpl
def register_commands(app):
    @app.command("hello")
    def hello(name: str = "world"):
        """Say hello."""
        typer.echo(f"hello {name}")

    @app.command("crash")
    def crash():
        """Fail with a bug."""
        raise RuntimeError("this is a bug")


def _slowcopy(params, ctx):
    from soundsight.outputs import atomic_path, check_output, make_provenance, write_sidecar
    if params.get("fail"):
        from soundsight.errors import InputError
        raise InputError(f"refusing {params['input']}")
    if params.get("crash"):
        raise RuntimeError(f"bug on {params['input']}")
    time.sleep(params["sleep"])
    out = Path(params["out"])
    check_output(out, force=ctx.force, inputs=(params["input"],))
    write_sidecar(out, make_provenance(**ctx.provenance))
    with atomic_path(out) as tmp:
        shutil.copyfile(params["input"], tmp)
    return [out]


@hookimpl
def register_recipe_steps(register):
    register(RecipeStep(name="slowcopy", run=_slowcopy, params={
        "input": Param(str, kind="input", required=True),
        "out": Param(str, kind="output", required=True),
        "sleep": Param(float, default=0.0),
        "fail": Param(bool, default=False),
        "crash": Param(bool, default=False),
        "mode": Param(str, default="copy", choices=("copy", "link")),
    }))


@hookimpl
def register_models(register):
    register(ModelSpec(name="testplug-model", task="test", plugin="testplug"))
'''


def install_test_plugin(root: Path, broken: bool = True) -> dict:
    """Make `testplug` (and a plugin that fails to import) discoverable via entry points."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "soundsight_testplug.py").write_text(textwrap.dedent(TEST_PLUGIN))
    (root / "soundsight_brokenplug.py").write_text("raise ImportError('needs the missing package frobnicate')\n")
    dist = root / "soundsight_testplug-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: soundsight-testplug\nVersion: 1.0\n")
    eps = "[soundsight]\ntestplug = soundsight_testplug\n"
    if broken:
        eps += "brokenplug = soundsight_brokenplug\n"
    (dist / "entry_points.txt").write_text(eps)
    return {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
