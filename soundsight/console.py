"""Messages for the user on stderr: warnings and progress notes.

Everything goes to stderr so stdout stays clean for data (``--json`` output, paths). ``--quiet``
(``set_quiet(True)``) silences both ``warn`` and ``info``; errors are not printed here (the CLI
prints ``error: ...`` for a ``UserError``).
"""

from __future__ import annotations

import sys

_quiet = False


def set_quiet(quiet: bool = True) -> None:
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def _emit(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # closed or broken stderr: never fail a command over a note
        pass


def warn(msg: str) -> None:
    """Print ``warning: <msg>`` (one line) to stderr unless quiet."""
    if not _quiet:
        _emit("warning: " + " ".join(str(msg).split()))


def info(msg: str) -> None:
    """Print a progress/info note to stderr unless quiet."""
    if not _quiet:
        _emit(str(msg))


def out(msg: str) -> None:
    """Print a result line to stdout (always: results are what the user asked for)."""
    try:
        print(str(msg), flush=True)
    except (OSError, ValueError):
        pass


def err(msg: str) -> None:
    """Print a line to stderr even when quiet (failures in a batch must stay visible)."""
    _emit(str(msg))


def stderr_console():
    """A ``rich`` Console on stderr (progress bars), imported lazily to keep startup fast."""
    from rich.console import Console

    return Console(stderr=True, quiet=_quiet)
