"""Synthetic rooms (train/rooms.py) and the baseline evaluation (train/eval_rematch.py).

Room sampling and rendering need only numpy; simulation needs pyroomacoustics, the
acoustics-alteration path nara_wpe (``pip install pyroomacoustics nara_wpe``). A short
synthetic speech-like signal stands in for espeak-ng, so only the espeak test itself needs
``apt-get install espeak-ng``.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from soundsight_plugins.acoustic_match import acoustics as ac
from soundsight_train import rooms

from test_acoustics import speech_like

SR = rooms.SR


def _room(seed=0, **over):
    r = rooms.sample_room(np.random.default_rng([seed, 0]))
    for k, v in over.items():
        r[k] = v
    return r


def _with_materials(room, dims=None, floor=None, wall=None, ceiling=None):
    """A copy of ``room`` with every wall (and optionally floor / ceiling) of one class."""
    r = copy.deepcopy(room)
    if dims:
        r["dims"] = list(dims)
        W, D, H = dims
        r["camera"]["pos"] = [W / 2, 0.4, 1.5]
        r["speaker"]["mouth"] = [W / 2, min(D - 0.5, 3.0), 1.6]
        r["door"] = None
    rng = np.random.default_rng(1)
    for surf, choice in (("floor", floor), ("ceiling", ceiling), ("west", wall), ("east", wall),
                         ("north", wall), ("south", wall)):
        if choice is None:
            continue
        cls, mat = choice
        r["classes"][surf] = cls
        r["materials"][surf] = mat
        r["colours"][surf] = rooms._palette(rng, cls, surf)
    r["eyring_rt60"] = [float(v) for v in rooms.eyring_rt60(r["dims"], r["materials"])]
    return r


# ----------------------------------------------------------------------------------------------
# sampling and rendering (numpy only)


def test_sample_room_is_deterministic_and_plausible():
    for seed in range(25):
        r = _room(seed)
        assert r == _room(seed)
        W, D, H = r["dims"]
        assert 1.0 <= min(W, D) and max(W, D) <= 35.0 and 2.1 <= H <= 12.0
        x, y, z = r["speaker"]["mouth"]
        assert 0.35 <= x <= W - 0.35 and 0.35 <= y <= D - 0.35 and z < H
        cx, cy, cz = r["camera"]["pos"]
        assert 0 < cx < W and 0 < cy < D and 0 < cz < H
        assert r["distance"] >= 0.79
        rt = np.asarray(r["eyring_rt60"])
        assert 0.12 <= rt[1:6].min() and rt[1:6].max() <= 2.0
        # the speaker is inside the camera's field of view
        f, right, up = rooms._camera_basis(r["camera"])
        d = np.asarray(r["speaker"]["mouth"]) - np.asarray(r["camera"]["pos"])
        tan = math.tan(r["camera"]["hfov"] / 2)
        assert d @ f > 0
        assert abs((d @ right) / (d @ f)) < tan and abs((d @ up) / (d @ f)) < tan


def test_render_is_deterministic():
    r = _room(3)
    a = rooms.render_room(r, size=48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, rooms.render_room(copy.deepcopy(r), size=48))
    assert a.std() > 10  # not a flat picture


def test_surface_map_labels_what_the_render_shows():
    from soundsight_plugins.acoustic_match import room_params_net as net

    assert net.REGIONS[: len(rooms.SURFACES)] == rooms.SURFACES and len(net.REGIONS) == rooms.N_SURFACE_LABELS
    assert net.REGIONS.index("speaker") == rooms.SPEAKER_LABEL and net.REGIONS.index("door") == rooms.DOOR_LABEL
    base = _with_materials(_room(5), dims=(5.0, 12.0, 3.0))
    lab = rooms.surface_map(base, 64)
    assert lab.shape == (64, 64) and lab.dtype == np.uint8
    assert np.array_equal(lab, rooms.surface_map(copy.deepcopy(base), 64))
    # the camera looks north, level: ceiling above floor, west left of east, the speaker in view
    f = rooms.SURFACES.index
    rows = lambda k: np.nonzero((lab == k).any(axis=1))[0]  # noqa: E731
    cols = lambda k: np.nonzero((lab == k).any(axis=0))[0]  # noqa: E731
    assert rows(f("ceiling")).mean() < rows(f("north")).mean() < rows(f("floor")).mean()
    assert cols(f("west")).mean() < cols(f("north")).mean() < cols(f("east")).mean()
    assert not (lab == f("south")).any() and (lab == rooms.SPEAKER_LABEL).sum() > 10
    # the speaker's pixels are where the render differs from the same room without the speaker
    away = copy.deepcopy(base)
    away["speaker"]["mouth"] = [2.5, 0.1, 1.6]  # behind the camera
    changed = np.abs(rooms.render_room(base, size=64).astype(float) - rooms.render_room(away, size=64)).sum(axis=2) > 30
    spk = lab == rooms.SPEAKER_LABEL
    assert (changed & spk).sum() > 0.8 * spk.sum()
    assert not (rooms.surface_map(away, 64) == rooms.SPEAKER_LABEL).any()
    # a door is its own label, on its wall
    door = copy.deepcopy(away)
    door["door"] = {"wall": "north", "u0": 2.0, "width": 0.9, "height": 2.05, "colour": [0.5, 0.3, 0.2]}
    dl = rooms.surface_map(door, 64)
    assert (dl == rooms.DOOR_LABEL).sum() > 5 and set(np.unique(lab[dl == rooms.DOOR_LABEL])) <= {f("north"), rooms.SPEAKER_LABEL}


def test_materials_render_differently():
    base = _with_materials(_room(4), dims=(4.0, 6.0, 2.8))
    pics = {}
    for cls, (_, mats) in rooms.WALLS.items():
        pics[cls] = rooms.render_room(_with_materials(base, wall=(cls, mats[0])), size=48).astype(float)
    names = list(pics)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(pics[a] - pics[b]).mean() > 4, (a, b)
    floors = [rooms.render_room(_with_materials(base, floor=(cls, mats[0])), size=48).astype(float)
              for cls, (_, mats) in rooms.FLOOR.items()]
    for i in range(len(floors)):
        for j in range(i + 1, len(floors)):
            assert np.abs(floors[i][32:] - floors[j][32:]).mean() > 4  # the lower part shows the floor


def test_material_textures_give_each_material_its_own_look():
    # the acoustics differ within a class (thin carpet vs felt, sheer vs velvet curtains), so the
    # picture must too: same room, same colours, only the material changes
    base = _with_materials(_room(4), dims=(4.0, 6.0, 2.8))
    for where, table in (("wall", rooms.WALLS), ("floor", rooms.FLOOR), ("ceiling", rooms.CEILING)):
        for cls, (_, mats) in table.items():
            pics = [rooms.render_room(_with_materials(base, **{where: (cls, m)}), size=64, textures="material")
                    for m in mats]
            for i in range(len(pics)):
                for j in range(i + 1, len(pics)):
                    assert np.abs(pics[i].astype(float) - pics[j]).mean() > 0.25, (where, cls, mats[i], mats[j])
            # the default looks show the class only
            assert all(np.array_equal(rooms.render_room(_with_materials(base, **{where: (cls, m)}), size=64),
                                      rooms.render_room(_with_materials(base, **{where: (cls, mats[0])}), size=64))
                       for m in mats[1:])


def test_speaker_size_shows_distance_and_room_size_shows():
    base = _with_materials(_room(5), dims=(5.0, 12.0, 3.0))
    away = copy.deepcopy(base)
    away["speaker"]["mouth"] = [2.5, 0.1, 1.6]  # behind the camera: not in the picture
    empty = rooms.render_room(away, size=64).astype(float)

    def figure_pixels(dist):
        r = copy.deepcopy(base)
        r["speaker"]["mouth"] = [2.5, 0.4 + dist, 1.6]
        return int((np.abs(rooms.render_room(r, size=64).astype(float) - empty).sum(axis=2) > 30).sum())

    near, far = figure_pixels(1.5), figure_pixels(8.0)
    assert near > 4 * far > 0
    # a bigger room: the far wall covers less of the picture
    small = rooms.render_room(_with_materials(away, dims=(3.0, 3.5, 2.5)), size=64)
    big = rooms.render_room(_with_materials(away, dims=(15.0, 25.0, 8.0)), size=64)
    assert np.abs(small.astype(float) - big.astype(float)).mean() > 10


# ----------------------------------------------------------------------------------------------
# simulation (pyroomacoustics)


@pytest.fixture(scope="module")
def simulated():
    pytest.importorskip("pyroomacoustics", reason="pip install pyroomacoustics")
    base = _room(6)
    hard = ("plaster", "hard_surface")
    soft = ("curtains", "curtains_velvet")
    cases = {
        "small_soft": _with_materials(base, dims=(4.0, 5.0, 2.7), wall=soft, floor=("carpet", "carpet_cotton"),
                                      ceiling=("acoustic_tile", "ceiling_fissured_tile")),
        "small_hard": _with_materials(base, dims=(4.0, 5.0, 2.7), wall=hard, floor=("tile", "ceramic_tiles"),
                                      ceiling=("acoustic_tile", "ceiling_fissured_tile")),
        "big_hard": _with_materials(base, dims=(12.0, 18.0, 6.0), wall=hard, floor=("tile", "ceramic_tiles"),
                                    ceiling=("acoustic_tile", "ceiling_fissured_tile")),
    }
    out = {}
    for name, r in cases.items():
        h, _ = rooms.simulate_rir(r, seed=0)
        out[name] = (r, *rooms.prepare_rir(h))
    return out


def test_room_simulation_sanity(simulated):
    rt = {k: ac.rt60_schroeder(h, SR, band=ac.SPEECH_BAND) for k, (_, h, _) in simulated.items()}
    assert rt["small_soft"] < rt["small_hard"] < rt["big_hard"]
    for _, h, g in simulated.values():
        assert int(np.argmax(np.abs(h))) == rooms.DIRECT_INDEX
        assert np.sum(h.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-6)
        assert g > 0
    # seeded: the same room and seed give the same RIR
    r = simulated["small_soft"][0]
    h1, _ = rooms.simulate_rir(r, seed=3)
    h2, _ = rooms.simulate_rir(r, seed=3)
    assert np.array_equal(h1, h2)


def test_schroeder_agrees_with_pyroomacoustics(simulated):
    import pyroomacoustics as pra

    for name, (_, h, _) in simulated.items():
        mine = ac.rt60_schroeder(h, SR, noise_comp=False)
        theirs = pra.experimental.measure_rt60(h, SR, decay_db=30)  # the same -5 .. -35 dB range
        assert mine == pytest.approx(theirs, rel=0.05), name
        m = rooms.measure(h)
        assert m["rt60"] == pytest.approx(mine, abs=1e-3)
        assert set(m["rt60_bands"]) == {"125", "250", "500", "1000", "2000", "4000"}


def test_blind_estimate_on_simulated_reverberant_speech(simulated):
    """Blind RT60 (speech band) within 40 % in each room and in the right order; the unseen-room
    error of the dataset is measured by eval_rematch."""
    x = speech_like(6.0, seed=4)
    est, true = [], []
    for name in ("small_soft", "small_hard", "big_hard"):
        _, h, _ = simulated[name]
        e = ac.blind_estimate(ac.convolve(x, h), SR)
        est.append(e.rt60)
        true.append(ac.rt60_schroeder(h, SR, band=ac.SPEECH_BAND, noise_comp=False))
        assert e.rt60 == pytest.approx(true[-1], rel=0.4), name
    assert est[0] < est[1]


def _late_fraction(dry, y):
    """Share of the effective IR's speech-band energy that arrives 50 ms after the start."""
    h = ac.band_filter(ac.estimate_ir(dry, y, length=3 * SR), SR, ac.SPEECH_BAND)
    p = h.astype(np.float64) ** 2
    return p[int(0.05 * SR):].sum() / p.sum()


