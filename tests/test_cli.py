import json
import subprocess
import sys

from support import assert_user_error, install_test_plugin, run_cli


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from soundsight.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'moviepy', 'soundfile', 'PIL', 'scipy') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stdout, proc.stdout.splitlines()[-1]
    assert "info" in proc.stdout and "run" in proc.stdout


def test_version_and_module_entry():
    r = run_cli("--version")
    assert r.code == 0 and r.out.startswith("soundsight ")


def test_unknown_command_is_one_line_exit_2():
    assert_user_error(run_cli("no-such-command"), "no such command")


def test_missing_argument_is_one_line():
    assert_user_error(run_cli("run"), "missing argument")


def test_plugins_lists_builtin_through_entry_point():
    r = run_cli("plugins", "--json")
    assert r.code == 0, r.err
    rows = {p["name"]: p for p in json.loads(r.out)}
    assert rows["info"]["loaded"]
    assert rows["info"]["target"] == "soundsight_plugins.info.plugin"
    assert "register_commands" in rows["info"]["hooks"]


def test_third_party_plugin_and_broken_plugin(tmp_path):
    env = install_test_plugin(tmp_path / "site")
    r = run_cli("hello", "--name", "ears", env=env)
    assert r.code == 0 and r.out.strip() == "hello ears"
    rows = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).out)}
    assert rows["testplug"]["loaded"] and rows["testplug"]["distribution"] == "soundsight-testplug 1.0"
    assert not rows["brokenplug"]["loaded"]
    assert "frobnicate" in rows["brokenplug"]["error"]
    # The broken plugin does not take the built-in one down.
    assert rows["info"]["loaded"]
    human = run_cli("plugins", env=env)
    assert "FAILED" in human.out and "frobnicate" in human.out


def test_allow_list_limits_loading(tmp_path):
    env = install_test_plugin(tmp_path / "site")
    env["SOUNDSIGHT_LOAD_PLUGINS"] = "testplug"
    rows = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).out)}
    assert rows["testplug"]["loaded"]
    assert rows["info"]["skipped"] and not rows["info"]["loaded"]
    assert rows["brokenplug"]["skipped"]
    assert_user_error(run_cli("info", "x.wav", env=env), "no such command")
    env["SOUNDSIGHT_LOAD_PLUGINS"] = ""
    rows = json.loads(run_cli("plugins", "--json", env=env).out)
    assert not any(p["loaded"] for p in rows)


def test_internal_error_exit_1_with_hint(tmp_path):
    env = install_test_plugin(tmp_path / "site", broken=False)
    r = run_cli("crash", env=env)
    assert r.code == 1
    assert r.err.strip().splitlines() == ["error: internal error: RuntimeError: this is a bug (rerun with --debug for the traceback)"]
    r = run_cli("--debug", "crash", env=env)
    assert r.code == 1 and "Traceback" in r.err


def test_doctor_reports_device_and_paths(tmp_path):
    r = run_cli("doctor", "--json", env={"SOUNDSIGHT_HOME": str(tmp_path / "home")})
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["device"]["selected"] == "cpu"
    assert report["home"] == str(tmp_path / "home")
    assert report["model_search_path"][0] == str(tmp_path / "home" / "models")
    assert "ffmpeg" in report["ffmpeg"]
    assert report["plugins"]["info"] == "loaded"


def test_bad_device_is_user_error():
    assert_user_error(run_cli("--device", "tpu", "doctor"), "unknown device")
    assert_user_error(run_cli("--device", "cuda:3", "doctor"), "cuda")


def test_typer_runner_models_list(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from soundsight.cli import build_app

    import torch

    from soundsight import registry

    monkeypatch.setenv("SOUNDSIGHT_HOME", str(tmp_path))
    registry.save_model(tmp_path / "models" / "tiny", name="tiny", task="test", architecture="linear", config={},
                        tensors={"model.safetensors": {"w": torch.zeros(2)}})
    result = CliRunner().invoke(build_app(), ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = [m for m in json.loads(result.output) if m["name"] == "tiny"]  # the home's model, found in-process
    assert len(listed) == 1 and listed[0]["path"] == str(tmp_path / "models" / "tiny")
