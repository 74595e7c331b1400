"""Checks every reader makes before decoding: the path exists, is a readable, non-empty file."""

from __future__ import annotations

from pathlib import Path

from soundsight.errors import InputError


def check_input_file(path, what: str = "media file") -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file: {path}")
    if p.is_dir():
        article = "an" if what[0] in "aeiou" else "a"
        raise InputError(f"{path} is a directory, not {article} {what}")
    try:
        size = p.stat().st_size
        with open(p, "rb"):
            pass
    except PermissionError:
        raise InputError(f"{path} is not readable (permission denied)") from None
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes)")
    return p