def test_wpe_alteration_path(simulated):
    """WPE takes late reverberation out; convolving with a longer room's RIR lengthens the decay;
    the noise lands at the SNR asked for. (WPE cannot remove a 1.3 s tail, so altering a long
    room towards a short one keeps some of the long decay: the paper's learned dereverberation
    is stronger.)"""
    pytest.importorskip("nara_wpe", reason="pip install nara_wpe")
    x = speech_like(3.0, seed=5)
    _, h_long, _ = simulated["big_hard"]
    _, h_short, _ = simulated["small_soft"]
    wet_long = ac.convolve(x, h_long)
    d = rooms.dereverberate(wet_long)
    assert d.shape == wet_long.shape and np.all(np.isfinite(d))
    assert _late_fraction(x, d) < 0.97 * _late_fraction(x, wet_long)
    wet_short = ac.convolve(x, h_short)
    t_short = ac.rt60_schroeder(h_short, SR, band=ac.SPEECH_BAND)
    y = rooms.alter(wet_short, SR, h_long, np.random.default_rng(0), snr_db=None)
    assert ac.effective_rt60(x, y, SR) > 2 * t_short
    assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) == pytest.approx(
        np.sqrt(np.mean(wet_short.astype(np.float64) ** 2)), rel=1e-3)
    noisy = rooms.add_noise(np.ones(SR, np.float32), 5.0, np.random.default_rng(1))
    snr = 10 * math.log10(1.0 / np.mean((noisy - 1.0) ** 2))
    assert snr == pytest.approx(5.0, abs=0.2)
    y2 = rooms.alter(wet_short, SR, h_long, np.random.default_rng(2))  # 2 .. 10 dB SNR
    n2 = y2.astype(np.float64) - y
    snr2 = 10 * math.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(n2 ** 2))
    assert 2.0 - 0.3 <= snr2 <= 10.0 + 0.3


