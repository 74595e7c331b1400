"""Plugin manager: every plugin, built-in or third-party, loads from the ``soundsight``
entry-point group. ``SOUNDSIGHT_LOAD_PLUGINS`` (comma-separated names) limits what loads; a
plugin that fails to import is recorded and reported by ``soundsight plugins``, never fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import entry_points

import pluggy

from soundsight import hookspecs

GROUP = "soundsight"


@dataclass
class PluginStatus:
    name: str
    target: str
    distribution: str
    loaded: bool
    hooks: list[str]
    error: str = ""
    skipped: bool = False


_pm: pluggy.PluginManager | None = None
_status: list[PluginStatus] = []


def allow_list() -> set[str] | None:
    raw = os.environ.get("SOUNDSIGHT_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    global _pm
    if _pm is None:
        _pm = _load()
    return _pm


def reset() -> None:
    """Forget loaded plugins (tests change the environment and reload)."""
    global _pm
    _pm = None
    _status.clear()


def plugin_status() -> list[PluginStatus]:
    get_plugin_manager()
    return list(_status)


def _load() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    allowed = allow_list()
    seen: set[str] = set()
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(ep.name)
        dist = getattr(ep, "dist", None)
        dist_name = f"{dist.name} {dist.version}" if dist is not None else ""
        if allowed is not None and ep.name not in allowed:
            _status.append(PluginStatus(ep.name, ep.value, dist_name, False, [], skipped=True))
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            _status.append(
                PluginStatus(ep.name, ep.value, dist_name, False, [], error=f"{type(exc).__name__}: {exc}")
            )
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        _status.append(PluginStatus(ep.name, ep.value, dist_name, True, hooks))
    return pm
