"""Atomic output files and provenance.

Every output is written to a temporary file next to its destination and renamed into place
only when complete, so an interrupted command never leaves a half-written file. Provenance
(command, models, seed, version, parameters) travels with each output: inside PNGs as a text
chunk, next to other files as ``<name>.soundsight.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from soundsight.errors import OutputError

SIDECAR_SUFFIX = ".soundsight.json"
PNG_KEY = "soundsight"


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def check_output(
    path: str | os.PathLike, *, force: bool = False, inputs: tuple = ()
) -> Path:
    """Validate an output path before any work is done: never an input, no silent overwrite."""
    path = Path(path)
    resolved = path.resolve()
    for item in inputs:
        try:
            if Path(item).resolve() == resolved:
                raise OutputError(f"refusing to overwrite input file {path}")
        except OSError:
            continue
    if path.is_dir():
        raise OutputError(f"output {path} is a directory")
    if path.exists() and not force:
        raise OutputError(f"output {path} exists (use --force to overwrite)")
    parent = resolved.parent
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it over ``path`` on success.

    The temporary name keeps the destination's suffix so writers that pick a format from the
    extension (soundfile, Pillow, ffmpeg) behave the same.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputError(f"output {path} exists (use --force to overwrite)")
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=path.suffix + ".part" + path.suffix, dir=path.parent or "."
        )
    except FileNotFoundError:
        raise OutputError(f"output folder {path.parent} does not exist") from None
    except OSError as exc:
        raise OutputError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if not tmp_path.exists() or tmp_path.stat().st_size == 0:
            raise OutputError(f"nothing was written for {path}")
        # mkstemp creates 0600 files; give outputs the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def params_digest(params: dict) -> str:
    """Stable short hash of the parameters that determine an output (used by recipe resume)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_provenance(
    *, command: str | None = None, models: dict | None = None, seed: int | None = None,
    params: dict | None = None, **extra,
) -> dict:
    from soundsight import __version__

    prov = {
        "soundsight_version": __version__,
        "command": command if command is not None else " ".join(["soundsight", *sys.argv[1:]]),
        "models": models or {},
        "seed": seed,
    }
    if params is not None:
        prov["params"] = params
        prov["params_digest"] = params_digest(params)
    prov.update(extra)
    return prov


def write_sidecar(path: str | os.PathLike, provenance: dict) -> Path:
    return write_json_atomic(sidecar_path(path), provenance)


def read_provenance(path: str | os.PathLike) -> dict | None:
    """Provenance of an output written by soundsight, or None if it has none or is unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix.lower() == ".png":
        try:
            from PIL import Image

            with Image.open(path) as im:
                text = im.text.get(PNG_KEY) if hasattr(im, "text") else None
            if text:
                return json.loads(text)
        except Exception:
            return None
    side = sidecar_path(path)
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except (OSError, ValueError):
            return None
    return None