# ----------------------------------------------------------------------------------------------
# a tiny build, pairs, show, the evaluation


def build_tiny_rooms(data_dir, *, seed: int, bank_seed: int, length_step: float, **spec):
    """A 4-room dataset whose speech bank is six synthetic utterances (3 train, 3 test) instead
    of espeak-ng and the packaged recordings, so it builds in seconds anywhere."""
    pytest.importorskip("pyroomacoustics", reason="pip install pyroomacoustics")

    def fake_bank(n, seed, **kw):
        items, chunks, pos = [], [], 0
        for j in range(6):
            a = speech_like(2.0 + length_step * j, seed=bank_seed + j)
            items.append({"source": "synthetic", "licence": "none", "band_hz": SR // 2, "start": pos,
                          "length": len(a), "split": "test" if j >= 3 else "train"})
            chunks.append(a)
            pos += len(a)
        return np.concatenate(chunks), items

    mp = pytest.MonkeyPatch()
    mp.setattr(rooms, "build_speech_bank", fake_bank)
    try:
        return rooms.build(rooms.RoomsSpec(rooms=4, speech=0, real_speech=0, image_size=48, **spec), seed=seed,
                           data_dir=data_dir, log=lambda *a: None)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_rooms(tmp_path_factory.mktemp("data"), seed=1, bank_seed=10, length_step=0.5)


