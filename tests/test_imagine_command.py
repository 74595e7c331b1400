"""`soundsight imagine` end to end with tiny models written by the --tiny training entrypoints
into a temporary SOUNDSIGHT_HOME under the default names (never the shipped models).

The command-line contract (exit codes, one error line, stderr notes, recipes) runs the real
`soundsight` process; the rest calls the command's function in-process (the same code after
argument parsing), which keeps the file fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_wav
from support import assert_user_error, run_cli

ASSETS = Path(__file__).resolve().parents[1] / "plugins" / "scene_gen" / "assets"
SHEEP, TRUCK = ASSETS / "sheep.flac", ASSETS / "truck.flac"


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def provenance(path) -> dict:
    with Image.open(path) as im:
        return json.loads(im.text["soundsight"])


@pytest.fixture
def home(scene_models, monkeypatch):
    """In-process runs see the tiny models (and only them, also once real models are bundled)."""
    from soundsight import registry

    monkeypatch.setenv("SOUNDSIGHT_HOME", str(scene_models["home"]))
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: scene_models["root"] / "no-bundled-models")
    return scene_models


def imagine(sound, **kw) -> dict:
    import torch

    from soundsight.device import resolve_device
    from soundsight_plugins.scene_gen.imagine import run_imagine

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_imagine(str(sound), device=resolve_device("cpu"), **kw)
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------
# the real command line


def test_imagine_cli_writes_images_with_provenance(scene_models, tmp_path):
    r = run_cli("imagine", SHEEP, "--n", "2", "--out", tmp_path / "s.png", "--grid", tmp_path / "g.png", "--json",
                env=scene_models["env"])
    assert r.code == 0, r.err
    rep = json.loads(r.out)
    assert rep["outputs"] == [str(tmp_path / f"s-{i}.png") for i in range(2)] + [str(tmp_path / "g.png")]
    # no --backend: the GAN (the better back end on held-out sounds)
    assert rep["models"] == {"audio_encoder": "scene-audio-encoder-64", "generator": "scene-gan-64"}
    assert rep["backend"] == "gan" and rep["steps"] is None
    assert (rep["size"], rep["model_size"], rep["note"]) == (64, 64, None)
    # the toy audio encoder hears 0.5 s: the 1.5 s sheep is cropped; it sits at the data's gain 1
    lv = rep["level"]
    assert lv["cropped"] and not lv["tiled"] and lv["model_seconds"] == 0.5 and lv["input_seconds"] == 1.548
    # the level of what the encoder hears (the first 0.5 s), on the training data's scale (RMS 0.02 = gain 1)
    import soundfile as sf

    heard = sf.read(SHEEP, dtype="float32")[0][:8000]
    rms = float(np.sqrt(np.mean(heard.astype(np.float64) ** 2)))
    assert lv["rms_dbfs"] == pytest.approx(20 * np.log10(rms), abs=0.06)
    assert lv["scene_gain"] == pytest.approx(rms / 0.02, abs=2e-3)
    img0, img1 = pixels(tmp_path / "s-0.png"), pixels(tmp_path / "s-1.png")
    assert img0.shape == (64, 64, 3) and not np.array_equal(img0, img1)  # different noise per image
    assert pixels(tmp_path / "g.png").shape == (64 + 4, 2 * 64 + 6, 3)  # make_grid: 1 row, 2 columns, pad 2
    prov = provenance(tmp_path / "s-1.png")
    assert prov["seed"] == 0 and prov["index"] == 1 and prov["params"]["n"] == 2
    assert set(prov["models"]) == {"scene-audio-encoder-64", "scene-gan-64"}
    assert all(len(sha) == 64 for m in prov["models"].values() for sha in m.values())
    assert prov["command"].startswith("soundsight") and "imagine" in prov["command"]


def test_imagine_cli_notes_and_errors(scene_models, tmp_path):
    r = run_cli("imagine", SHEEP, "--size", "128", "--out", tmp_path / "big.png", env=scene_models["env"])
    assert r.code == 0, r.err
    assert pixels(tmp_path / "big.png").shape == (128, 128, 3)
    assert "resized to 128 px" in r.err and "no scene-gan-128 model is installed" in r.err
    silent = make_wav(tmp_path / "silent.wav", amplitude=0.0)
    assert_user_error(run_cli("imagine", silent, "--out", tmp_path / "o.png", env=scene_models["env"]), "silent")
    assert_user_error(run_cli("imagine", SHEEP, "--backend", "vqgan", "--out", tmp_path / "o.png",
                              env=scene_models["env"]), "unknown backend")
    assert_user_error(run_cli("imagine", f"{SHEEP}*loud", env=scene_models["env"]), "bad gain")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "silent.wav"]


def test_recipe_step_and_resume(scene_models, tmp_path):
    (tmp_path / "out").mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
version: 1
defaults: {{seed: 2}}
steps:
  - step: imagine
    for_each: ['{SHEEP}', '{TRUCK}']
    with: {{sound: '{{item}}', out: 'out/{{stem}}.png', n: 3}}
  - step: imagine
    name: loud
    with: {{sound: '{SHEEP}*2', out: 'out/loud.png', gain_db: 3.0}}
  - step: imagine
    name: sweep
    with: {{sound: '{TRUCK}', out: 'out/sweep.png', sweep_gain: '0.5,2'}}
""")
    r = run_cli("run", recipe, "--json", env=scene_models["env"])
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["done"]) == 4
    assert pixels(tmp_path / "out/sheep.png").shape == (2 * 64 + 6, 2 * 64 + 6, 3)  # a grid of 3 (2x2)
    assert pixels(tmp_path / "out/loud.png").shape == (64, 64, 3)
    assert pixels(tmp_path / "out/sweep.png").shape == (12 + 66 + 2, 2 * 66 + 2, 3)
    prov = provenance(tmp_path / "out/loud.png")  # a recipe records its own parameters (they decide resume)
    assert prov["params"]["gain_db"] == 3.0 and prov["recipe_item"] == "loud"
    assert len(json.loads(run_cli("run", recipe, "--json", env=scene_models["env"]).out)["skipped"]) == 4


