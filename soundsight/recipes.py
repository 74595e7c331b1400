"""YAML recipes: a versioned batch of plugin steps.

    version: 1
    defaults:            # applied to every step that has a parameter of that name
      seed: 0
    steps:
      - step: info               # a step registered by a plugin (`soundsight plugins`)
        name: describe           # optional label
        for_each: "media/*.wav"  # optional: a glob (or a list of paths) relative to the recipe
        with:                    # parameters; strings may use {item} {stem} {name} {index}
          input: "{item}"
          out: "out/{stem}.json"

The whole recipe is validated before anything runs. Each (step, item) pair runs on its own:
a failure is recorded and the rest go on. Outputs carry a digest of the parameters that made
them, so a rerun skips items whose outputs already exist with the same digest.
"""

from __future__ import annotations

import glob as globlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soundsight.errors import RecipeError, UserError
from soundsight.outputs import params_digest, read_provenance
from soundsight.steps import Param, RecipeStep, StepContext

SUPPORTED_VERSIONS = (1,)
TOP_KEYS = {"version", "defaults", "steps"}
STEP_KEYS = {"step", "name", "for_each", "with"}


@dataclass
class Item:
    index: int
    step: RecipeStep
    label: str
    params: dict[str, Any]
    outputs: list[Path]

    @property
    def digest(self) -> str:
        return params_digest({"step": self.step.name, **self.params})


@dataclass
class Summary:
    recipe: str
    total: int = 0
    done: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    planned: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"recipe": self.recipe, "total": self.total, "done": self.done, "skipped": self.skipped,
                "failed": self.failed, "planned": self.planned, "seconds": round(self.seconds, 3)}

    def print(self) -> None:
        from soundsight import console

        for p in self.planned:
            console.out(f"would run {p['item']}: {', '.join(p['outputs']) or '(no outputs)'}")
        for f in self.failed:  # the one-line error on stderr summarises; details are data
            console.out(f"failed {f['item']}: {f['error']}")
        console.out(
            f"{self.total} item(s): {len(self.done)} done, {len(self.skipped)} skipped (already done), "
            f"{len(self.failed)} failed" + (f", {len(self.planned)} planned (dry run)" if self.planned else "")
            + f" in {self.seconds:.1f} s"
        )


def registered_steps() -> dict[str, RecipeStep]:
    from soundsight.plugins import get_plugin_manager

    steps: dict[str, RecipeStep] = {}

    def register(step: RecipeStep) -> None:
        if step.name in steps:
            raise RecipeError(f"two plugins register the recipe step {step.name!r}")
        steps[step.name] = step

    get_plugin_manager().hook.register_recipe_steps(register=register)
    return steps


def load_yaml(path: Path) -> dict:
    import yaml

    if not path.exists():
        raise RecipeError(f"no such recipe: {path}")
    if path.is_dir():
        raise RecipeError(f"{path} is a directory, not a recipe")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise RecipeError(f"{path} is not a text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with 'version' and 'steps'")
    return data


def _type_ok(value: Any, spec: Param) -> bool:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    if list in types and isinstance(value, list):
        return True
    return isinstance(value, types)


def _type_name(spec: Param) -> str:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    return " or ".join(t.__name__ for t in types)


def _expand(value: Any, fields: dict[str, str]) -> Any:
    if isinstance(value, str):
        try:
            return value.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise RecipeError(f"bad placeholder in {value!r}: {exc}; use {{item}} {{stem}} {{name}} {{index}}") from None
    if isinstance(value, list):
        return [_expand(v, fields) for v in value]
    return value