def test_tiny_build_pairs_and_show(tiny, tmp_path):
    ds = rooms.RoomsData(tiny)
    assert len(ds.room_ids("seen")) == 3 and len(ds.room_ids("unseen")) == 1
    assert ds.images.shape == (4, 48, 48, 3)
    h = ds.rir(0)
    assert np.sum(h.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-3)  # 24-bit storage
    assert ds.rooms[0]["acoustics"]["rt60_speech"] > 0
    dry, wet, img = ds.pair(0, 1, crop=8000, offset=1000)
    assert dry.shape == wet.shape == (8000,) and img.shape == (48, 48, 3)
    full = ac.convolve(ds.utterance(1), h)
    np.testing.assert_allclose(wet, full[1000:9000], atol=1e-5)
    np.testing.assert_allclose(dry, ds.utterance(1)[1000:9000])
    d2, w2, _ = ds.pair(0, 0, crop=None)
    assert len(d2) == len(w2) == len(ds.utterance(0)) + len(h) - 1
    # a crop longer than the utterance is zero-padded
    d3, w3, _ = ds.pair(0, 0, crop=3 * SR, offset=0)
    assert d3.shape == (3 * SR,) and not np.any(d3[len(ds.utterance(0)):])
    written = rooms.show(tiny, 3, tmp_path / "show", seed=0)
    assert (tmp_path / "show" / "grid.png").exists() and len(written) == 3 * 2 + 2
    st = rooms.stats(tiny)
    assert st["seen"]["rooms"] == 3


def test_altered_pairs(tiny):
    pytest.importorskip("nara_wpe", reason="pip install nara_wpe")
    ds = rooms.RoomsData(tiny)
    x, y, img = ds.altered(0, 1, 2, np.random.default_rng(0), crop=SR)
    assert x.shape == y.shape == (SR,) and np.all(np.isfinite(x))
    assert not np.allclose(x, y)