# --------------------------------------------------------------------------------------------
# behaviour (in-process)


def test_bundled_sounds_are_small_at_the_reference_level():
    import soundfile as sf

    assert sum(p.stat().st_size for p in (SHEEP, TRUCK)) <= 150_000
    for p in (SHEEP, TRUCK):
        x, sr = sf.read(p, dtype="float32")
        assert sr == 16000 and x.ndim == 1
        tiled = np.tile(x, int(np.ceil(5 * sr / len(x))))[:5 * sr]  # what the 5 s audio encoder hears
        assert np.sqrt(np.mean(tiled ** 2)) == pytest.approx(0.02, rel=0.02)  # gain 1 of the scenes data
    assert "CC0-1.0" in (ASSETS / "README.md").read_text()


def test_same_seed_same_image_and_gain_matters(home, tmp_path):
    runs = {"a": dict(seed=3), "b": dict(seed=3), "c": dict(seed=4), "loud": dict(seed=3, gain=4.0),
            "loud_db": dict(seed=3, gain_db=12.0412)}
    outs, reps = {}, {}
    for key, kw in runs.items():
        rep = reps[key] = imagine(SHEEP, out=tmp_path / f"{key}.png", **kw)
        outs[key] = pixels(tmp_path / f"{key}.png")
    assert rep["gain"] == pytest.approx(4.0, rel=1e-4) and rep["level"]["rms_dbfs"] > -30
    # the reported level follows the gain: x4 is +12.04 dB and 4 times the scene gain
    for key in ("loud", "loud_db"):
        assert reps[key]["level"]["rms_dbfs"] == pytest.approx(reps["a"]["level"]["rms_dbfs"] + 12.04, abs=0.02)
        assert reps[key]["level"]["scene_gain"] == pytest.approx(4 * reps["a"]["level"]["scene_gain"], rel=2e-3)
    assert np.array_equal(outs["a"], outs["b"])
    assert not np.array_equal(outs["a"], outs["c"])
    assert not np.array_equal(outs["a"], outs["loud"])  # the level reaches the picture
    assert np.abs(outs["loud"].astype(int) - outs["loud_db"].astype(int)).max() <= 1  # 12.04 dB = x4
    # default names next to the first sound of the mix, one per image
    mix = tmp_path / "sheep.flac"
    mix.write_bytes(SHEEP.read_bytes())
    (tmp_path / "truck.flac").write_bytes(TRUCK.read_bytes())
    rep = imagine(f"{mix}+{tmp_path / 'truck.flac'}", n=2)
    assert rep["outputs"] == [str(tmp_path / f"sheep+truck.imagine-{i}.png") for i in range(2)]


