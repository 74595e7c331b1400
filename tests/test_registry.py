import json

import pytest
import torch

from soundsight import registry
from soundsight.errors import ModelError
from support import assert_user_error, run_cli


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDSIGHT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_model(folder, name="tiny", value=1.0):
    return registry.save_model(
        folder, name=name, task="test", architecture="linear", config={"n": 3},
        tensors={"model.safetensors": {"w": torch.full((3,), value)}},
        training={"command": "python -m soundsight_train.nothing"}, metrics={"acc": 0.5},
    )


def test_save_resolve_load_roundtrip(tmp_path, home):
    folder = make_model(tmp_path / "tiny")
    card = json.loads((folder / "card.json").read_text())
    assert card["files"]["model.safetensors"]["parameters"] == 3
    m = registry.resolve(folder)
    assert m.name == "tiny" and m.config == {"n": 3}
    assert torch.equal(m.tensors()["w"], torch.ones(3))
    assert not list(tmp_path.glob(".tiny.*")), "no temporary folder left behind"


def test_checksum_mismatch_is_refused(tmp_path, home):
    folder = make_model(tmp_path / "tiny")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        registry.resolve(folder)
    assert_user_error(run_cli("models", "verify", str(folder), env={"SOUNDSIGHT_HOME": str(home)}), "checksum mismatch")


def test_unknown_name_lists_known(tmp_path, home):
    make_model(home / "models" / "alpha", name="alpha")
    with pytest.raises(ModelError, match="unknown model 'beta'.*alpha"):
        registry.resolve("beta")
    assert_user_error(run_cli("models", "show", "beta", env={"SOUNDSIGHT_HOME": str(home)}), "unknown model", "alpha")


def test_user_home_shadows_bundled(tmp_path, home, monkeypatch):
    bundled = tmp_path / "bundled"
    make_model(bundled / "m", name="m", value=1.0)
    make_model(home / "models" / "m", name="m", value=2.0)
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: bundled)
    assert registry.resolve("m").tensors()["w"][0] == 2.0
    assert registry.search_dirs()[0] == home / "models"


def test_non_safetensors_files_are_rejected(tmp_path, home):
    folder = make_model(tmp_path / "tiny")
    card = json.loads((folder / "card.json").read_text())
    (folder / "weights.pt").write_bytes(b"pickle")
    card["files"]["weights.pt"] = {"sha256": registry.sha256_file(folder / "weights.pt")}
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not an allowed weight file"):
        registry.resolve(folder)


def test_task_check_and_missing_file(tmp_path, home):
    folder = make_model(tmp_path / "tiny")
    with pytest.raises(ModelError, match="not 'frame-forecast'"):
        registry.resolve(folder, task="frame-forecast")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        registry.resolve(folder)


def test_import_copies_verified_folder(tmp_path, home):
    folder = make_model(tmp_path / "src" / "tiny")
    r = run_cli("models", "import", str(folder), env={"SOUNDSIGHT_HOME": str(home)})
    assert r.code == 0, r.err
    assert (home / "models" / "tiny" / "model.safetensors").is_file()
    listed = json.loads(run_cli("models", "list", "--json", env={"SOUNDSIGHT_HOME": str(home)}).out)
    assert any(m["name"] == "tiny" and m["path"] == str(home / "models" / "tiny") for m in listed)
    assert_user_error(run_cli("models", "import", str(folder), env={"SOUNDSIGHT_HOME": str(home)}), "already installed")
    # A corrupt folder is never imported.
    bad = make_model(tmp_path / "src2" / "other", name="other")
    (bad / "model.safetensors").write_bytes(b"garbage")
    assert_user_error(run_cli("models", "import", str(bad), env={"SOUNDSIGHT_HOME": str(home)}), "checksum")
    assert not (home / "models" / "other").exists()


def test_models_show_json(tmp_path, home):
    folder = make_model(home / "models" / "tiny")
    r = run_cli("models", "show", "tiny", "--json", env={"SOUNDSIGHT_HOME": str(home)})
    card = json.loads(r.out)
    assert card["path"] == str(folder) and card["metrics"] == {"acc": 0.5}


def test_load_dispatches_on_architecture(tmp_path, home, monkeypatch):
    folder = make_model(tmp_path / "tiny")
    calls = []

    def loader(model_folder, device):
        calls.append(device)
        return model_folder.tensors()["w"] * 3

    spec = registry.ModelSpec(name="", task="test", architecture="linear", loader=loader)
    monkeypatch.setattr(registry, "model_specs", lambda: [spec])
    assert torch.equal(registry.load(folder, device="dev0"), torch.full((3,), 3.0))
    assert calls == ["dev0"]
    monkeypatch.setattr(registry, "model_specs", lambda: [])
    with pytest.raises(ModelError, match="architecture 'linear', which no loaded plugin provides"):
        registry.load(folder, device="dev0")
