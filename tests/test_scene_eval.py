"""The scene evaluator (plugins/scene_gen/evaluator.py, train/scene_evaluator.py) and the Table 1
evaluation (train/eval_scene.py), on hand-made cases and with tiny models on the toy scenes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from soundsight_plugins.scene_gen.evaluator import (
    EvaluatorConfig,
    FIDFeatures,
    SceneEvaluator,
    all_in_topk,
    labelled_metrics,
    r2_score,
    size_target,
    topk_hits,
)


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tiny(size=32, n_classes=5):
    torch.manual_seed(0)
    return SceneEvaluator(EvaluatorConfig.preset("tiny", image_size=size, n_classes=n_classes)).eval()


# --------------------------------------------------------------------------------------------
# the network and its metrics


def test_evaluator_shapes_and_input_forms():
    ev = _tiny()
    x = torch.rand(3, 3, 32, 32)
    logits, size = ev(x)
    assert logits.shape == (3, 5) and size.shape == (3,)
    out = ev.predict(x)
    assert out["features"].shape == (3, ev.num_features) and out["log_size"].shape == (3,)
    # uint8 NHWC and another size go through the same preparation as float NCHW at 32 px
    u8 = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(ev.predict(u8.permute(0, 2, 3, 1))["logits"], ev.predict(u8.float() / 255)["logits"])
    assert ev.predict(torch.rand(2, 3, 64, 64))["logits"].shape == (2, 5)
    # log_size undoes the target standardisation
    ev.cfg.size_mean, ev.cfg.size_std = -1.0, 0.5
    torch.testing.assert_close(ev.log_size(torch.tensor([0.0, 2.0])), torch.tensor([-1.0, 0.0]))
    with pytest.raises(ValueError):
        SceneEvaluator(EvaluatorConfig(n_classes=0))


def test_size_target_and_topk_helpers():
    boxes = np.array([[[0, 0, 32, 16], [-1, -1, -1, -1]], [[10, 20, 30, 84], [0, 0, 5, 5]]])
    np.testing.assert_allclose(size_target(boxes, 128), np.log([32 / 128, 64 / 128]))
    torch.testing.assert_close(size_target(torch.from_numpy(boxes), 128), torch.log(torch.tensor([0.25, 0.5])).double())
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    assert topk_hits(logits, torch.tensor([1, 3]), 1).tolist() == [False, True]
    assert topk_hits(logits, torch.tensor([1, 0]), 2).tolist() == [True, False]
    labels = torch.tensor([[0, 2], [3, -1]])
    assert all_in_topk(logits, labels, 3).tolist() == [True, True]
    assert all_in_topk(logits, torch.tensor([[0, 3], [0, -1]]), 3).tolist() == [False, False]
    assert r2_score(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])) == 1.0
    assert r2_score(torch.full((3,), 2.0), torch.tensor([1.0, 2.0, 3.0])) == 0.0


def test_labelled_metrics_hand_computed():
    logits = torch.tensor([[9.0, 1.0, 0.0, 0.0],   # top1 0 (loudest 0) ✓
                           [0.0, 9.0, 8.0, 0.0],   # top1 1, loudest 2 → top1 ✗, any ✗ (labels 2, 3)
                           [0.0, 0.0, 9.0, 8.0],   # two objects 2 + 3, both in top 3 ✓
                           [1.0, 0.0, 0.0, 9.0]])  # top1 3, labels (0, 3): top1 ✗ (loudest 0), any ✓
    labels = torch.tensor([[0, -1], [2, 3], [2, 3], [0, 3]])
    out = {"logits": logits, "log_size": torch.tensor([0.0, 1.0, 2.0, 3.0])}
    m = labelled_metrics(out, labels, torch.tensor([0.0, 1.0, 2.0, 5.0]))
    assert (m["top1"], m["top1_any"], m["top5"]) == (0.5, 0.75, 1.0)
    assert m["two_object_n"] == 3 and m["both_top3"] == round(2 / 3, 4)  # row 1: class 3 ranks 4th
    assert m["size_mae_log"] == 0.5
    assert m["size_r2"] == round(1 - 4 / 14, 4)  # target mean 2: ss_tot 4+1+0+9, ss_res 4


def test_fid_with_evaluator_features_matches_the_formula():
    """torchmetrics' FID with the evaluator as feature extractor = the Fréchet formula on its features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from soundsight_train.scene_common import frechet_distance

    ev = _tiny()
    g = torch.Generator().manual_seed(0)
    real = torch.rand(80, 3, 32, 32, generator=g)
    fake = (torch.rand(80, 3, 32, 32, generator=g) * 0.5 + 0.4).clamp(0, 1)
    fid = FrechetInceptionDistance(feature=FIDFeatures(ev), normalize=True, reset_real_features=False)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    value = float(fid.compute())
    expected = frechet_distance(ev.predict(real)["features"].numpy(), ev.predict(fake)["features"].numpy())
    assert value == pytest.approx(expected, rel=1e-3, abs=1e-4) and value > 0
    fid.reset()  # keeps the real statistics
    fid.update(real, real=False)
    assert abs(float(fid.compute())) < 1e-3


