"""`rematch --room IMAGE --mode params`: the picture -> room-acoustics regressor
(``room_params_net``), its trainer (tiny path), the command end to end and the evaluation row.
Tiny models only; never the shipped one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from support import assert_user_error, run_cli  # noqa: E402

from soundsight_plugins.acoustic_match import acoustics as ac  # noqa: E402
from soundsight_plugins.acoustic_match import impulse, loaders  # noqa: E402
from soundsight_plugins.acoustic_match.room_params_net import (BANDS, OUTPUTS, RoomParamsConfig,  # noqa: E402
                                                               RoomParamsNet, decode, encode, loss_fn)

from test_avitar import tiny_rooms  # noqa: E402,F401  (the 4-room dataset fixture)

ASSETS = Path(__file__).resolve().parents[1] / "plugins" / "acoustic_match" / "assets"


def _tiny(seed=0, **kw) -> RoomParamsNet:
    torch.manual_seed(seed)
    return RoomParamsNet(RoomParamsConfig.preset("tiny", **kw))


def _pictures(size=32):
    """Two plain pictures that a tiny model can tell apart: a bright room and a dark one."""
    g = torch.Generator().manual_seed(0)
    bright = 0.8 + 0.1 * torch.rand(1, 3, size, size, generator=g)
    dark = 0.15 + 0.1 * torch.rand(1, 3, size, size, generator=g)
    return bright, dark


@pytest.fixture(scope="module")
def taught():
    """A tiny model taught that the bright picture is a dry room (RT60 0.3 s, DRR +3 dB) and the
    dark one a reverberant room (RT60 1.2 s, DRR -8 dB)."""
    m = _tiny(dropout=0.0)
    bright, dark = _pictures()
    x = torch.cat([bright, dark])
    y = torch.tensor([encode(0.3, {b: 0.3 for b in BANDS}, 3.0), encode(1.2, {b: 1.2 for b in BANDS}, -8.0)])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(150):
        loss = loss_fn(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def params_home(tmp_path_factory, taught):
    from soundsight.registry import save_model

    home = tmp_path_factory.mktemp("home")
    save_model(home / "models" / "tiny-params", name="tiny-params", task="room-acoustics", architecture="room-params",
               config=taught.cfg.to_dict(), tensors={"model.safetensors": taught.state_dict()})
    return home


def test_outputs_are_the_blind_reverberators_parameters_and_shapes():
    assert BANDS == ac.BLIND_BANDS  # synthetic_ir renders exactly what blind_estimate gives
    m = _tiny().eval()
    assert m(torch.rand(3, 3, 32, 32)).shape == (3, len(OUTPUTS)) == (3, 7)
    assert m(torch.rand(1, 3, 48, 48)).shape == (1, 7)  # any input size (global pooling)
    est = m.estimate(torch.rand(2, 3, 32, 32))
    assert len(est) == 2 and set(est[0]) == {"rt60", "rt60_bands", "drr_db"} and list(est[0]["rt60_bands"]) == list(BANDS)
    # an untrained model predicts its offsets (the training means)
    assert est[0]["rt60"] == pytest.approx(0.7, rel=1e-4) and est[0]["drr_db"] == pytest.approx(-6.5, abs=1e-3)
    row = encode(0.8, {str(b): 0.1 * (k + 1) for k, b in enumerate(BANDS)}, -4.0)
    d = decode(torch.tensor(row))
    assert d["rt60"] == pytest.approx(0.8) and d["rt60_bands"][4000] == pytest.approx(0.5) and d["drr_db"] == pytest.approx(-4.0)
    big = RoomParamsNet(RoomParamsConfig.preset("cpu"))
    assert 0.2e6 < big.num_parameters() < 0.5e6 and big.image_size == 128
    pooled = RoomParamsNet(RoomParamsConfig.preset("tiny", stem_stride=4)).eval()  # ResNet-style stem, same weights
    assert pooled(torch.rand(2, 3, 32, 32)).shape == (2, 7) and pooled.num_parameters() == m.num_parameters()
    with pytest.raises(ValueError):
        RoomParamsNet(RoomParamsConfig.preset("tiny", stem_stride=3))
    # a mirrored room sounds the same: estimate() is mirror-invariant
    x = torch.rand(1, 3, 32, 32)
    a, b = m.estimate(x)[0], m.estimate(torch.flip(x, dims=[-1]))[0]
    assert a["rt60"] == pytest.approx(b["rt60"], rel=1e-5)


def test_one_training_step_lowers_the_loss():
    m = _tiny(dropout=0.0)
    x = torch.rand(4, 3, 32, 32)
    y = torch.tensor([encode(r, {b: r for b in BANDS}, d) for r, d in ((0.3, 2.0), (0.5, -3.0), (1.0, -7.0), (1.6, -12.0))])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    before = loss_fn(m(x), y)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_fn(m(x), y)
    assert float(after) < float(before.detach())


def test_tiny_trainer_writes_a_loadable_registry_folder_and_resumes(tiny_rooms, tmp_path):  # noqa: F811
    from soundsight.registry import resolve
    from soundsight_train import room_params

    out, run = tmp_path / "params-tiny", tmp_path / "run"
    rc = room_params.main(["--tiny", "--data", str(tiny_rooms), "--out", str(out), "--run-dir", str(run), "--threads", "1"])
    assert rc == 0
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"] == "room-params" and card["task"] == "room-acoustics"
    assert card["training"]["steps"] == 6 and card["training"]["outputs"] == list(OUTPUTS)
    assert "espeak-ng (synthetic speech)" in card["data"]["licences"]
    m = card["metrics"]["val_seen_rooms"]
    assert {"model", "baseline_training_mean", "reference_eyring_true_geometry"} <= set(m)
    assert m["model"]["n"] >= 1 and np.isfinite(m["model"]["rt60_speech_mae_s"])
    assert list(run.glob("views-1-*.npz")), "the extra views are cached in the run folder"
    task, load, default_name, _ = loaders.ARCHITECTURES["room-params"]
    assert task == "room-acoustics" and default_name == "rooms-params-128"
    model = load(resolve(out), "cpu")
    assert not model.training and model.image_size == 32
    est = model.estimate(torch.rand(1, 3, 32, 32))[0]
    assert 0.02 < est["rt60"] < 30 and np.isfinite(est["drr_db"])
    rc = room_params.main(["--tiny", "--steps", "8", "--data", str(tiny_rooms), "--out", str(out), "--run-dir", str(run),
                           "--threads", "1", "--resume"])
    assert rc == 0 and json.loads((out / "card.json").read_text())["training"]["steps"] == 8


def test_extra_datasets_add_training_rooms_but_never_the_evaluation_seed(tiny_rooms, tmp_path):  # noqa: F811
    from test_rooms import build_tiny_rooms

    from soundsight_train import room_params, rooms

    other = build_tiny_rooms(tmp_path / "other", seed=3, bank_seed=30, length_step=0.3, n_rays=500)
    out, run = tmp_path / "params", tmp_path / "run"
    common = ["--tiny", "--data", str(tiny_rooms), "--run-dir", str(run), "--threads", "1"]
    assert room_params.main(common + ["--out", str(tmp_path / "alone")]) == 0
    alone = json.loads((tmp_path / "alone" / "card.json").read_text())["training"]["rooms"]["train"]
    assert room_params.main(common + ["--out", str(out), "--extra-data", str(other)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["rooms"]["train"] == alone + 4  # every room of the other dataset, both splits
    assert card["training"]["rooms"]["extra datasets (all rooms train)"] == [other.name]
    # validation and unseen scoring stay the primary dataset's
    unseen = rooms.RoomsData(tiny_rooms).room_ids("unseen")[:4]
    assert card["metrics"]["unseen_rooms"]["model"]["n"] == len(unseen) > 0
    # --evaluate writes the same card metrics (the training-mean baseline counts the extra rooms)
    # and refuses to score without the datasets the model trained on
    with pytest.raises(SystemExit, match="trained with --extra-data"):
        room_params.main(common + ["--out", str(out), "--evaluate"])
    assert room_params.main(common + ["--out", str(out), "--evaluate", "--extra-data", str(other)]) == 0
    again = json.loads((out / "card.json").read_text())["metrics"]
    for key in ("model", "baseline_training_mean"):
        assert again["unseen_rooms"][key] == card["metrics"]["unseen_rooms"][key]
    with pytest.raises(SystemExit, match="same seed"):
        room_params.main(common + ["--out", str(tmp_path / "x"), "--extra-data", str(tiny_rooms)])


def test_targets_are_what_the_evaluation_scores(tiny_rooms):  # noqa: F811
    from soundsight_train import rooms
    from soundsight_train.room_params import measure_targets

    ds = rooms.RoomsData(tiny_rooms)
    for r in ds.room_ids("all"):
        t, stored = measure_targets(ds, r), ds.rooms[r]["acoustics"]
        assert t["rt60_speech"] == pytest.approx(stored["rt60_speech"], abs=2e-3)
        assert t["drr"] == pytest.approx(stored["drr"], abs=2e-2)
        assert t["rt60_bands"][1000] == pytest.approx(stored["rt60_bands"]["1000"], abs=2e-3)


def test_a_more_reverberant_prediction_gives_a_longer_synthesized_rt60(taught):
    bright, dark = _pictures()
    p_dry, p_wet = impulse.picture_params(taught, bright), impulse.picture_params(taught, dark)
    assert p_dry["rt60"] == pytest.approx(0.3, rel=0.15) and p_wet["rt60"] == pytest.approx(1.2, rel=0.15)
    h_dry, i_dry = impulse.ir_from_picture(taught, bright, 44100)
    h_wet, i_wet = impulse.ir_from_picture(taught, dark, 44100)
    # the synthesis honours the prediction: measured on the IR itself
    assert i_dry.rt60_speech == pytest.approx(p_dry["rt60"], rel=0.15)
    assert i_wet.rt60_speech == pytest.approx(p_wet["rt60"], rel=0.15)
    assert i_wet.rt60_speech > 2.5 * i_dry.rt60_speech and len(h_wet) > len(h_dry)
    assert i_dry.drr_db == pytest.approx(p_dry["drr_db"], abs=0.5) and i_wet.drr_db < i_dry.drr_db - 5
    assert i_wet.extra["predicted"]["rt60_bands"].keys() == {str(b) for b in BANDS}


def _png(path: Path, value: float) -> Path:
    from PIL import Image

    Image.fromarray(np.full((40, 56, 3), int(255 * value), np.uint8)).save(path)
    return path


def test_rematch_params_mode_end_to_end(params_home, tmp_path):
    voice, sr = sf.read(str(ASSETS / "voice.flac"), dtype="float32")
    sf.write(str(tmp_path / "voice.wav"), np.stack([voice, 0.5 * voice]).T, sr, subtype="PCM_16")
    env = {"SOUNDSIGHT_HOME": str(params_home)}
    reps = {}
    for name, value in (("dry", 0.85), ("wet", 0.2)):
        out = tmp_path / f"{name}.flac"
        r = run_cli("rematch", tmp_path / "voice.wav", "--room", _png(tmp_path / f"{name}.png", value), "--mode", "params",
                    "--params-model", "tiny-params", "--out", out, "--json", env=env)
        assert r.code == 0, r.err
        rep = json.loads(r.out)
        y, ysr = sf.read(str(out), dtype="float32", always_2d=True)
        assert ysr == sr and y.shape[1] == 2  # sample rate and channels kept
        assert rep["mode"] == "params" and rep["model"] == "tiny-params" and rep["tail_s"] > 0.1
        assert y.shape[0] > len(voice) and rep["output_duration_s"] > rep["input_duration_s"]
        assert rep["ir"]["source"] == "room" and set(rep["ir"]["predicted"]) == {"rt60", "drr_db", "rt60_bands"}
        side = json.loads(Path(str(out) + ".soundsight.json").read_text())
        assert "tiny-params" in side["models"] and side["params"]["params_model"] == "tiny-params"
        reps[name] = rep
    assert reps["wet"]["ir"]["predicted"]["rt60"] > 2.5 * reps["dry"]["ir"]["predicted"]["rt60"]
    assert reps["wet"]["tail_s"] > reps["dry"]["tail_s"]
    # the output really is more reverberant: measured against the input by deconvolution
    assert (reps["wet"]["estimates"]["output_vs_input"]["rt60_speech"]
            > 2 * reps["dry"]["estimates"]["output_vs_input"]["rt60_speech"])


def test_params_mode_errors(params_home, tmp_path):
    png = _png(tmp_path / "room.png", 0.5)
    voice = ASSETS / "voice.flac"
    out = tmp_path / "o.wav"
    r = run_cli("rematch", voice, "--room", png, "--mode", "params", "--params-model", "no-such-model", "--out", out,
                env={"SOUNDSIGHT_HOME": str(params_home)})
    assert_user_error(r, "room-acoustics model", "no-such-model")
    assert not out.exists()
    r = run_cli("rematch", voice, "--like", voice, "--mode", "params", "--out", out)
    assert_user_error(r, "--mode params needs a picture")
    # an acoustic-match model is not a room-acoustics one
    r = run_cli("rematch", voice, "--room", png, "--mode", "params", "--params-model", "rooms-avitar-16k", "--out", out)
    assert r.code == 2 and not out.exists()


def test_eval_rematch_params_row(tiny_rooms, params_home, capsys):  # noqa: F811
    from soundsight_train import eval_rematch as ev

    rc = ev.main(["--folder", str(tiny_rooms), "--split", "unseen", "--n", "1", "--params-model",
                  str(params_home / "models" / "tiny-params")])
    assert rc == 0
    text = capsys.readouterr().out
    assert f"| {ev.PARAMS_ROW} |" in text
    with pytest.raises(SystemExit):
        ev.main(["--folder", str(tiny_rooms), "--params-model", "rooms-rt60-16k"])  # wrong architecture


def test_physics_head_is_eyring_on_the_room_it_reads():
    """With one-hot classes, exact dimensions and a table holding the room's own materials, the
    physics head's output is the room simulator's Eyring RT60 (and the critical-distance DRR)."""
    from soundsight_plugins.acoustic_match import room_params_net as net
    from soundsight_train import rooms
    from soundsight_train.room_params import class_absorption_table

    # the head's vocabulary is the room sampler's
    assert net.FLOOR_CLASSES == tuple(rooms.FLOOR) and net.CEILING_CLASSES == tuple(rooms.CEILING)
    assert net.WALL_CLASSES == tuple(rooms.WALLS) and net.SURFACES == rooms.SURFACES
    assert net.AIR_M == tuple(rooms._AIR_M[b] for b in BANDS)
    table = class_absorption_table()
    assert table.shape == (net.N_CLASS_ROWS, len(BANDS)) and bool(((table > 0) & (table < 1)).all())
    curtains = net.CLASS_ROWS["wall"] + net.WALL_CLASSES.index("curtains")
    glass = net.CLASS_ROWS["wall"] + net.WALL_CLASSES.index("glass")
    assert float(table[curtains].mean()) > 3 * float(table[glass].mean())  # the classes differ as they should

    # the walls share the wall classes' rows: give the four walls one material
    dims, wall = [6.0, 9.0, 3.2], "brickwork"
    mats = {"floor": "carpet_cotton", "ceiling": "hard_surface", "west": wall, "east": wall, "south": wall, "north": wall}
    own = torch.full((net.N_CLASS_ROWS, len(BANDS)), 0.5)
    aux = torch.full((1, net.N_AUX), -50.0)
    aux[0, :4] = torch.tensor([math.log(v) for v in dims] + [math.log(2.5)])
    k = len(net.GEOMETRY)
    for s in net.SURFACES:  # class 0 of each surface (one-hot), whose table row holds its material
        aux[0, k] = 50.0
        k += len(net.surface_classes(s))
    octaves = (125, 250, 500, 1000, 2000, 4000, 8000)
    cols = [octaves.index(b) for b in BANDS]
    own[net.CLASS_ROWS["floor"]] = torch.tensor(rooms._absorption(mats["floor"])[cols])
    own[net.CLASS_ROWS["ceiling"]] = torch.tensor(rooms._absorption(mats["ceiling"])[cols])
    own[net.CLASS_ROWS["wall"]] = torch.tensor(rooms._absorption(wall)[cols])
    out = net.eyring_outputs(aux, own)[0]
    want = rooms.eyring_rt60(dims, mats)[cols]
    assert torch.allclose(out[1:6].exp(), torch.tensor(want, dtype=torch.float32), rtol=1e-4)
    speech = float(np.exp(np.mean(np.log(want))))
    assert math.exp(float(out[0])) == pytest.approx(speech, rel=1e-4)
    drr = 20 * math.log10(0.057 * math.sqrt(np.prod(dims) / speech) / 2.5)
    assert float(out[6]) * 10 == pytest.approx(drr, abs=1e-3)
    # a bigger room of the same materials reverberates longer
    aux2 = aux.clone()
    aux2[0, :3] += math.log(2.0)
    assert bool((net.eyring_outputs(aux2, own)[0, :6] > out[:6]).all())


def test_material_vocabulary_is_eyring_on_the_true_materials():
    """With the material vocabulary, one-hot true materials and exact geometry give the room
    simulator's own Eyring RT60 through the trainer's table (no hand-made rows), and the class
    marginal of the material logits is the log of the summed probabilities."""
    from soundsight_plugins.acoustic_match import room_params_net as net
    from soundsight_train import rooms
    from soundsight_train.room_params import class_absorption_table

    for where in ("floor", "ceiling", "wall"):  # the head's materials are the room sampler's
        assert {c: tuple(v[1]) for c, v in rooms.CLASSES[where].items()} == net.MATERIALS[where]
    voc = "material"
    table = class_absorption_table(voc)
    assert table.shape == (net.table_rows(voc)["total"], len(BANDS)) and table.shape[0] == 19 + 12 + 32
    room = rooms.sample_room(np.random.default_rng([5, 0]))
    aux = torch.full((1, net.n_aux(voc)), -50.0)
    aux[0, :4] = torch.tensor([math.log(v) for v in room["dims"]] + [math.log(room["distance"])])
    k = len(net.GEOMETRY)
    for s in net.SURFACES:
        aux[0, k + net.vocabulary_of(s, voc).index(room["materials"][s])] = 50.0
        k += len(net.vocabulary_of(s, voc))
    out = net.eyring_outputs(aux, table, voc)[0]
    cols = [(125, 250, 500, 1000, 2000, 4000, 8000).index(b) for b in BANDS]
    want = np.asarray(room["eyring_rt60"])[cols]
    assert torch.allclose(out[1:6].exp(), torch.tensor(want, dtype=torch.float32), rtol=2e-3)

    logits = torch.randn(3, len(net.vocabulary_of("west", voc)))
    marg = net.class_logits(logits, "west", voc).log_softmax(-1).exp()
    probs = logits.softmax(-1)
    idx = net.class_of_entry("west", voc)
    for c in range(len(net.WALL_CLASSES)):
        want_c = probs[:, [i for i, ci in enumerate(idx) if ci == c]].sum(-1)
        assert torch.allclose(marg[:, c], want_c, atol=1e-5)


def test_material_vocabulary_trains(tiny_rooms, tmp_path):  # noqa: F811
    from soundsight.registry import resolve
    from soundsight_plugins.acoustic_match import room_params_net as net
    from soundsight_train import room_params

    out = tmp_path / "material"
    assert room_params.main(["--tiny", "--physics", "--vocabulary", "material", "--grid", "2", "--data", str(tiny_rooms),
                             "--out", str(out), "--run-dir", str(tmp_path / "run"), "--threads", "1"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["vocabulary"] == "material" and "materials and their classes" in card["training"]["loss"]
    assert card["config"]["grid"] == 2
    reading = card["metrics"]["val_seen_rooms"]["model_room_reading"]
    assert set(reading["material_accuracy"]) == set(reading["class_accuracy"]) == set(net.SURFACES)
    assert all(0 <= reading[k][s] <= 1 for k in ("class_accuracy", "material_accuracy") for s in net.SURFACES)
    parts = reading["eyring_rt60_speech_mae_s"]  # which part of the reading limits the model
    assert set(parts) == {"own_reading", "true_geometry", "true_surfaces", "true_both", "true_visible_surfaces",
                          "true_geometry_and_visible_surfaces"}
    assert all(np.isfinite(v) and v >= 0 for v in parts.values())
    model = loaders.ARCHITECTURES["room-params"][1](resolve(out), "cpu")
    assert torch.allclose(model.class_absorption, room_params.class_absorption_table("material"))
    assert np.isfinite(model.estimate(torch.rand(1, 3, 32, 32))[0]["rt60"])
    # a model compared with itself on the same pictures: zero difference, exactly
    from soundsight_train import room_params_compare

    _, rt, drr = room_params_compare.errors(str(out), str(tiny_rooms))
    assert len(rt) >= 1 and np.all(rt >= 0) and np.all(np.isfinite(drr))
    assert room_params_compare.main([f"{out}@{tiny_rooms}", f"{out}@{tiny_rooms}", "--boot", "50"]) == 0
    assert room_params_compare.bootstrap_mean_ci(np.zeros(5), np.random.default_rng(0).integers(0, 5, (50, 5))) == (0.0, 0.0)
    assert room_params_compare.main([str(out)]) == 2  # not MODEL@DATA


def test_physics_model_trains_on_its_room_reading_and_mirrors_the_side_walls(tiny_rooms, tmp_path):  # noqa: F811
    from soundsight.registry import resolve
    from soundsight_plugins.acoustic_match import room_params_net as net
    from soundsight_train import room_params

    m = _tiny(physics=True, dropout=0.0)
    assert m.forward_parts(torch.rand(2, 3, 32, 32))[1].shape == (2, net.N_AUX)
    x = torch.rand(4, 3, 32, 32)
    y = torch.tensor([encode(r, {b: r for b in BANDS}, d) for r, d in ((0.3, 2.0), (0.5, -3.0), (1.0, -7.0), (1.6, -12.0))])
    a = torch.tensor([[1.0, 1.5, 1.0, 0.5, 0, 1, 2, 6, 3, 7]] * 4)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(2):
        pred, aux = m.forward_parts(x)
        loss = loss_fn(pred, y) + net.aux_loss(aux, a)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[1] < losses[0]
    # a mirrored picture swaps the west (index 2) and east (index 3) walls' classes, nothing else
    flip = torch.tensor([True, False, True, False])
    swapped = room_params.mirror_aux_targets(a, flip)
    assert swapped[0, 4 + 2] == 6 and swapped[0, 4 + 3] == 2 and swapped[1, 4 + 2] == 2
    assert torch.equal(swapped[:, [0, 1, 2, 3, 4, 5, 8, 9]], a[:, [0, 1, 2, 3, 4, 5, 8, 9]])

    out, run = tmp_path / "physics", tmp_path / "run"
    rc = room_params.main(["--tiny", "--physics", "--data", str(tiny_rooms), "--out", str(out), "--run-dir", str(run),
                           "--threads", "1"])
    assert rc == 0
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["physics"] is True and "cross-entropy" in card["training"]["loss"]
    reading = card["metrics"]["val_seen_rooms"]["model_room_reading"]
    assert set(reading["class_accuracy"]) == set(net.SURFACES) and reading["height_mean_rel_error"] >= 0
    ref = card["metrics"]["val_seen_rooms"]["reference_eyring_true_geometry_class_means_calibrated"]
    assert ref["n"] >= 1 and np.isfinite(ref["rt60_speech_mae_s"])
    model = loaders.ARCHITECTURES["room-params"][1](resolve(out), "cpu")
    assert torch.allclose(model.class_absorption, room_params.class_absorption_table())  # saved with the weights
    est = model.estimate(torch.rand(1, 3, 32, 32))[0]
    assert 0.02 < est["rt60"] < 30 and np.isfinite(est["drr_db"])
    # resuming checks the config as JSON gives it back (the geometry offsets are a list there)
    assert room_params.main(["--tiny", "--physics", "--steps", "8", "--data", str(tiny_rooms), "--out", str(out),
                             "--run-dir", str(run), "--threads", "1", "--resume"]) == 0


def test_augment_moves_the_surface_map_with_the_picture(tiny_rooms):  # noqa: F811
    from soundsight_plugins.acoustic_match import room_params_net as net
    from soundsight_train import room_params, rooms

    ds = rooms.RoomsData(tiny_rooms)
    S = ds.image(0).shape[0]
    labs = torch.from_numpy(np.stack([rooms.surface_map(ds.rooms[r], S) for r in range(len(ds.rooms))] * 4))
    # each label painted in its own colour (3 bits): after the augmentation the colours must still
    # say the label, with the west and east walls swapped where the picture was mirrored
    code = torch.tensor([[(k >> b) & 1 for b in range(3)] for k in range(len(net.REGIONS))], dtype=torch.float32)
    x = (code[labs.long()] * 0.8 + 0.1).permute(0, 3, 1, 2)
    xa, flip, la = room_params.augment(x, torch.Generator().manual_seed(0), labs)
    assert flip.any() and (~flip).any() and la.dtype == labs.dtype
    seen = ((xa > 0.5).long() * torch.tensor([1, 2, 4])[None, :, None, None]).sum(1)
    w, e = net.SURFACES.index("west"), net.SURFACES.index("east")
    swap = torch.arange(len(net.REGIONS))
    swap[w], swap[e] = e, w
    seen = torch.where(flip[:, None, None], swap[seen], seen)
    assert (seen == la.long()).float().mean() > 0.97  # only the crops' resampled edges differ
    assert net.dense_targets(la, (8, 8)).shape == (len(la), 8, 8)


def test_dense_head_pools_its_pixels_into_the_surface_reading():
    from soundsight_plugins.acoustic_match import room_params_net as net

    m = _tiny(physics=True, dense=True, vocabulary="material", dropout=0.0)
    out, aux, dense = m.forward_all(torch.rand(2, 3, 32, 32))
    rows = net.table_rows("material")["total"]
    assert dense.shape == (2, len(net.REGIONS) + rows, 8, 8) and aux.shape == (2, net.n_aux("material"))
    # the pooled term: pixels the head gives to the floor, all saying "entry 3", make the floor read entry 3
    fake = torch.full((1, len(net.REGIONS) + rows, 8, 8), -20.0)
    fake[:, net.SURFACES.index("floor")] = 20.0
    fake[:, len(net.REGIONS) + 3] = 20.0
    pooled = net.pooled_dense_logits(fake, "material")
    _, logits = net.split_aux(pooled, "material")
    assert int(logits["floor"].argmax()) == 3 and float(logits["floor"].max() - logits["floor"].min()) > 20
    assert float(logits["south"].abs().max()) < 1.0  # a surface with no pixels adds ~nothing
    assert torch.equal(pooled[:, : len(net.GEOMETRY)], torch.zeros(1, len(net.GEOMETRY)))
    # the per-pixel loss falls on a step and is low for a head that states the truth
    labels = torch.zeros(1, 8, 8, dtype=torch.long)  # all floor
    target = torch.tensor([[1.0, 1.5, 1.0, 0.5, 3, 0, 0, 0, 0, 0]])
    assert float(net.dense_loss(fake, labels, target, "material")) < 1e-3
    assert float(net.dense_loss(fake, labels, target.clone().index_fill_(1, torch.tensor([4]), 5.0), "material")) > 10
    with pytest.raises(ValueError, match="physics"):
        _tiny(dense=True)


def test_dense_trainer_runs_and_writes_its_config(tiny_rooms, tmp_path):  # noqa: F811
    from soundsight.registry import resolve
    from soundsight_train import room_params

    out = tmp_path / "dense"
    assert room_params.main(["--tiny", "--physics", "--dense", "1", "--data", str(tiny_rooms), "--out", str(out),
                             "--run-dir", str(tmp_path / "run"), "--threads", "1"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["dense"] is True and "per-pixel" in card["training"]["loss"]
    model = loaders.ARCHITECTURES["room-params"][1](resolve(out), "cpu")
    assert model.cfg.dense and np.isfinite(model.estimate(torch.rand(1, 3, 32, 32))[0]["rt60"])
    with pytest.raises(SystemExit, match="--dense needs --physics"):
        room_params.main(["--tiny", "--dense", "1", "--data", str(tiny_rooms), "--out", str(tmp_path / "x"),
                          "--run-dir", str(tmp_path / "run2")])