def test_sweep_strip_uses_the_same_noise_at_every_gain(home, tmp_path):
    sound = f"{SHEEP}+{TRUCK}*0.5"
    rep = imagine(sound, n=2, seed=5, sweep_gain="0.25,1,4", out=tmp_path / "sweep.png")
    assert rep["sweep_gain"] == [0.25, 1.0, 4.0] and rep["outputs"] == [str(tmp_path / "sweep.png")]
    strip = pixels(tmp_path / "sweep.png")
    assert strip.shape == (12 + 2 * 66 + 2, 3 * 66 + 2, 3)  # header, 2 rows x 3 gains of 64 px, pad 2

    def tile(row, col):
        y, x = 12 + 2 + row * 66, 2 + col * 66
        return strip[y:y + 64, x:x + 64]

    assert not np.array_equal(tile(0, 0), tile(0, 2))  # the gain changes the picture
    imagine(sound, n=2, seed=5, out=tmp_path / "p.png")
    # the x1 column is exactly what a plain run with the same seed draws
    assert np.array_equal(tile(0, 1), pixels(tmp_path / "p-0.png"))
    assert np.array_equal(tile(1, 1), pixels(tmp_path / "p-1.png"))
    assert provenance(tmp_path / "sweep.png")["params"]["sweep_gain"] == [0.25, 1.0, 4.0]


def test_ldm_backend(home, tmp_path):
    if "ldm" not in home:
        pytest.skip("the LDM back end needs diffusers")
    outs = []
    for i in range(2):
        rep = imagine(SHEEP, backend="ldm", steps=2, seed=1, out=tmp_path / f"l{i}.png")
        assert rep["models"]["generator"] == "scene-ldm-64" and rep["steps"] == 2
        outs.append(pixels(tmp_path / f"l{i}.png"))
    assert outs[0].shape == (64, 64, 3) and np.array_equal(outs[0], outs[1])
    assert rep["guidance"] == 2.0  # the model's own when not given
    rep = imagine(SHEEP, backend="ldm", steps=2, seed=1, guidance=1.0, out=tmp_path / "g1.png")
    assert rep["guidance"] == 1.0
    unguided = pixels(tmp_path / "g1.png")
    assert np.abs(unguided.astype(int) - outs[0].astype(int)).mean() > 0.5  # guidance changes the picture
    rep = imagine(SHEEP, backend="ldm", steps=2, sweep_gain="0.5,2", out=tmp_path / "ls.png")
    assert pixels(tmp_path / "ls.png").shape == (12 + 66 + 2, 2 * 66 + 2, 3)


