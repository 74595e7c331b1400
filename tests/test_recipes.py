import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support import assert_user_error, install_test_plugin, run_cli


@pytest.fixture
def env(tmp_path):
    return install_test_plugin(tmp_path / "site", broken=False)


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        (folder / f"f{i}.txt").write_text(f"file {i}\n")
    (tmp_path / "out").mkdir()
    return folder


def write_recipe(tmp_path, body: str, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(body)
    return path


BATCH = """
version: 1
defaults:
  sleep: {sleep}
steps:
  - step: slowcopy
    name: copy
    for_each: "in/*.txt"
    with:
      input: "{{item}}"
      out: "out/{{stem}}.copy"
"""


def test_batch_runs_and_resumes(tmp_path, env, inputs):
    recipe = write_recipe(tmp_path, BATCH.format(sleep=0))
    r = run_cli("run", recipe, "--json", env=env)
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert (s["total"], len(s["done"]), len(s["skipped"])) == (6, 6, 0)
    assert (tmp_path / "out" / "f3.copy").read_text() == "file 3\n"
    again = json.loads(run_cli("run", recipe, "--json", env=env).out)
    assert (len(again["done"]), len(again["skipped"])) == (0, 6)
    forced = json.loads(run_cli("run", recipe, "--json", "--force", env=env).out)
    assert len(forced["done"]) == 6
    # Changing a parameter invalidates the provenance digest: everything is redone.
    changed = write_recipe(tmp_path, BATCH.format(sleep=0.001))
    assert len(json.loads(run_cli("run", changed, "--json", env=env).out)["done"]) == 6


def test_one_bad_item_fails_alone(tmp_path, env, inputs):
    recipe = write_recipe(tmp_path, """
version: 1
steps:
  - step: slowcopy
    for_each: ["in/f0.txt", "in/f1.txt"]
    with: {input: "{item}", out: "out/{stem}.copy"}
  - step: slowcopy
    name: bad
    with: {input: in/f2.txt, out: out/bad.copy, fail: true}
  - step: slowcopy
    name: last
    with: {input: in/f3.txt, out: out/last.copy}
""")
    r = run_cli("run", recipe, "--json", env=env)
    assert r.code == 2
    s = json.loads(r.out)
    assert len(s["done"]) == 3 and [f["item"] for f in s["failed"]] == ["bad"]
    assert "refusing" in s["failed"][0]["error"]
    assert r.err.strip() == f"error: 1 of 4 item(s) failed: bad: refusing {inputs / 'f2.txt'}"
    assert not (tmp_path / "out" / "bad.copy").exists()
    assert (tmp_path / "out" / "last.copy").exists()


def test_a_bug_in_one_item_exits_1_and_the_rest_finish(tmp_path, env, inputs):
    recipe = write_recipe(tmp_path, """
version: 1
steps:
  - step: slowcopy
    name: bad
    with: {input: in/f0.txt, out: out/bad.copy, fail: true}
  - step: slowcopy
    name: buggy
    with: {input: in/f1.txt, out: out/buggy.copy, crash: true}
  - step: slowcopy
    name: last
    with: {input: in/f3.txt, out: out/last.copy}
""")
    r = run_cli("run", recipe, "--json", env=env)
    # a bug is exit 1 (as for any command), even when an input problem failed first
    assert r.code == 1
    s = json.loads(r.out)
    assert [f["item"] for f in s["done"]] == ["last"]
    assert [(f["item"], bool(f.get("internal"))) for f in s["failed"]] == [("bad", False), ("buggy", True)]
    assert r.err.strip().splitlines() == ["error: 2 of 3 item(s) failed: buggy: internal error: RuntimeError: bug on "
                                          f"{inputs / 'f1.txt'} (rerun with --debug for the traceback)"]
    assert (tmp_path / "out" / "last.copy").read_text() == "file 3\n"
    assert not (tmp_path / "out" / "buggy.copy").exists()


def test_dry_run_writes_nothing(tmp_path, env, inputs):
    recipe = write_recipe(tmp_path, BATCH.format(sleep=0))
    s = json.loads(run_cli("run", recipe, "--dry-run", "--json", env=env).out)
    assert len(s["planned"]) == 6
    assert not list((tmp_path / "out").iterdir())


def test_shards_partition_the_batch(tmp_path, env, inputs):
    recipe = write_recipe(tmp_path, BATCH.format(sleep=0))
    seen = []
    for i in (1, 2, 3):
        s = json.loads(run_cli("run", recipe, "--json", "--shard", f"{i}/3", env=env).out)
        seen += [d["item"] for d in s["done"]]
    assert len(seen) == 6 and len(set(seen)) == 6
    assert_user_error(run_cli("run", recipe, "--shard", "4/3", env=env), "shard")


def test_foreign_output_is_not_overwritten(tmp_path, env, inputs):
    (tmp_path / "out" / "f0.copy").write_text("mine")
    recipe = write_recipe(tmp_path, BATCH.format(sleep=0))
    r = run_cli("run", recipe, "--json", env=env)
    assert r.code == 2 and (tmp_path / "out" / "f0.copy").read_text() == "mine"
    assert "not written by soundsight" in json.loads(r.out)["failed"][0]["error"]


def test_killed_batch_resumes_without_redoing_work(tmp_path, env, inputs):
    recipe = write_recipe(tmp_path, BATCH.format(sleep=0.6))
    full_env = {**os.environ, **env, "SOUNDSIGHT_DEVICE": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "soundsight", "--quiet", "run", str(recipe)], env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "out"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.copy"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in out.glob("*.copy"))
    assert 2 <= len(finished) < 6, finished
    leftovers = [p.name for p in out.iterdir() if ".part" in p.name]
    assert not leftovers, leftovers
    s = json.loads(run_cli("run", recipe, "--json", env=env).out)
    assert sorted(x["item"].split("[")[1].split(".")[0] + ".copy" for x in s["skipped"]) == finished
    assert len(s["done"]) + len(s["skipped"]) == 6 and not s["failed"]


BAD_RECIPES = {
    "unknown step": ("version: 1\nsteps:\n  - step: frobnicate\n", "unknown step 'frobnicate'"),
    "unknown param": ("version: 1\nsteps:\n  - step: slowcopy\n    with: {input: in/f0.txt, out: out/x, speed: 2}\n",
                      "unknown parameter 'speed'"),
    "ill-typed": ("version: 1\nsteps:\n  - step: slowcopy\n    with: {input: in/f0.txt, out: out/x, sleep: fast}\n",
                  "'sleep' must be float"),
    "bad choice": ("version: 1\nsteps:\n  - step: slowcopy\n    with: {input: in/f0.txt, out: out/x, mode: move}\n",
                   "must be one of"),
    "missing input": ("version: 1\nsteps:\n  - step: slowcopy\n    with: {input: in/nope.txt, out: out/x}\n",
                      "no such file"),
    "missing required": ("version: 1\nsteps:\n  - step: slowcopy\n    with: {input: in/f0.txt}\n",
                         "missing required parameter 'out'"),
    "bad version": ("version: 7\nsteps:\n  - step: slowcopy\n", "version must be"),
    "no steps": ("version: 1\n", "'steps' must be a non-empty list"),
    "malformed yaml": ("version: 1\nsteps: [\n  - step: {\n", "not valid YAML"),
    "not a mapping": ("- just\n- a list\n", "a recipe is a mapping"),
    "empty glob": ("version: 1\nsteps:\n  - step: slowcopy\n    for_each: 'in/*.wav'\n"
                   "    with: {input: '{item}', out: 'out/{stem}'}\n", "matches no files"),
    "same output twice": ("version: 1\nsteps:\n  - step: slowcopy\n    for_each: 'in/*.txt'\n"
                          "    with: {input: '{item}', out: 'out/same'}\n", "written by two items"),
    "python tag": ("version: 1\nsteps: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_validation_happens_before_anything_runs(tmp_path, env, inputs, case):
    body, message = BAD_RECIPES[case]
    # A valid first step proves nothing runs when a later step is invalid.
    if body.startswith("version: 1\nsteps:\n  - "):
        body = body.replace("steps:\n", "steps:\n  - step: slowcopy\n    name: first\n"
                            "    with: {input: in/f1.txt, out: out/first}\n", 1)
    recipe = write_recipe(tmp_path, body)
    assert_user_error(run_cli("run", recipe, env=env), message)
    assert not list((tmp_path / "out").iterdir())
