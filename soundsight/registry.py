"""Model registry: folders of ``card.json`` + ``*.safetensors``.

A model folder's card lists every weight file with its sha256; files are verified before
anything is loaded, and only safetensors are ever read (no pickle). Names resolve along the
search path: an explicit folder path, then ``$SOUNDSIGHT_HOME/models``, then folders that
plugins contribute, then the models bundled with the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soundsight.errors import ModelError

CARD = "card.json"
CARD_VERSION = 1
_extra_dirs: list[Path] = []


def soundsight_home() -> Path:
    if os.environ.get("SOUNDSIGHT_HOME"):
        return Path(os.environ["SOUNDSIGHT_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "soundsight"


def user_models_dir() -> Path:
    return soundsight_home() / "models"


def bundled_models_dir() -> Path:
    from soundsight_models import BUNDLED_DIR

    return BUNDLED_DIR


def add_search_dir(path: str | os.PathLike) -> None:
    """Let a plugin contribute a folder of model folders (searched after the user's)."""
    path = Path(path)
    if path not in _extra_dirs:
        _extra_dirs.append(path)


def search_dirs() -> list[Path]:
    return [user_models_dir(), *_extra_dirs, bundled_models_dir()]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ModelSpec:
    """What a plugin tells the registry through ``register_models``.

    ``name``/``task``: a model the plugin uses, by default or with ``--model`` (shown by
    ``soundsight models list``).
    ``architecture`` + ``loader``: the plugin can build models whose card names this
    architecture; ``loader(folder: ModelFolder, device) -> model``. This is how one plugin uses
    a model another plugin defines without importing it: ``registry.load(name, device)``.
    """

    name: str
    task: str
    description: str = ""
    plugin: str = ""
    architecture: str = ""
    loader: Any = field(default=None, repr=False)


@dataclass
class ModelFolder:
    """A resolved, checksum-verified model folder."""

    path: Path
    card: dict[str, Any] = field(repr=False)
    origin: str = ""

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def task(self) -> str:
        return self.card.get("task", "")

    @property
    def config(self) -> dict[str, Any]:
        return self.card.get("config", {})

    def sha256(self, file: str = "model.safetensors") -> str:
        return self.card["files"][file]["sha256"]

    def file(self, name: str) -> Path:
        if name not in self.card.get("files", {}):
            raise ModelError(f"model {self.name} has no file {name!r}")
        return self.path / name

    def tensors(self, file: str = "model.safetensors", device: str = "cpu") -> dict:
        """Load a verified safetensors file as a dict of torch tensors."""
        from safetensors.torch import load_file

        return load_file(str(self.file(file)), device=str(device))

    def provenance(self) -> dict:
        """Short identity for output provenance: name + sha256 of each weight file."""
        return {f: meta["sha256"] for f, meta in self.card.get("files", {}).items()}


def record_metrics(folder: Path, key: str, value) -> Path:
    """Put an evaluation into a model folder's ``card.json`` under ``metrics[key]``, atomically;
    the weights and their checksums are untouched, so the folder still verifies."""
    from soundsight.outputs import write_bytes_atomic

    path = Path(folder) / CARD
    card = json.loads(path.read_text())
    card.setdefault("metrics", {})[key] = value
    return write_bytes_atomic(path, (json.dumps(card, indent=2) + "\n").encode())


def read_card(folder: Path) -> dict:
    card_path = folder / CARD
    if not card_path.is_file():
        raise ModelError(f"{folder} is not a model folder (no {CARD})")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{card_path} is not valid JSON: {exc}") from None
    for key in ("name", "task", "files"):
        if key not in card:
            raise ModelError(f"{card_path} lacks the required key {key!r}")
    if not isinstance(card["files"], dict) or not card["files"]:
        raise ModelError(f"{card_path} lists no files")
    return card


def verify_folder(folder: Path) -> dict:
    """Check the card and every file's sha256; return the card. Raises ModelError on mismatch."""
    card = read_card(folder)
    for name, meta in card["files"].items():
        if Path(name).name != name or not name.endswith((".safetensors", ".json")):
            raise ModelError(f"model {card['name']}: file {name!r} is not an allowed weight file")
        path = folder / name
        if not path.is_file():
            raise ModelError(f"model {card['name']}: file {name} is missing from {folder}")
        digest = sha256_file(path)
        if digest != meta.get("sha256"):
            raise ModelError(
                f"model {card['name']}: checksum mismatch for {name} in {folder} "
                f"(card {str(meta.get('sha256'))[:12]}…, file {digest[:12]}…); "
                "the file is corrupt or was modified"
            )
    return card


def _candidates() -> list[tuple[Path, str]]:
    found = []
    for base in search_dirs():
        if not base.is_dir():
            continue
        for sub in sorted(base.iterdir()):
            if (sub / CARD).is_file():
                found.append((sub, str(base)))
    return found


def known_models() -> list[dict]:
    """All model folders on the search path (first one wins per name), without verification."""
    seen: dict[str, dict] = {}
    for folder, origin in _candidates():
        try:
            card = read_card(folder)
        except ModelError as exc:
            seen.setdefault(folder.name, {"name": folder.name, "path": str(folder), "error": str(exc)})
            continue
        seen.setdefault(
            card["name"],
            {"name": card["name"], "task": card.get("task", ""), "path": str(folder), "origin": origin,
             "size_bytes": sum((folder / f).stat().st_size for f in card["files"] if (folder / f).is_file()),
             "card": card},
        )
    return list(seen.values())


def locate(name_or_path: str | os.PathLike) -> Path:
    """Folder for a model name or explicit path (no verification)."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir() or os.sep in str(name_or_path) or str(name_or_path).startswith("."):
        if not (candidate / CARD).is_file():
            raise ModelError(f"{candidate} is not a model folder (no {CARD})")
        return candidate
    for folder, _ in _candidates():
        try:
            if read_card(folder)["name"] == str(name_or_path):
                return folder
        except ModelError:
            if folder.name == str(name_or_path):
                return folder
    names = sorted(m["name"] for m in known_models())
    listing = ", ".join(names) if names else "none installed"
    raise ModelError(f"unknown model {name_or_path!r}; known models: {listing}")


def resolve(name_or_path: str | os.PathLike, task: str | None = None) -> ModelFolder:
    """Find and verify a model; optionally require its task."""
    folder = locate(name_or_path)
    card = verify_folder(folder)
    if task is not None and card.get("task") != task:
        raise ModelError(f"model {card['name']} is a {card.get('task')!r} model, not {task!r}")
    return ModelFolder(path=folder, card=card, origin=str(folder.parent))


def model_specs() -> list[ModelSpec]:
    from soundsight.plugins import get_plugin_manager

    specs: list[ModelSpec] = []
    get_plugin_manager().hook.register_models(register=specs.append)
    return specs


def load(model: "str | os.PathLike | ModelFolder", device=None, *, task: str | None = None):
    """Build a model with the loader a plugin registered for its architecture. ``model`` is a
    name or folder (resolved and verified here) or an already verified ``ModelFolder``.
    ``device`` is a ``soundsight.device.Device`` (default: the session's)."""
    folder = model if isinstance(model, ModelFolder) else resolve(model, task=task)
    arch = folder.card.get("architecture", "")
    loaders = [s for s in model_specs() if s.architecture == arch and s.loader is not None]
    if not loaders:
        raise ModelError(
            f"model {folder.name} has architecture {arch!r}, which no loaded plugin provides "
            "(see `soundsight plugins`)"
        )
    if device is None:
        from soundsight import session

        device = session.current().device()
    return loaders[0].loader(folder, device)


def save_model(
    out_dir: str | os.PathLike,
    *,
    name: str,
    task: str,
    architecture: str,
    config: dict,
    tensors: dict[str, dict],
    training: dict | None = None,
    metrics: dict | None = None,
    data: dict | None = None,
    license: str = "Apache-2.0",
    description: str = "",
    extra: dict | None = None,
) -> Path:
    """Write a registry model folder: ``tensors`` maps file name → {tensor name: tensor}.

    Writes into a temporary sibling and renames, so a crash never leaves a half model.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        files = {}
        for file_name, state in tensors.items():
            if not file_name.endswith(".safetensors"):
                raise ValueError(f"weight files must be .safetensors, got {file_name}")
            state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
            save_file(state, str(tmp / file_name), metadata={"name": name, "format": "pt"})
            files[file_name] = {
                "sha256": sha256_file(tmp / file_name),
                "bytes": (tmp / file_name).stat().st_size,
                "parameters": int(sum(t.numel() for t in state.values())),
            }
        card = {
            "card_version": CARD_VERSION,
            "name": name,
            "task": task,
            "architecture": architecture,
            "description": description,
            "config": config,
            "files": files,
            "training": training or {},
            "data": data or {},
            "metrics": metrics or {},
            "license": license,
            **(extra or {}),
        }
        (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes 0700; a model folder is meant to be shared
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def import_model(src: str | os.PathLike, *, force: bool = False) -> Path:
    """Verify a model folder and copy it into ``$SOUNDSIGHT_HOME/models/<name>``."""
    src = Path(src).expanduser()
    if not src.is_dir():
        raise ModelError(f"{src} is not a folder")
    card = verify_folder(src)
    dest = user_models_dir() / card["name"]
    if dest.exists() and not force:
        raise ModelError(f"model {card['name']} is already installed at {dest} (use --force to replace)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{card['name']}.", dir=dest.parent))
    try:
        for name in [CARD, *card["files"], *[p.name for p in src.glob("*.md")]]:
            shutil.copy2(src / name, tmp / name)
        verify_folder(tmp)
        tmp.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