@pytest.mark.parametrize("kw,message", [
    (dict(backend="vqgan"), "unknown backend"),
    (dict(backend="gan", steps=10), "--backend ldm"),
    (dict(backend="ldm", steps=0), "--steps must be"),
    (dict(backend="gan", guidance=3.0), "--backend ldm"),
    (dict(backend="ldm", guidance=-1.0), "--guidance must be"),
    (dict(n=0), "--n must be"),
    (dict(size=100), "--size must be"),
    (dict(gain=2.0, gain_db=3.0), "either --gain or --gain-db"),
    (dict(gain=-1.0), "--gain must be"),
    (dict(sweep_gain="1,loud"), "--sweep-gain"),
    (dict(sweep_gain="1,-4"), "--sweep-gain"),
    (dict(sweep_gain="1,4", grid="GRID"), "cannot be combined"),
    (dict(n=2, out="OUT/{j}.png"), "placeholder"),
    (dict(model="no-such-model"), "unknown model"),
    (dict(model="scene-evaluator-64"), "not 'scene-generation'"),
    (dict(backend="gan", model="scene-ldm-64"), "not a GAN"),
    (dict(sound="SILENT"), "silent"),
    (dict(sound="MISSING"), "no such file"),
])
def test_errors_write_nothing(home, tmp_path, kw, message):
    from soundsight.errors import UserError

    if kw.get("model") == "scene-ldm-64" and "ldm" not in home:
        pytest.skip("needs the tiny LDM")
    inputs = tmp_path / "in"
    inputs.mkdir()
    sound = {"SILENT": make_wav(inputs / "silent.wav", amplitude=0.0), "MISSING": f"{SHEEP}+{inputs}/nothere.wav",
             None: SHEEP}[kw.pop("sound", None)]
    kw = {k: (str(tmp_path / "g.png") if v == "GRID" else v.replace("OUT", str(tmp_path)) if isinstance(v, str) else v)
          for k, v in kw.items()}
    kw.setdefault("out", tmp_path / "o.png")
    with pytest.raises(UserError, match=message):
        imagine(sound, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_the_back_end_follows_the_model_when_not_named(home, tmp_path):
    assert imagine(SHEEP, model="scene-gan-64", out=tmp_path / "g.png")["backend"] == "gan"
    assert imagine(SHEEP, out=tmp_path / "n.png")["backend"] == "gan"
    if "ldm" in home:
        assert imagine(SHEEP, out=tmp_path / "d.png", steps=2)["backend"] == "ldm"
        assert imagine(SHEEP, out=tmp_path / "e.png", guidance=2.0)["backend"] == "ldm"


def test_existing_outputs_are_kept_without_force(home, tmp_path):
    from soundsight.errors import OutputError

    (tmp_path / "o-1.png").write_bytes(b"keep")
    with pytest.raises(OutputError, match="exists"):
        imagine(SHEEP, n=2, out=tmp_path / "o.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o-1.png"]  # checked before anything is written
    imagine(SHEEP, n=2, out=tmp_path / "o.png", force=True)
    assert pixels(tmp_path / "o-1.png").shape == (64, 64, 3)
    with pytest.raises(OutputError, match="input"):
        imagine(SHEEP, out=SHEEP, force=True)


def test_missing_models_name_the_training_command(scene_models, tmp_path, monkeypatch):
    """With nothing installed the error names the missing model and the command that trains it."""
    from soundsight import registry
    from soundsight.errors import ModelError
    from soundsight_plugins.scene_gen.plugin import _demo

    monkeypatch.setenv("SOUNDSIGHT_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: tmp_path / "no-bundled-models")
    with pytest.raises(ModelError, match=r"audio encoder model scene-audio-encoder-64 is not installed; train it with "
                                         r"`python -m soundsight_train\.scene_audio_encoder --image-encoder"):
        imagine(SHEEP, out=tmp_path / "o.png")
    fa = str(scene_models["fa"])
    with pytest.raises(ModelError, match=r"GAN model scene-gan-64 is not installed; train it with "
                                         r"`python -m soundsight_train\.scene_gan --image-encoder"):
        imagine(SHEEP, audio_model=fa, out=tmp_path / "o.png")
    with pytest.raises(ModelError, match=r"LDM model scene-ldm-64 is not installed.*scene_ldm"):
        imagine(SHEEP, audio_model=fa, backend="ldm", size=128, out=tmp_path / "o.png")
    (tmp_path / "demo").mkdir()
    assert _demo(tmp_path / "demo") == []  # the demo step is skipped, with a note
    assert list((tmp_path / "demo").iterdir()) == [] and not (tmp_path / "o.png").exists()


def test_demo_with_installed_models(home, tmp_path):
    from soundsight_plugins.scene_gen.plugin import _demo

    written = _demo(tmp_path)
    names = {p.name for p in written}
    assert {"sheep.flac", "truck.flac", "sheep-grid.png", "sheep+truck-grid.png", "truck-sweep.png",
            "imagine.json"} <= names
    assert all(p.exists() for p in written)
    reports = json.loads((tmp_path / "imagine.json").read_text())
    assert [r["n"] for r in reports] == [4, 4, 3] and reports[2]["sweep_gain"] == [0.25, 1.0, 4.0]


# --------------------------------------------------------------------------------------------
# instance anchoring


def test_anchor_is_the_normalised_blend_with_the_nearest_instance():
    import torch

    from soundsight_plugins.scene_gen.instances import anchor

    bank = torch.eye(3)  # three orthogonal unit instances
    f = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.0, -2.0]])
    out, idx = anchor(f, bank, 0.5)
    assert idx.tolist() == [1, 0]  # largest cosine; a feature pointing away from all takes the first tie
    want = torch.tensor([[0.3, 0.9, 0.0], [0.5, 0.0, -0.5]])
    assert torch.allclose(out, want / want.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(anchor(f, bank, 0.0)[0], f / f.norm(dim=1, keepdim=True))
    assert torch.allclose(anchor(f, bank, 1.0)[0], bank[idx])


@pytest.fixture
def bank(home, tmp_path):
    """An instance bank of the toy training images, made by the real builder with the tiny f_V."""
    from soundsight_train import scene_instances

    out = tmp_path / "bank"
    assert scene_instances.main(["--data", str(home["toy"]), "--image-encoder", str(home["fv"]),
                                 "--out", str(out), "--threads", "1"]) == 0
    return out


def test_anchor_draws_from_the_nearest_instance_and_is_reported(home, bank, tmp_path):
    import torch

    from soundsight import registry
    from soundsight_plugins.scene_gen.imagine import draw_noise

    plain = imagine(SHEEP, out=tmp_path / "p.png")
    assert plain["anchor"] == 0.0 and plain["anchor_instances"] is None and "instances" not in plain["models"]
    zero = imagine(SHEEP, out=tmp_path / "z.png", anchor=0.0, instances=str(bank))
    assert np.array_equal(pixels(tmp_path / "z.png"), pixels(tmp_path / "p.png"))
    half = imagine(SHEEP, out=tmp_path / "h.png", anchor=0.5, instances=str(bank))
    assert half["models"]["instances"] == "bank" and not np.array_equal(pixels(tmp_path / "h.png"), pixels(tmp_path / "p.png"))
    assert provenance(tmp_path / "h.png")["params"]["anchor"] == 0.5 and "bank" in provenance(tmp_path / "h.png")["models"]
    full = imagine(SHEEP, out=tmp_path / "f.png", anchor=1.0, instances=str(bank))
    (k,) = full["anchor_instances"]
    assert half["anchor_instances"] == [k] and zero["anchor_instances"] is None
    # anchor 1: the generator drawn from that training image's own feature, with the seed's noise
    dev = __import__("soundsight.device", fromlist=["resolve_device"]).resolve_device("cpu")
    G, inst = registry.load(home["gan"], dev), registry.load(bank, dev)
    with torch.no_grad():
        want = G.generate(inst.features[k:k + 1], z=draw_noise(G, "gan", 1, 0, dev))
    want = (want.clamp(0, 1) * 255 + 0.5).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.abs(pixels(tmp_path / "f.png").astype(int) - want.astype(int)).max() <= 1


def test_anchor_defaults_from_the_generator_card(home, bank, tmp_path):
    import shutil

    g = tmp_path / "gan-anchored"
    shutil.copytree(home["gan"], g)
    card = json.loads((g / "card.json").read_text())
    card["inference"] = {"anchor": 0.5, "instances": str(bank)}
    (g / "card.json").write_text(json.dumps(card))
    rep = imagine(SHEEP, model=str(g), out=tmp_path / "a.png")
    assert rep["anchor"] == 0.5 and rep["models"]["instances"] == "bank"
    assert imagine(SHEEP, model=str(g), out=tmp_path / "b.png", anchor=0.0)["anchor"] == 0.0  # the option wins


def test_anchor_errors(home, bank, tmp_path):
    import shutil

    from soundsight.errors import InputError, ModelError

    with pytest.raises(InputError, match="--anchor must be between 0 and 1"):
        imagine(SHEEP, out=tmp_path / "o.png", anchor=1.5)
    with pytest.raises(ModelError, match=r"instance bank model scene-instances-64 is not installed; train it with "
                                         r"`python -m soundsight_train\.scene_instances --image-encoder"):
        imagine(SHEEP, out=tmp_path / "o.png", anchor=0.5)
    other = tmp_path / "other-bank"
    shutil.copytree(bank, other)
    card = json.loads((other / "card.json").read_text())
    card["conditioning"]["image_encoder"]["files"] = {"model.safetensors": "0" * 64}
    (other / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="another image encoder"):
        imagine(SHEEP, out=tmp_path / "o.png", anchor=0.5, instances=str(other))
    assert not (tmp_path / "o.png").exists()