def _resolve_path(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _for_each(entry: Any, base: Path, where: str) -> list[Path]:
    if isinstance(entry, str):
        pattern = entry if Path(entry).is_absolute() else str(base / entry)
        matches = sorted(Path(m) for m in globlib.glob(pattern, recursive=True) if Path(m).is_file())
        if not matches:
            raise RecipeError(f"{where}: for_each {entry!r} matches no files")
        return matches
    if isinstance(entry, list) and all(isinstance(e, str) for e in entry) and entry:
        return [Path(_resolve_path(e, base)) for e in entry]
    raise RecipeError(f"{where}: for_each must be a glob string or a non-empty list of paths")


def plan(recipe_path: Path) -> list[Item]:
    """Parse and validate the whole recipe into items; raises RecipeError naming step and key."""
    from soundsight.audio import parse_mix

    data = load_yaml(recipe_path)
    base = recipe_path.resolve().parent
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise RecipeError(f"{recipe_path}: unknown top-level key {sorted(unknown)[0]!r} (allowed: version, defaults, steps)")
    version = data.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise RecipeError(f"{recipe_path}: version must be one of {list(SUPPORTED_VERSIONS)}, got {version!r}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise RecipeError(f"{recipe_path}: 'defaults' must be a mapping")
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise RecipeError(f"{recipe_path}: 'steps' must be a non-empty list")

    known = registered_steps()
    items: list[Item] = []
    produced: set[str] = set()
    labels: set[str] = set()
    for n, entry in enumerate(steps_data, start=1):
        if not isinstance(entry, dict) or "step" not in entry:
            raise RecipeError(f"step {n}: each step is a mapping with a 'step' key")
        name = entry["step"]
        label = str(entry.get("name") or f"{name}#{n}")
        where = f"step {label}"
        if label in labels:
            raise RecipeError(f"{where}: duplicate step name")
        labels.add(label)
        bad = set(entry) - STEP_KEYS
        if bad:
            raise RecipeError(f"{where}: unknown key {sorted(bad)[0]!r} (allowed: step, name, for_each, with)")
        if name not in known:
            raise RecipeError(f"{where}: unknown step {name!r}; known steps: {', '.join(sorted(known)) or 'none'}")
        step = known[name]
        given = entry.get("with") or {}
        if not isinstance(given, dict):
            raise RecipeError(f"{where}: 'with' must be a mapping of parameters")
        for key in given:
            if key not in step.params:
                raise RecipeError(f"{where}: unknown parameter {key!r} for {name} (known: {', '.join(step.params)})")
        raw = {k: v for k, v in defaults.items() if k in step.params}
        raw.update(given)
        for key, spec in step.params.items():
            if key not in raw:
                if spec.required:
                    raise RecipeError(f"{where}: missing required parameter {key!r}")
                raw[key] = spec.default
            value = raw[key]
            if value is None:
                continue
            if not _type_ok(value, spec):
                raise RecipeError(f"{where}: parameter {key!r} must be {_type_name(spec)}, got {type(value).__name__} {value!r}")
            if spec.choices and value not in spec.choices:
                raise RecipeError(f"{where}: parameter {key!r} must be one of {list(spec.choices)}, got {value!r}")

        targets = _for_each(entry["for_each"], base, where) if "for_each" in entry else [None]
        step_outputs: set[str] = set()
        for i, target in enumerate(targets):
            fields = {"index": str(i)}
            if target is not None:
                fields.update(item=str(target), stem=target.stem, name=target.name, parent=str(target.parent))
            params = {k: _expand(v, fields) for k, v in raw.items()}
            outputs = []
            for key, spec in step.params.items():
                value = params[key]
                if value is None:
                    continue
                if spec.kind in ("input", "output", "inputs"):
                    params[key] = [_resolve_path(v, base) for v in value] if isinstance(value, list) else _resolve_path(value, base)
                if spec.kind == "sound":
                    params[key] = "+".join(
                        _resolve_path(p, base) + (f"*{g:g}" if g != 1.0 else "")
                        for p, g in _parse_sound_for_recipe(parse_mix, value, base, where, key)
                    )
                if spec.kind in ("input", "inputs"):
                    for p in params[key] if isinstance(params[key], list) else [params[key]]:
                        if not Path(p).exists() and p not in produced:
                            raise RecipeError(f"{where}: parameter {key!r}: no such file {p}")
                if spec.kind == "output":
                    out = params[key]
                    if out in step_outputs or out in produced:
                        raise RecipeError(f"{where}: parameter {key!r}: output {out} is written by two items")
                    step_outputs.add(out)
                    outputs.append(Path(out))
            item_label = f"{label}[{target.name}]" if target is not None else label
            items.append(Item(len(items), step, item_label, params, outputs))
        produced |= step_outputs
    return items


def _parse_sound_for_recipe(parse_mix, expr: str, base: Path, where: str, key: str):
    """Parse a mix expression whose paths are relative to the recipe folder."""
    import os

    cwd = os.getcwd()
    try:
        os.chdir(base)
        return parse_mix(expr)
    except UserError as exc:
        raise RecipeError(f"{where}: parameter {key!r}: {exc}") from None
    finally:
        os.chdir(cwd)


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like i/n (e.g. 2/4), got {shard!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise UserError(f"--shard {shard}: need 1 <= i <= n")
    return i, n


def is_finished(item: Item) -> bool:
    if not item.outputs:
        return False
    for out in item.outputs:
        prov = read_provenance(out)
        if not prov or prov.get("params_digest") != item.digest:
            return False
    return True


def run_recipe(path: Path, *, dry_run: bool = False, resume: bool = True, force: bool = False,
               shard: str | None = None, show_progress: bool = True) -> Summary:
    from soundsight import session

    started = time.perf_counter()
    shard_spec = parse_shard(shard)
    items = plan(Path(path))
    if shard_spec:
        i, n = shard_spec
        items = [it for it in items if it.index % n == i - 1]
    summary = Summary(recipe=str(path), total=len(items))
    todo: list[Item] = []
    for item in items:
        if resume and not force and is_finished(item):
            summary.skipped.append({"item": item.label, "outputs": [str(o) for o in item.outputs]})
        else:
            todo.append(item)
    if dry_run:
        summary.planned = [{"item": it.label, "outputs": [str(o) for o in it.outputs], "params": it.params} for it in todo]
        summary.seconds = time.perf_counter() - started
        return summary

    sess = session.current()
    for item, advance in _progress(todo, show_progress):
        foreign = [o for o in item.outputs if o.exists() and read_provenance(o) is None]
        if foreign and not force:
            summary.failed.append({"item": item.label,
                                   "error": f"output {foreign[0]} exists and was not written by soundsight (use --force)"})
            advance()
            continue
        try:  # output folders are created on demand, like `mkdir -p`
            for o in item.outputs:
                o.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            summary.failed.append({"item": item.label, "error": f"cannot create output folder: {exc.strerror or exc}"})
            advance()
            continue
        ctx = StepContext(
            get_device=sess.device,
            force=True,  # our own outputs from a different configuration are stale: redo them
            provenance={"recipe": str(path), "recipe_item": item.label, "params": item.params,
                        "params_digest": item.digest},
        )
        try:
            written = item.step.run(dict(item.params), ctx) or []
            summary.done.append({"item": item.label, "outputs": [str(p) for p in written]})
        except UserError as exc:
            summary.failed.append({"item": item.label, "error": str(exc)})
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one broken item must not sink the batch
            if sess.debug:
                raise
            summary.failed.append({"item": item.label, "error": f"internal error: {type(exc).__name__}: {exc}",
                                   "internal": True})
        advance()
    summary.seconds = time.perf_counter() - started
    return summary


def _progress(items: list[Item], show: bool):
    if not show or not items:
        for item in items:
            yield item, lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from soundsight.console import stderr_console

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=stderr_console(), transient=True) as progress:
        task = progress.add_task("running", total=len(items))
        for item in items:
            progress.update(task, description=item.label)
            yield item, lambda: progress.advance(task)