def test_volume_stats_and_mix_pairs():
    from soundsight_train.eval_scene import correlation, mix_pairs, volume_stats

    assert correlation([1, 2, 3], [2, 4, 6.5]) == pytest.approx(0.9979, abs=1e-4)
    assert correlation([1, 1, 1], [1, 2, 3]) is None

    s = torch.log(torch.tensor([[0.2, 0.3, 0.4],    # grows
                                [0.2, 0.2, 0.4],    # not strictly at the first step
                                [0.4, 0.3, 0.2],    # shrinks
                                [0.2, 0.5, 0.3]]))  # ends larger, not monotonic
    v = volume_stats(s)
    assert (v["volume_monotonic"], v["volume_ends"], v["volume_n"]) == (0.25, 0.75, 4)
    assert v["volume_mean_side"] == [0.25, 0.325, 0.325]
    labels = np.array([[0, -1], [1, -1], [0, -1], [2, 1], [2, -1], [1, -1]])
    n_obj = (labels >= 0).sum(1)
    pairs = mix_pairs(labels, n_obj, 50, seed=0)
    assert 0 < len(pairs) <= 50
    assert all(n_obj[i] == 1 and n_obj[j] == 1 and labels[i, 0] != labels[j, 0] for i, j in pairs)
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == len(pairs)  # no pair twice
    assert 3 not in pairs  # the two-object scene is never a source
    np.testing.assert_array_equal(pairs, mix_pairs(labels, n_obj, 50, seed=0))


def test_bias_floor_partners_and_constant_guess():
    from soundsight_train.eval_scene import constant_guess_r1, other_class_partners

    labels = np.array([0, 0, 1, 2, 2, 2, 1])
    p = other_class_partners(labels, seed=0)
    assert all(labels[j] != labels[i] for i, j in enumerate(p))  # always another class
    np.testing.assert_array_equal(p, other_class_partners(labels, seed=0))
    np.testing.assert_array_equal(other_class_partners(np.array([4, 4]), seed=0), [0, 1])  # nobody else: itself
    assert constant_guess_r1(labels) == round(3 / 7, 4)


# --------------------------------------------------------------------------------------------
# the training entrypoint (tiny, on the toy scenes)


