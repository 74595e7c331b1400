"""Scene dataset (train/scenes.py): the readers and the composition invariants.

Everything but the last test runs on a small fake package tree written in tmp_path with the
layout the real Debian packages install (tuxpaint stamps, opensfx.cat, sonic-pi samples,
mate-backgrounds), so no apt package is needed.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from soundsight_train import scenes

SR_SRC = 22050


# --------------------------------------------------------------------------------------------
# fake package tree


def _tone(freq, seconds, sr=SR_SRC, amp=0.3, bursts=2):
    t = np.arange(int(seconds * sr)) / sr
    env = np.clip(np.sin(np.pi * bursts * t / seconds), 0, None) ** 2
    return (amp * env * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav_bytes(x, sr=SR_SRC) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _stamp(path: Path, w, h, colour, shape="ellipse"):
    """RGBA cut-out: an opaque shape on a transparent canvas with a margin."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    inside = ((yy - cy) / (0.4 * h)) ** 2 + ((xx - cx) / (0.4 * w)) ** 2 <= 1 if shape == "ellipse" else (
        (abs(yy - cy) < 0.4 * h) & (abs(xx - cx) < 0.4 * w))
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.where(inside, 255, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba).save(path)


def write_cat_bytes(path: Path, entries) -> None:
    """The opensfx.cat layout, written here independently of scenes.write_cat:
    (uint32 offset | 1<<31, uint32 size) table; per entry: len, label\\0, RIFF, 0, len, name\\0."""
    table, body = b"", b""
    pos = 8 * len(entries)
    for label, wav, fname in entries:
        lab, fn = label.encode() + b"\0", fname.encode() + b"\0"
        table += struct.pack("<II", pos | 0x80000000, len(wav))
        chunk = bytes([len(lab)]) + lab + wav + b"\0" + bytes([len(fn)]) + fn
        body += chunk
        pos += len(chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(table + body)


SFX = [
    ('"Cow". Original "moo.wav" by "x". License: Creative Commons Zero 1.0.', 200, 1.2),
    ('"Horse". Original "neigh.wav" by "y". License: Creative Commons Attribution 3.0 Unported.', 700, 1.0),
    ('"Toyland: Cow". Comedy. License: Creative Commons Zero 1.0.', 900, 0.5),
    ('"Helicopter". Original "h.wav". License: Creative Commons Attribution-ShareAlike 3.0 Unported.', 90, 1.5),
]


def make_tree(root: Path) -> Path:
    st = root / scenes.STAMPS_DIR
    # dog: two stamps with sounds, one without, one sound without image, a spoken description
    _stamp(st / "animals/mammals/dogs/dog.png", 60, 40, (150, 100, 50))
    (st / "animals/mammals/dogs/dog.txt").write_text("A dog.\nfr.utf8=Un chien.\n")
    sf.write(st / "animals/mammals/dogs/dog.ogg", _tone(600, 0.8), SR_SRC)
    sf.write(st / "animals/mammals/dogs/dog_desc.ogg", _tone(300, 0.5), SR_SRC)  # speech: skipped
    _stamp(st / "animals/mammals/dogs/dingo.png", 50, 50, (200, 160, 90))
    (st / "animals/mammals/dogs/dingo.dat").write_text("nomirror\n")
    sf.write(st / "animals/mammals/dogs/fox.wav", _tone(800, 0.6), SR_SRC)  # sound only
    _stamp(st / "animals/mammals/dogs/fox_mirror.png", 30, 30, (0, 0, 0))  # mirror variant: skipped
    # cow: two stamps with sounds (+ opensfx "Cow")
    _stamp(st / "animals/mammals/bovines/cow.png", 80, 50, (90, 60, 40), "rect")
    sf.write(st / "animals/mammals/bovines/cow.ogg", _tone(150, 1.5), SR_SRC)
    _stamp(st / "animals/mammals/bovines/bull.png", 70, 45, (30, 20, 20))
    sf.write(st / "animals/mammals/bovines/bull.wav", _tone(120, 1.0), SR_SRC)
    # drum: one stamp with sound (+ two sonic-pi samples)
    _stamp(st / "hobbies/music/percussion/drumkit.png", 40, 60, (200, 30, 30), "rect")
    sf.write(st / "hobbies/music/percussion/drumkit.ogg", _tone(100, 0.4, bursts=4), SR_SRC)
    # an unrelated stamp with a sound, and a symbol
    _stamp(st / "household/vase.png", 20, 40, (10, 200, 10))
    sf.write(st / "household/vase.ogg", _tone(1000, 0.3), SR_SRC)
    (st / "symbols/math").mkdir(parents=True)
    sf.write(st / "symbols/math/1.ogg", _tone(440, 0.3), SR_SRC)
    # opensfx
    write_cat_bytes(root / scenes.OPENSFX_CAT,
                    [(lab, _wav_bytes(_tone(f, d)), f"src/wav/osfx_{i:02d}.wav") for i, (lab, f, d) in enumerate(SFX)])
    # sonic-pi
    sp = root / scenes.SONICPI_DIR
    sp.mkdir(parents=True)
    sf.write(sp / "drum_tom_lo_hard.flac", _tone(90, 0.7, bursts=1), 44100)
    sf.write(sp / "drum_snare_hard.flac", _tone(250, 0.3, bursts=1), 44100)
    sf.write(sp / "ambi_drone.flac", _tone(60, 1.0), 44100)  # no class
    # background
    bg = root / scenes.MATE_DIR
    bg.mkdir(parents=True)
    yy, xx = np.mgrid[0:180, 0:240]
    rng = np.random.default_rng(0)
    img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1) + rng.integers(0, 20, (180, 240, 3))
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(bg / "Meadow.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("pkgs"))


@pytest.fixture(scope="module")
def catalog(tree):
    return scenes.scan(tree, extra_backgrounds=False)


SPEC = scenes.SceneSpec(seconds=1.0, test_frac=0.5)


@pytest.fixture(scope="module")
def media(catalog):
    return scenes.load_media(catalog, SPEC, seed=0)


# --------------------------------------------------------------------------------------------
# readers


def test_opensfx_reader_parses_the_container(tmp_path):
    x = _tone(440, 0.5)
    write_cat_bytes(tmp_path / "a.cat", [(SFX[0][0], _wav_bytes(x), "src/wav/osfx_00.wav"),
                                         (SFX[3][0], _wav_bytes(x[:1000]), "src/wav/osfx_01.wav")])
    entries = scenes.read_cat(tmp_path / "a.cat")
    assert [e.title for e in entries] == ["Cow", "Helicopter"]
    assert [e.licence for e in entries] == ["CC0-1.0", "CC-BY-SA-3.0"]
    assert entries[1].filename == "src/wav/osfx_01.wav"
    y, sr = sf.read(io.BytesIO(entries[0].wav), dtype="float32")
    assert sr == SR_SRC and len(y) == len(x)
    np.testing.assert_allclose(y, x, atol=1 / 16384)
    # the module's writer produces the same bytes
    scenes.write_cat(tmp_path / "b.cat", [(SFX[0][0], _wav_bytes(x), "src/wav/osfx_00.wav"),
                                          (SFX[3][0], _wav_bytes(x[:1000]), "src/wav/osfx_01.wav")])
    assert (tmp_path / "a.cat").read_bytes() == (tmp_path / "b.cat").read_bytes()
    (tmp_path / "bad.cat").write_bytes(b"RIFF0000WAVE")
    with pytest.raises(ValueError):
        scenes.read_cat(tmp_path / "bad.cat")


def test_scan_groups_stamps_and_recordings_into_classes(catalog):
    assert catalog.classes == ["dog", "cow", "drum"]  # horse/helicopter: no stamp image
    images = {s.image for s in catalog.stamps}
    assert images == {"animals/mammals/dogs/dog.png", "animals/mammals/dogs/dingo.png",
                      "animals/mammals/bovines/cow.png", "animals/mammals/bovines/bull.png",
                      "hobbies/music/percussion/drumkit.png"}
    recs = {(r.cls, r.source, r.name) for r in catalog.recordings}
    assert recs == {
        ("dog", "tuxpaint-stamps-default", "animals/mammals/dogs/dog"),
        ("dog", "tuxpaint-stamps-default", "animals/mammals/dogs/fox"),
        ("cow", "tuxpaint-stamps-default", "animals/mammals/bovines/cow"),
        ("cow", "tuxpaint-stamps-default", "animals/mammals/bovines/bull"),
        ("cow", "openttd-opensfx", "Cow"),  # not the "Toyland: Cow"
        ("drum", "tuxpaint-stamps-default", "hobbies/music/percussion/drumkit"),
        ("drum", "sonic-pi-samples", "drum_tom_lo_hard"),
        ("drum", "sonic-pi-samples", "drum_snare_hard"),
    }
    lic = {r.name: r.licence for r in catalog.recordings}
    assert lic["Cow"] == "CC0-1.0" and lic["drum_snare_hard"] == "CC0-1.0"
    assert lic["animals/mammals/dogs/dog"] == "GPL-2.0-or-later"
    dingo = next(s for s in catalog.stamps if s.stem.endswith("dingo"))
    assert dingo.mirror is False and dingo.sound is None
    assert next(s for s in catalog.stamps if s.stem.endswith("/dog")).description == "A dog."
    assert "household/vase" in catalog.unassigned_sounds
    assert set(catalog.dropped) >= {"horse", "helicopter", "cat"}
    rows = {r["class"]: r for r in catalog.table()}
    assert (rows["cow"]["stamps"], rows["cow"]["recordings"], rows["cow"]["rec_opensfx"]) == (2, 3, 1)
    assert scenes.scan(Path(catalog.root), extra_backgrounds=False, min_recordings=3).classes == ["cow", "drum"]


def test_missing_packages_name_the_apt_command(tmp_path, capsys):
    with pytest.raises(scenes.MissingSource, match=r"apt-get install -y tuxpaint-stamps-default openttd-opensfx"):
        scenes.scan(tmp_path)
    assert scenes.main(["classes", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "apt-get install" in err[0]


# --------------------------------------------------------------------------------------------
# composition


def test_louder_is_bigger_and_lower(media):
    spec = media.spec
    gains = [0.25, 0.5, 1.0, 2.0, 4.0]
    pools = media.pools("train")
    for c, (stamps, recs) in pools.items():
        for sid in stamps:
            sizes = [scenes.object_size(media.stamps[sid].shape, g, spec) for g in gains]
            areas = [w * h for w, h in sizes]
            assert all(a < b for a, b in zip(areas, areas[1:])), (c, sid, sizes)
            boxes = []
            for g in gains:
                s = scenes.make_scene(media, pools, np.random.default_rng(3), gains=[g], classes=[c], stamps=[sid],
                                      recordings=[recs[0]], background=0)
                boxes.append(s["boxes"][0])
            areas = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes]
            bottoms = [b[3] for b in boxes]
            assert all(a < b for a, b in zip(areas, areas[1:])), (c, sid, boxes)
            assert all(a < b for a, b in zip(bottoms, bottoms[1:])), (c, sid, boxes)
    # over a generated split: object size follows gain
    arr = scenes.generate_split(media, "train", 40)
    b = arr["boxes"][:, 0].astype(float)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    assert np.corrcoef(np.log(arr["gains"][:, 0]), np.log(area))[0, 1] > 0.6


def test_objects_are_composited_with_alpha(media):
    pools = media.pools("train")
    s = scenes.make_scene(media, pools, np.random.default_rng(1), gains=[4.0], classes=["cow"],
                          stamps=[[i for i, x in enumerate(media.catalog.stamps) if x.stem.endswith("/cow")][0]],
                          recordings=[pools["cow"][1][0]], background=0)
    x0, y0, x1, y1 = s["boxes"][0]
    img = s["image"].astype(int)
    patch = img[y0:y1, x0:x1]
    centre = patch[patch.shape[0] // 2, patch.shape[1] // 2]
    assert np.abs(centre - [90, 60, 40]).max() <= 3  # opaque centre is the stamp
    # outside the box the background crop is untouched
    bg = scenes.crop_background(media.backgrounds[s["background"]], s["crop"], media.spec.size)
    mask = np.ones(img.shape[:2], bool)
    mask[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(img[mask], bg.astype(int)[mask])


def test_two_object_samples_have_both_labels_and_boxes_inside(media):
    spec = replace(media.spec, two_object_frac=1.0)
    m2 = replace(media, spec=spec)
    arr = scenes.generate_split(m2, "train", 24)
    S = spec.size
    assert (arr["n_objects"] == 2).all()
    lab = arr["labels"]
    assert (lab >= 0).all() and (lab[:, 0] != lab[:, 1]).all()
    b = arr["boxes"].astype(int)
    assert (b[..., 0] >= 0).all() and (b[..., 1] >= 0).all() and (b[..., 2] <= S).all() and (b[..., 3] <= S).all()
    assert (b[..., 2] > b[..., 0]).all() and (b[..., 3] > b[..., 1]).all()
    assert (arr["gains"][:, 0] >= arr["gains"][:, 1]).all()  # slot 0 is the loudest
    g = arr["gains"]
    assert (g >= spec.gain_min).all() and (g <= spec.gain_max).all()
    cls_of_stamp = [media.classes.index(s.cls) for s in media.catalog.stamps]
    cls_of_rec = [media.classes.index(r.cls) for r in media.catalog.recordings]
    assert (np.take(cls_of_stamp, arr["stamps"]) == lab).all() and (np.take(cls_of_rec, arr["recordings"]) == lab).all()


def test_held_out_items_never_in_train(media):
    st_split, rec_split = media.stamp_split, media.rec_split
    assert "test" in rec_split and "test" in st_split
    for split in ("train", "val"):
        arr = scenes.generate_split(media, split, 30)
        used_st = arr["stamps"][arr["stamps"] >= 0]
        used_rec = arr["recordings"][arr["recordings"] >= 0]
        assert all(st_split[i] in ("train", "shared") for i in used_st)
        assert all(rec_split[i] == "train" for i in used_rec)
    arr = scenes.generate_split(media, "test", 30)
    assert all(rec_split[i] == "test" for i in arr["recordings"][arr["recordings"] >= 0])
    assert all(st_split[i] in ("test", "shared") for i in arr["stamps"][arr["stamps"] >= 0])
    # the split of items is fixed by the seed
    again = scenes.assign_splits(media.catalog, 0, media.spec.test_frac)
    assert again == (st_split, rec_split)


def test_determinism_by_seed(media, catalog):
    a = scenes.generate_split(media, "train", 6)
    b = scenes.generate_split(scenes.load_media(catalog, SPEC, seed=0), "train", 6)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    first = scenes.generate_split(media, "train", 3)  # sample i does not depend on n
    for k in a:
        np.testing.assert_array_equal(first[k], a[k][:3], err_msg=k)
    other = scenes.generate_split(scenes.load_media(catalog, SPEC, seed=1), "train", 6)
    assert not np.array_equal(a["images"], other["images"])


def test_audio_level_follows_gain(media):
    arr = scenes.generate_split(media, "train", 30)
    n = media.spec.n_samples
    audio = scenes.mix_audio(media.bank, arr["recordings"], arr["offsets"], arr["scales"], arr["gains"], n)
    assert audio.shape == (30, n) and audio.dtype == np.float32
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2, axis=1))
    one = arr["n_objects"] == 1
    assert one.sum() >= 5
    np.testing.assert_allclose(rms[one], media.spec.ref_rms * arr["gains"][one, 0], rtol=1e-3)
    i, j = np.flatnonzero(one)[:2]
    assert rms[i] / rms[j] == pytest.approx(arr["gains"][i, 0] / arr["gains"][j, 0], rel=1e-3)
    # a mix is the sum of its objects
    k = np.flatnonzero(~one)[0]
    parts = [scenes.mix_audio(media.bank, arr["recordings"][k:k + 1, s:s + 1], arr["offsets"][k:k + 1, s:s + 1],
                              arr["scales"][k:k + 1, s:s + 1], arr["gains"][k:k + 1, s:s + 1], n) for s in range(2)]
    np.testing.assert_allclose(audio[k], parts[0][0] + parts[1][0], atol=1e-6)


def test_build_load_and_show(tree, tmp_path):
    spec = scenes.SceneSpec(seconds=0.5, test_frac=0.5)
    logs = []
    folder = scenes.build(spec, {"train": 8, "val": 2, "test": 3}, seed=0, data_dir=tmp_path / "data", root=tree,
                          store_audio=True, extra_backgrounds=False, log=logs.append)
    assert folder.name == spec.name(0) and folder.parent == tmp_path / "data"
    meta = scenes.load_meta(folder)
    assert meta["classes"] == ["dog", "cow", "drum"]
    assert meta["licences"]["openttd-opensfx"] == "CC-BY-SA-3.0"
    ds = scenes.SceneSplit(folder, "train")
    assert len(ds) == 8 and ds.images.shape == (8, 128, 128, 3) and ds.images.dtype == np.uint8
    assert ds.images_at(64).shape == (8, 64, 64, 3)
    assert ds.labels.shape == (8, 2) and ds.boxes.shape == (8, 2, 4) and ds.gains.shape == (8, 2)
    a = ds.audio(np.arange(8))
    assert a.shape == (8, 8000)
    np.testing.assert_allclose(ds.stored_audio(np.arange(8)), a, atol=2e-3, rtol=2e-3)  # float16 copy
    louder = ds.audio([0], gains=[[2 * ds.gains[0, 0], 2 * ds.gains[0, 1]]])
    np.testing.assert_allclose(louder, 2 * a[:1], rtol=1e-5, atol=1e-7)
    # 64 px is the 2x2 mean of 128 px
    x = ds.images[:1].astype(float)
    np.testing.assert_allclose(ds.images_at(64)[0, 5, 7], x[0, 10:12, 14:16].mean(axis=(0, 1)), atol=0.51)
    item = ds[0]
    assert item["image"].shape == (128, 128, 3) and item["audio"].shape == (8000,)
    assert len(item["labels"]) == len(item["boxes"]) == len(item["classes"]) == ds.n_objects[0]
    card = scenes.data_card(folder)
    assert card["sources"]["openttd-opensfx"]["item_licences"] == {"CC0-1.0": 1}
    assert card["sources"]["tuxpaint-stamps-default"]["stamps"] == 5
    # cached rebuild
    logs.clear()
    scenes.build(spec, {"train": 8, "val": 2, "test": 3}, seed=0, data_dir=tmp_path / "data", root=tree,
                 store_audio=True, extra_backgrounds=False, log=logs.append)
    assert sum("(cached)" in line for line in logs) == 3
    # inspection files
    files = scenes.show(tmp_path / "show", n=2, spec=spec, root=tree, extra_backgrounds=False, log=lambda *a: None)
    names = {p.name for p in files}
    assert {"train_000.png", "train_000.wav", "train_grid.png", "sweep.png"} <= names
    y, sr = sf.read(tmp_path / "show" / "train_000.wav")
    assert sr == 16000 and len(y) == 8000


def test_more_compositions(tree, tmp_path):
    spec = scenes.SceneSpec(seconds=0.5, test_frac=0.5)
    folder = scenes.build(spec, {"train": 8, "val": 2, "test": 3}, seed=0, data_dir=tmp_path / "data", root=tree,
                          extra_backgrounds=False, log=lambda *a: None)
    more = scenes.more_compositions(folder, 6, root=tree, log=lambda *a: None)
    assert more["images"].shape == (6, 128, 128, 3) and more["labels"].shape == (6, 2)
    # the continuation of the train stream: samples 8..13, never a held-out stamp
    media = scenes.load_media(scenes.scan(tree, extra_backgrounds=False), spec, seed=0)
    want = scenes.generate_split(media, "train", 6, start=8)
    for k in ("images", "labels", "boxes", "stamps"):
        np.testing.assert_array_equal(more[k], want[k], err_msg=k)
    held_out = {i for i, s in enumerate(scenes.load_meta(folder)["stamps"]) if s["split"] == "test"}
    assert held_out and not held_out & set(more["stamps"][more["stamps"] >= 0].tolist())
    stored = scenes.SceneSplit(folder, "train")
    assert not any(np.array_equal(m, s) for m in more["images"] for s in stored.images)
    # cached: read back without the packages
    again = scenes.more_compositions(folder, 6, root=tmp_path / "nowhere", log=lambda *a: None)
    np.testing.assert_array_equal(again["images"], more["images"])
    with pytest.raises(scenes.MissingSource):
        scenes.more_compositions(folder, 4, root=tmp_path / "nowhere", log=lambda *a: None)
    meta = scenes.load_meta(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "fingerprint": "other"}))
    with pytest.raises(SystemExit, match="differ"):
        scenes.more_compositions(folder, 4, root=tree, log=lambda *a: None)