def test_eval_rematch_baselines_and_a_model_row(tiny):
    from soundsight_train import eval_rematch as ev

    ds = rooms.RoomsData(tiny)
    items = ev.make_items(ds, "seen", n=2, seed=0, min_dry_s=1.0)
    calls = []

    def fake_model(dry, image, sr):
        calls.append(image.shape)
        return ac.convolve(dry, ac.synthetic_ir(0.5, 0.0, sr))

    res = ev.evaluate(items=items, extra={"model": ev.from_rematch(fake_model)})
    rows = res["rows"]
    assert list(rows) == ["input", "blind reverberator", "oracle", "model"]
    assert rows["oracle"]["stft"] < 1e-8 and rows["oracle"]["rt60_err"] < 0.05
    assert rows["input"]["rt60_err"] > 0.1
    assert rows["input"]["stft"] > rows["oracle"]["stft"]
    assert calls == [(48, 48, 3)] * 2
    text = ev.markdown(res)
    assert "| oracle |" in text and "| model |" in text


def test_espeak_utterance():
    if not rooms.espeak_available():
        pytest.skip("espeak-ng not installed: apt-get install espeak-ng")
    x, sr = rooms.espeak_utterance("The old man painted the red bicycle.", "en-us+f3", 160, 50)
    a = rooms.trim_and_level(x, sr)
    assert a is not None and 1.0 < len(a) / SR < 5.0
    assert math.sqrt(np.mean(a.astype(np.float64) ** 2)) < rooms.SPEECH_RMS * 1.01
    assert rooms.espeak_variants()


def test_build_without_speech_fails_before_simulating_any_room(tmp_path, monkeypatch):
    def no_rooms(job):
        raise AssertionError("a room was simulated before the speech bank was checked")

    monkeypatch.setattr(rooms, "_room_job", no_rooms)
    with pytest.raises(RuntimeError, match="no dry speech"):
        rooms.build(rooms.RoomsSpec(rooms=3, speech=0, real_speech=0), seed=5, data_dir=tmp_path, log=lambda *a: None)
    assert not list(tmp_path.glob("*/meta.json"))


def test_find_rooms_uses_a_material_looks_build_only_when_named(tmp_path):
    from soundsight_train.avitar import find_rooms

    for name, looks in (("rooms-400r-s0", "class"), ("rooms-400r-s0-eef3c1fd", "material")):  # the newest last
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text(json.dumps({"spec": {"textures": looks}}))
    assert find_rooms(str(tmp_path), False).name == "rooms-400r-s0"
    assert find_rooms(str(tmp_path / "rooms-400r-s0-eef3c1fd"), False).name == "rooms-400r-s0-eef3c1fd"


def test_room_bounds_replays_the_builds_realisation_and_measures_others(tiny):
    from soundsight_train import room_bounds as rb

    ds = rooms.RoomsData(tiny)
    r = ds.room_ids("unseen")[0]
    stored = ds.rooms[r]["acoustics"]
    room, sim_seed = rooms.room_draw(ds.meta["seed"], r)
    assert room["dims"] == ds.rooms[r]["dims"]
    again = rb.resimulate(ds.rooms[r], sim_seed, n_rays=ds.meta["spec"]["n_rays"])
    assert (again["rt60_speech"], again["drr"]) == (stored["rt60_speech"], stored["drr"])  # the build's own draw
    noise = rb.simulation_noise(ds, [r], seeds=2, hits=10)
    assert 0 < noise["rt60_one_other_mae_s"] < 0.5 * stored["rt60_speech"]  # another realisation, the same room
    assert noise["rt60_between_others_mae_s"] > 0 and noise["drr_one_other_mae_db"] > 0


def test_full_information_regressor_learns_a_function_of_the_room():
    from soundsight_train import room_bounds as rb

    def labelled(seed):  # a label that is exactly a function of the room: the regressor's job is possible
        room = rooms.sample_room(np.random.default_rng([seed, 5]))
        speech = float(np.exp(np.mean(np.log(room["eyring_rt60"][1:6]))))
        room["acoustics"] = {"rt60_speech": 1.2 * speech, "drr": -3.0 * math.log(room["distance"])}
        return room

    train = [labelled(s) for s in range(300)]
    test = [labelled(s) for s in range(1000, 1040)]
    got = rb.full_information(train, test)
    mean_rt = np.mean([t["acoustics"]["rt60_speech"] for t in test])
    assert got["eyring_calibrated_rt60_mae_s"] < 1e-6  # a pure scale is what the calibration removes
    assert got["rt60_mae_s"] < 0.1 * mean_rt and got["drr_mae_db"] < 0.5