def test_evaluator_entrypoint_writes_a_registry_model(scene_models):
    from soundsight import registry

    from soundsight_plugins.scene_gen import loaders

    folder = registry.resolve(scene_models["ev"], task="scene-evaluation")
    card = folder.card
    assert card["architecture"] == loaders.EVALUATOR == "scene-evaluator"
    assert card["config"]["classes"] == ["class0", "class1", "class2"] and card["config"]["size_std"] > 0
    assert card["training"]["command"].startswith("python -m soundsight_train.scene_evaluator")
    assert card["data"]["dataset"] == "scenes-toy" and card["data"]["sources"]["toy"]["licence"] == "CC0-1.0"
    for split in ("val", "test"):
        m = card["metrics"][split]
        assert m["n"] == 8 and 0 <= m["top1"] <= m["top5"] <= 1 and math.isfinite(m["size_r2"])
    # it learned: the loss falls, and the coloured squares are told apart better than by the prior
    curve = [json.loads(line) for line in (scene_models["root"] / "runs/ev/curve.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in curve if "loss" in r]
    assert losses[-1] < losses[0]
    assert card["metrics"]["val"]["top1"] > card["metrics"]["val"]["chance_top1"]
    ev = loaders.load_evaluator(folder, "cpu")
    assert isinstance(ev, SceneEvaluator) and not ev.training
    saved = folder.tensors()
    assert all(torch.equal(saved[k], v) for k, v in ev.state_dict().items())


def test_evaluator_resume_and_cpu_budget(scene_models, tmp_path):
    from soundsight_train import scene_evaluator

    common = ["--tiny", "--data", str(scene_models["toy"]), "--threads", "1", "--run-dir", str(tmp_path / "run")]
    assert scene_evaluator.main([*common, "--out", str(tmp_path / "a"), "--steps", "6", "--eval-every", "0"]) == 0
    assert scene_evaluator.main([*common, "--out", str(tmp_path / "b"), "--steps", "9", "--eval-every", "0",
                                 "--resume"]) == 0
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert card["training"]["steps"] == 9 and card["training"]["cpu_seconds"] > 0
    # a tiny CPU budget stops training long before --steps
    assert scene_evaluator.main(["--tiny", "--data", str(scene_models["toy"]), "--threads", "1", "--out",
                                 str(tmp_path / "c"), "--run-dir", str(tmp_path / "run-c"), "--steps", "100000",
                                 "--eval-every", "0", "--max-cpu-minutes", "0.002"]) == 0
    assert json.loads((tmp_path / "c" / "card.json").read_text())["training"]["steps"] < 1000


# --------------------------------------------------------------------------------------------
# eval_scene end to end


def _eval(scene_models, out, *extra):
    from soundsight_train import eval_scene

    m = scene_models
    args = ["--data", str(m["toy"]), "--image-encoder", str(m["fv"]), "--audio-encoder", str(m["fa"]),
            "--gan", str(m["gan"]), "--ldm", str(m.get("ldm", "none")), "--evaluator", str(m["ev"]),
            "--steps", "2", "--mixes", "6", "--threads", "1",
            "--out-json", str(out / "e.json"), "--out-md", str(out / "e.md"), *extra]
    assert eval_scene.main(args) == 0
    return json.loads((out / "e.json").read_text()), (out / "e.md").read_text()


def test_eval_scene_table_and_controls(scene_models, tmp_path):
    res, md = _eval(scene_models, tmp_path)
    keys = [r["key"] for r in res["rows"]]
    assert keys == ["A-gan", "B-gan", "B0-gan", *(["A-ldm", "B-ldm", "B0-ldm"] if "ldm" in scene_models else []),
                    "C", "C-gan", "D"]
    for r in res["rows"]:
        assert r["n"] == 8 and 0 <= r["r1"] <= r["r1_any"] <= 1  # the loudest object's class is one of its classes
        assert r["r5"] == 1.0  # 3 classes: the top 5 holds every class
        assert (r["fid"] is None) == (r["key"] == "D" or r["key"].startswith("B0"))
        assert r["fid"] is None or (math.isfinite(r["fid"]) and r["fid"] >= -1e-6)
        assert r["size_corr"] is None or -1 <= r["size_corr"] <= 1
    by = {r["key"]: r for r in res["rows"]}
    # row D is the evaluator on the real test images, so it agrees with its own accuracy there
    assert by["D"]["r1"] == res["evaluator_on_real"]["top1"] and by["D"]["r5"] == res["evaluator_on_real"]["top5"]
    assert res["random_ranking"] == {"r1": round(1 / 3, 4), "r5": 1.0}
    assert res["chance"] == {"volume_monotonic": round(1 / 6, 4), "volume_ends": 0.5, "both_top3": 1.0}  # 3 classes
    for backend in ("gan", "ldm", "retrieval") if "ldm" in scene_models else ("gan", "retrieval"):
        c = res["controls"][backend]
        assert c["volume_n"] == 8 and 0 <= c["volume_monotonic"] <= c["volume_ends"] <= 1
        assert len(c["volume_mean_side"]) == 3 and all(0 < v < 2 for v in c["volume_mean_side"])
        assert c["mixes_n"] == 6 and 0 <= c["mix_both_top3"] <= 1
    assert res["targets"]["B_gan_r1_at_least_C"] == (by["B-gan"]["r1"] >= by["C"]["r1"])
    assert set(res["models"]) >= {"image_encoder", "audio_encoder", "gan", "evaluator"}
    assert "| (B) | ours: GAN from the sound (f_A) |" in md and "≥ 0.90" in md and "≥ 0.60" in md
    assert "| control | GAN | " in md and " | retrieval (C) | real images |" in md
    # same seed, same table
    again, _ = _eval(scene_models, tmp_path)
    assert again["rows"] == res["rows"] and again["controls"] == res["controls"]


def test_eval_scene_subset_and_no_ldm(scene_models, tmp_path):
    res, md = _eval(scene_models, tmp_path, "--n", "5", "--ldm", "none")
    assert [r["key"] for r in res["rows"]] == ["A-gan", "B-gan", "B0-gan", "C", "C-gan", "D"]
    assert all(r["n"] == 5 for r in res["rows"]) and "ldm" not in res["controls"]
    assert "LDM" not in md.split("\n\n")[1]
    from soundsight_train import eval_scene

    with pytest.raises(SystemExit, match="unknown model"):
        eval_scene.main(["--data", str(scene_models["toy"]), "--evaluator", "no-such-evaluator", "--ldm", "none",
                         "--image-encoder", str(scene_models["fv"]), "--audio-encoder", str(scene_models["fa"]),
                         "--gan", str(scene_models["gan"]), "--out-json", str(tmp_path / "x.json"),
                         "--out-md", str(tmp_path / "x.md")])


def test_eval_scene_anchors_the_gans_sound_rows_as_imagine_does(scene_models, tmp_path):
    from soundsight_train import scene_instances

    bank = tmp_path / "bank"
    assert scene_instances.main(["--data", str(scene_models["toy"]), "--image-encoder", str(scene_models["fv"]),
                                 "--out", str(bank), "--threads", "1"]) == 0
    plain, _ = _eval(scene_models, tmp_path / "p", "--ldm", "none")
    full, md = _eval(scene_models, tmp_path / "a", "--ldm", "none", "--anchor", "1", "--instances", str(bank))
    assert plain["gan_anchor"] == 0.0 and plain["gan_instances"] is None
    assert full["gan_anchor"] == 1.0 and full["gan_instances"]["name"] == "bank"
    p, a = ({r["key"]: r for r in res["rows"]} for res in (plain, full))
    for key in ("A-gan", "C", "C-gan", "D"):  # rows that do not draw from the sound's feature are untouched
        assert a[key] == p[key]
    # anchored fully, the GAN draws from training images' own features: row B is a retrieval through G
    assert a["B-gan"]["method"].endswith("(f_A anchored 1)") and "anchored 1 to bank" in md
    assert full["controls"]["retrieval"] == plain["controls"]["retrieval"]
    if "ldm" in scene_models:  # the LDM's sound rows take their own weight
        res, md = _eval(scene_models, tmp_path / "l", "--n", "4", "--ldm-anchor", "1", "--instances", str(bank))
        by = {r["key"]: r for r in res["rows"]}
        assert res["ldm_anchor"] == 1.0 and res["gan_anchor"] == 0.0
        assert by["B-ldm"]["method"].endswith("anchored 1)") and by["B-gan"]["method"].endswith("(f_A)")
        assert "the LDM's anchored 1 to bank" in md