def test_evaluator_trains_on_more_compositions(tree, tmp_path, monkeypatch):
    from soundsight_train import scene_evaluator

    spec = scenes.SceneSpec(seconds=0.5, test_frac=0.5)
    folder = scenes.build(spec, {"train": 8, "val": 2, "test": 3}, seed=0, data_dir=tmp_path / "data", root=tree,
                          extra_backgrounds=False, log=lambda *a: None)
    monkeypatch.setenv("SOUNDSIGHT_SCENES_ROOT", str(tree))
    out = tmp_path / "ev"
    assert scene_evaluator.main(["--tiny", "--data", str(folder), "--more", "6", "--steps", "10", "--out", str(out),
                                 "--run-dir", str(tmp_path / "run")]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["more_compositions"] == 6
    assert (folder / "train-more-8-6.npz").is_file()
    # 14 training scenes: 10 steps of 16 make 160 / 14 epochs
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "curve.jsonl").read_text().splitlines()
              if '"epoch"' in line]
    assert epochs and epochs[-1] == round(10 * 16 / 14, 3)


REAL = Path("/") / scenes.STAMPS_DIR


@pytest.mark.skipif(
    not all((Path("/") / p["path"]).exists() for p in scenes.PACKAGES.values()),
    reason="needs `apt-get install -y tuxpaint-stamps-default openttd-opensfx sonic-pi-samples mate-backgrounds`",
)
def test_real_packages():
    cat = scenes.scan("/")
    assert len(cat.classes) >= 40
    assert {"dog", "cow", "sheep", "bird", "drum", "train", "plane", "car"} <= set(cat.classes)
    assert len(cat.recordings) >= 120 and len(cat.stamps) >= 100
    srcs = {r.source for r in cat.recordings}
    assert srcs == {"tuxpaint-stamps-default", "openttd-opensfx", "sonic-pi-samples"}
    entries = scenes.read_cat(Path("/") / scenes.OPENSFX_CAT)
    assert len(entries) == 73 and any(e.title == "Cow" for e in entries)
    # compose a few samples from a subset (fast): two classes
    sub = replace(cat, classes=["dog", "cow"], stamps=[s for s in cat.stamps if s.cls in ("dog", "cow")],
                  recordings=[r for r in cat.recordings if r.cls in ("dog", "cow")],
                  backgrounds=cat.backgrounds[:2])
    media = scenes.load_media(sub, scenes.SceneSpec(seconds=1.0))
    arr = scenes.generate_split(media, "test", 4)
    assert arr["images"].shape == (4, 128, 128, 3) and (arr["labels"][:, 0] >= 0).all()
    assert math.isfinite(float(arr["scales"].sum()))
