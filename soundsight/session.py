"""Process-wide options set by the CLI's global flags and read by commands and plugins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Session:
    device_spec: str | None = None
    threads: int | None = None
    debug: bool = False
    quiet: bool = False
    _device: Any = field(default=None, repr=False)

    def device(self):
        """The run's Device, resolved on first use (so commands that need no torch never import it)."""
        if self._device is None:
            from soundsight.device import resolve_device

            self._device = resolve_device(self.device_spec, threads=self.threads)
        return self._device


_current = Session()


def current() -> Session:
    return _current


def configure(**options) -> Session:
    global _current
    _current = Session(**options)
    from soundsight import console

    console.set_quiet(_current.quiet)
    return _current
