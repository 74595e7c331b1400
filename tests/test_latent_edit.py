"""latent-edit (plugins/latent_edit, train/eval_edit.py) with tiny scene-gen models made here.

The models are tiny random-weight scene-gen architectures whose batch-norm statistics are
calibrated on a few random batches (so the generator is a smooth function, not saturated),
saved as registry folders; the command loads them by path like any registry model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_png, make_wav
from support import assert_user_error, run_cli

from soundsight_plugins.latent_edit import edits as E
from soundsight_plugins.latent_edit.invert import InversionConfig, invert, psnr, ssim, ssim_map, to_model_size

SIZE = 32


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _calibrate(module, make_batch, n: int = 6):
    """Running BN statistics from a few forward passes (as training would leave them)."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    module.train()
    with torch.no_grad():
        for _ in range(n):
            make_batch()
    return module.eval()


def make_tiny_models(root: Path, n_classes: int = 3) -> dict:
    from soundsight.registry import save_model
    from soundsight_plugins.scene_gen.encoders import AudioEncoder, AudioEncoderConfig, ImageEncoder, ImageEncoderConfig
    from soundsight_plugins.scene_gen.evaluator import EvaluatorConfig, SceneEvaluator
    from soundsight_plugins.scene_gen.gan import GANConfig, Generator

    torch.manual_seed(0)
    fv = ImageEncoder(ImageEncoderConfig.for_size(SIZE, "tiny"))
    d = fv.cfg.feature_dim
    G = Generator(GANConfig.for_size(SIZE, "tiny", feature_dim=d))
    fa = AudioEncoder(AudioEncoderConfig.preset("tiny", seconds=0.5, feature_dim=d))
    ev = SceneEvaluator(EvaluatorConfig.preset("tiny", image_size=SIZE, n_classes=n_classes,
                                               classes=tuple(f"class{c}" for c in range(n_classes))))
    _calibrate(G, lambda: G(torch.randn(16, G.cfg.z_dim), torch.randn(16, d)))
    _calibrate(fv, lambda: fv(torch.rand(16, 3, SIZE, SIZE)))
    _calibrate(fa, lambda: fa(0.05 * torch.randn(8, 8000)))
    _calibrate(ev, lambda: ev(torch.rand(16, 3, SIZE, SIZE)))
    out = {}
    for key, model, task, arch in [("fv", fv, "scene-image-embedding", "scene-image-encoder"),
                                   ("fa", fa, "scene-audio-embedding", "scene-audio-encoder"),
                                   ("g", G, "scene-generation", "scene-icgan"),
                                   ("ev", ev, "scene-evaluation", "scene-evaluator")]:
        extra = {"data": {"spec": {"ref_rms": 0.02}}} if key == "fa" else None
        out[key] = save_model(root / key, name=f"tiny-{key}", task=task, architecture=arch, config=model.cfg.to_dict(),
                              tensors={"model.safetensors": model.state_dict()}, extra=extra)
    out["modules"] = {"fv": fv, "fa": fa, "g": G, "ev": ev}
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("latent-edit-models"))


def model_args(tiny) -> list:
    return ["--generator", tiny["g"], "--image-encoder", tiny["fv"], "--audio-encoder", tiny["fa"]]


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------------------------
# inversion


def _reachable_target(G, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return G.generate(torch.randn(1, G.cfg.feature_dim, generator=gen), gen)


def test_inversion_reduces_reconstruction_error(tiny):
    G, fv = tiny["modules"]["g"], tiny["modules"]["fv"]
    target = _reachable_target(G)
    weights = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in (("g", G), ("fv", fv))}
    # a mixed pattern of gradient flags (one frozen tensor in each), to see that exactly it comes back
    first_g, first_e = next(G.parameters()), next(fv.parameters())
    first_g.requires_grad_(False)
    first_e.requires_grad_(False)
    flags = {name: [p.requires_grad for p in m.parameters()] for name, m in (("g", G), ("fv", fv))}
    try:
        inv = invert(G, fv, target, InversionConfig(steps=60), seed=0)
        after = {name: [p.requires_grad for p in m.parameters()] for name, m in (("g", G), ("fv", fv))}
    finally:
        first_g.requires_grad_(True)
        first_e.requires_grad_(True)
    assert after == flags and any(flags["g"]) and not all(flags["g"])
    for name, m in (("g", G), ("fv", fv)):  # the search moves latents only
        assert all(torch.equal(weights[name][k], v) for k, v in m.state_dict().items()), name
    start_psnr = inv.history[1][2]  # PSNR at the initial latents
    assert inv.metrics["psnr"] > start_psnr + 2.0, inv.history
    assert inv.metrics["psnr"] == pytest.approx(float(psnr(inv.recon, target)), abs=1e-3)
    losses = [h[1] for h in inv.history]
    assert min(losses[-3:]) < 0.7 * losses[0]
    torch.testing.assert_close(inv.z_v.norm(dim=1), torch.ones(1))  # on the unit sphere G reads
    assert inv.metrics["feature_cosine_to_photo"] > 0.5  # anchored near the photo's own feature
    with torch.no_grad():
        torch.testing.assert_close(inv.recon, G.generate(inv.z_v, z=inv.z_n).clamp(0, 1))


def test_refine_fits_closer_and_leaves_the_generator_alone(tiny):
    G = tiny["modules"]["g"]
    before = {k: v.clone() for k, v in G.state_dict().items()}
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    target = torch.stack([xx, yy, 1 - xx * yy])[None]  # a smooth picture G cannot make exactly
    plain = invert(G, tiny["modules"]["fv"], target, InversionConfig(steps=20), seed=0)
    refined = invert(G, tiny["modules"]["fv"], target, InversionConfig(steps=20, refine_steps=20), seed=0)
    assert refined.generator is not G and plain.generator is G
    assert refined.metrics["psnr"] > plain.metrics["psnr"] + 0.3
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())


def test_inversion_is_deterministic_by_seed(tiny):
    G, fv = tiny["modules"]["g"], tiny["modules"]["fv"]
    target = _reachable_target(G, seed=2)
    a = invert(G, fv, target, InversionConfig(steps=8), seed=4)
    b = invert(G, fv, target, InversionConfig(steps=8), seed=4)
    c = invert(G, fv, target, InversionConfig(steps=8, draws=8), seed=5)
    assert torch.equal(a.z_n, b.z_n) and torch.equal(a.z_v, b.z_v) and torch.equal(a.recon, b.recon)
    assert not torch.equal(a.z_n, c.z_n)


def test_photo_to_model_size_and_metrics():
    photo = np.zeros((30, 50, 3), np.uint8)
    photo[:, 10:40] = 200  # the centred 30x30 square is x 10..40
    x, box = to_model_size(photo, 16)
    assert box == (10, 0, 40, 30) and x.shape == (1, 3, 16, 16)
    torch.testing.assert_close(x, torch.full_like(x, 200 / 255))
    a = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    assert float(ssim(a, a).min()) == pytest.approx(1.0, abs=1e-5)
    assert float(psnr(a, (a + 0.1).clamp(0, 1)).max()) < 21  # ~20 dB for an error of 0.1
    assert ssim_map(a, a * 0.5, same=True).shape == (2, 24, 24)
    skm = pytest.importorskip("skimage.metrics")  # our SSIM agrees with scikit-image's (Gaussian, 11 / 1.5)
    b = (a + 0.6 * torch.rand(a.shape, generator=torch.Generator().manual_seed(1)) - 0.3).clamp(0, 1)
    for i in range(2):  # the same formula, not just a close one (a window or constant off moves it ~1e-3)
        ref = skm.structural_similarity(a[i].permute(1, 2, 0).numpy(), b[i].permute(1, 2, 0).numpy(), channel_axis=2,
                                        data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(ssim(a, b)[i]) == pytest.approx(ref, abs=1e-5)
    assert 0.3 < float(ssim(a, b).mean()) < 0.9  # a pair that is neither identical nor unrelated


# --------------------------------------------------------------------------------------------
# edit arithmetic and compositing


def test_edit_arithmetic():
    g = torch.Generator().manual_seed(0)
    zv, za, za2 = (E.unit(torch.randn(1, 8, generator=g)) for _ in range(3))
    torch.testing.assert_close(E.insert_sound(zv, za, 0.0), zv)
    torch.testing.assert_close(E.insert_sound(zv, za, 1.0), za)
    torch.testing.assert_close(E.insert_sound(3 * zv, 2 * za, 0.25), 0.75 * zv + 0.25 * za)  # inputs normalised
    torch.testing.assert_close(E.volume_direction(zv, za, za2, 0.5), zv + 0.5 * (za - za2))
    torch.testing.assert_close(E.volume_direction(zv, za, za, 3.0), zv)  # equal gains: no move
    plan = E.EditPlan("volume", [0.0, 1.0, 2.0], gains=(2.0, 0.5))
    conds = E.edit_conditions(plan, zv, {"g1": za, "g2": za2})
    assert conds.shape == (3, 8)
    torch.testing.assert_close(conds[2] - conds[1], za[0] - za2[0])

    class Cfg:
        normalize_features = True

    class FakeG:
        cfg = Cfg()

    torch.testing.assert_close(E.condition_for(FakeG, conds).norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError):
        E.EditPlan("shout", [1.0])


def test_add_rule_adds_only_the_sounds_departure_from_the_mean():
    g = torch.Generator().manual_seed(1)
    zv, za, m = (E.unit(torch.randn(1, 8, generator=g)) for _ in range(3))
    mean = 0.7 * m[0]  # a real mean feature is shorter than the unit features it averages
    torch.testing.assert_close(E.insert_added(zv, za, 0.0, mean), zv)
    torch.testing.assert_close(E.insert_added(3 * zv, 2 * za, 0.5, mean), zv + 0.5 * (za - mean))
    # a sound whose feature is the mean scene adds nothing, at any strength (mix would replace the photo's)
    torch.testing.assert_close(E.insert_added(zv, 5 * m, 2.0, m[0]), zv)
    assert not torch.allclose(E.insert_sound(zv, m, 1.0), zv)
    plan = E.EditPlan("insert", [0.5, 1.0], rule="add", mean=mean)
    conds = E.edit_conditions(plan, zv, {"sound": za})
    torch.testing.assert_close(conds[1] - conds[0], 0.5 * (za[0] - mean))
    with pytest.raises(ValueError, match="mean feature"):
        E.EditPlan("insert", [1.0], rule="add")
    with pytest.raises(ValueError, match="insert rule"):
        E.EditPlan("insert", [1.0], rule="shout")


def test_composite_keeps_the_photo_where_nothing_changed():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    box = (10, 0, 50, 40)
    recon = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    same = recon.expand(2, -1, -1, -1)
    for how in ("residual", "masked"):
        out = E.composite(photo, box, recon, same, how=how)
        assert out.shape == (2, 40, 60, 3) and np.array_equal(out[0], photo)  # photo + 0 = the photo
    edit = recon.clone()
    edit[:, :, 4:12, 4:12] = 1.0 - edit[:, :, 4:12, 4:12]  # a big change in the middle
    res = E.composite(photo, box, recon, edit, how="residual")[0].astype(int)
    mask = E.composite(photo, box, recon, edit, how="masked")[0].astype(int)
    none = E.composite(photo, box, recon, edit, how="none")[0].astype(int)
    assert np.array_equal(res[:, :10], photo[:, :10]) and np.array_equal(mask[:, 50:], photo[:, 50:])  # outside the box
    assert np.abs(res[2:6, 12:16] - photo[2:6, 12:16]).max() <= 2  # unchanged corner of the box
    # inside the changed square the masked composite is the upscaled edit itself
    assert np.abs(mask[18:22, 28:32] - none[18:22, 28:32]).mean() < 3
    assert np.abs(res[18:22, 28:32] - none[18:22, 28:32]).mean() > 10
    m = E.change_mask(edit, recon)
    assert float(m[0, 0, 8, 8]) > 0.9 and float(m[0, 0, 0, 0]) < 0.1


# --------------------------------------------------------------------------------------------
# regional edits


def test_regional_condition_holds_each_condition_on_its_side(tiny):
    G = tiny["modules"]["g"]
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(1, G.cfg.z_dim, generator=gen)
    f_in, f_out = torch.randn(1, G.cfg.feature_dim, generator=gen), torch.randn(1, G.cfg.feature_dim, generator=gen)
    with torch.no_grad():
        a, b = G(z, f_in), G(z, f_out)
        ones, zeros = torch.ones(1, 1, SIZE, SIZE), torch.zeros(1, 1, SIZE, SIZE)
        assert torch.allclose(G(z, f_in, outside=f_out, mask=ones), a, atol=1e-5)
        assert torch.allclose(G(z, f_in, outside=f_out, mask=zeros), b, atol=1e-5)
        right = zeros.clone()
        right[..., SIZE // 2:] = 1
        mixed = G(z, f_in, outside=f_out, mask=right)
    q = SIZE // 4  # away from the seam, each side is its own condition's picture, not the other's
    left_err, right_err = (mixed - b)[..., :q].abs().mean(), (mixed - a)[..., -q:].abs().mean()
    assert left_err < 0.3 * (a - b)[..., :q].abs().mean() and right_err < 0.3 * (a - b)[..., -q:].abs().mean()
    with pytest.raises(ValueError):
        G(z, f_in, outside=f_out)


def test_auto_region_is_the_smallest_square_that_holds_the_change():
    change = torch.zeros(2, 1, 64, 64)
    change[0, 0, 10:30, 20:40] = 1  # a 20 px object: the 16 px square holds 64 % of it
    change[1] = 0.01  # a change spread everywhere: no square holds half, so the largest
    (box, held) = E.best_square(change[0], 20)
    assert box == (20, 10, 40, 30) and held == pytest.approx(400)
    assert E.auto_box(change[0]) == (20, 10, 36, 26)
    assert E.auto_box(change[1])[2] - E.auto_box(change[1])[0] == 48
    m = E.box_mask((20, 10, 40, 30), 64)
    assert m.shape == (1, 1, 64, 64) and float(m.sum()) == pytest.approx(400, rel=0.02)
    assert float(m[0, 0, 20, 30]) == pytest.approx(1) and float(m[0, 0, 50, 5]) == pytest.approx(0)
    recon = torch.zeros(2, 3, 64, 64)
    masks, boxes = E.region_masks("auto", recon + change, recon)
    assert masks.shape == (2, 1, 64, 64) and boxes[0] == (20, 10, 36, 26)
    masks, boxes = E.region_masks((0, 0, 8, 8), recon + change, recon)
    assert boxes == [(0, 0, 8, 8)] * 2 and torch.equal(masks[0], masks[1])


def test_region_parsing_and_mapping_into_the_edited_square():
    from soundsight.errors import InputError
    from soundsight_plugins.latent_edit.pipeline import parse_region, region_in_model

    assert parse_region(None) == "none" and parse_region(" Auto ") == "auto"
    assert parse_region("0.5,0,1,0.5") == (0.5, 0.0, 1.0, 0.5)
    for bad in ("0,0,1", "a,b,c,d", "0.5,0,0.4,1", "0,0,1.5,1", "-0.1,0,1,1"):
        with pytest.raises(InputError, match="--region"):
            parse_region(bad)
    # a 80 x 60 photo: its edited square is x 10..70, y 0..60; the model sees it at 32 px
    assert region_in_model((0.5, 0.0, 1.0, 0.5), (60, 80, 3), (10, 0, 70, 60), 32) == pytest.approx((16, 0, 32, 16))
    with pytest.raises(InputError, match="outside the edited square"):
        region_in_model((0.0, 0.0, 0.1, 1.0), (60, 80, 3), (10, 0, 70, 60), 32)


def test_regional_edit_keeps_the_picture_outside_its_region(tmp_path, tiny, inputs):
    from soundsight.device import resolve_device
    from soundsight_plugins.latent_edit import pipeline as P

    folders = P.resolve_models({"generator": str(tiny["g"]), "image_encoder": str(tiny["fv"]),
                                "audio_encoder": str(tiny["fa"])})
    models = P.load_models(folders, resolve_device("cpu"))
    photo = pixels(inputs["photo"])
    wave = P.load_sound(str(inputs["sound"]), 16000)
    kw = dict(mode="insert", strengths=[1.0], steps=4, refine=0, seed=0, device=resolve_device("cpu"))
    whole = P.run_edit(photo, wave, models, **kw)
    part = P.run_edit(photo, wave, models, region=(0.125, 0.0, 0.5, 0.5), **kw)  # the square's top-left quarter
    assert part.regions == [[0.0, 0.0, 16.0, 16.0]] and whole.regions == []
    assert torch.equal(part.recon, whole.recon)
    far = (slice(None), slice(None), slice(SIZE * 3 // 4, None), slice(SIZE * 3 // 4, None))  # bottom-right corner
    assert (part.edits - part.recon)[far].abs().mean() < 0.3 * (whole.edits - whole.recon)[far].abs().mean()
    near = (slice(None), slice(None), slice(2, 14), slice(2, 14))
    assert (part.edits - whole.edits)[near].abs().mean() < 0.5 * (part.recon - whole.edits)[near].abs().mean()
    auto = P.run_edit(photo, wave, models, region="auto", **kw)
    x0, y0, x1, y1 = auto.regions[0]
    assert SIZE // 4 <= x1 - x0 <= SIZE * 3 // 4 and x1 - x0 == y1 - y0


# --------------------------------------------------------------------------------------------
# the command


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("edit-inputs")
    return {"photo": make_png(d / "photo.png", size=(80, 60)), "sound": make_wav(d / "tone.wav", amplitude=0.05),
            "silent": make_wav(d / "silent.wav", amplitude=0.0), "dir": d}


def test_edit_command_end_to_end(tmp_path, tiny, inputs):
    out, strip = tmp_path / "edited.png", tmp_path / "strip.png"
    r = run_cli("edit", inputs["photo"], "--sound", f"{inputs['sound']}*2", *model_args(tiny), "--steps", "15",
                "--out", out, "--sweep", "0,0.5,1", "--strip", strip, "--json")
    assert r.code == 0, r.err
    rep = json.loads(r.out)
    assert rep["mode"] == "insert" and rep["strength"] == 0.5 and rep["model_size"] == SIZE
    assert rep["photo_size"] == [80, 60] and rep["edited_box"] == [10, 0, 70, 60]
    assert rep["inversion"]["steps"] == 15 and 0 < rep["inversion"]["psnr"] < 100 and -1 <= rep["inversion"]["ssim"] <= 1
    assert set(rep["models"]) == {"generator", "image_encoder", "audio_encoder"}
    assert rep["models"]["generator"]["name"] == "tiny-g" and len(rep["models"]["generator"]["sha256"]) == 64
    assert rep["sound_level"]["gain_vs_training_reference"] == pytest.approx(0.05 * 2 / math.sqrt(2) / 0.02, rel=0.01)
    assert {"invert_s", "edit_s", "total_s"} <= set(rep["timings"])
    assert rep["outputs"] == [str(out), str(strip)]
    px = pixels(out)
    assert px.shape == (60, 80, 3)  # the photo's size
    photo = pixels(inputs["photo"])
    assert np.array_equal(px[:, :10], photo[:, :10]) and np.array_equal(px[:, 70:], photo[:, 70:])
    with Image.open(out) as im:
        prov = json.loads(im.text["soundsight"])
    assert prov["seed"] == 0 and "tiny-g" in prov["models"] and prov["params"]["mode"] == "insert"
    s = pixels(strip)
    assert s.shape[1] == 5 * (128 + 2) + 2  # photo, reconstruction, 3 strengths


def _edit(tiny, inputs, out, image=None, sound=None, **kw):
    """The command in-process (the CLI contract itself is tested above and below)."""
    from soundsight.device import resolve_device
    from soundsight_plugins.latent_edit.plugin import run_edit_command

    args = dict(generator=str(tiny["g"]), image_encoder=str(tiny["fv"]), audio_encoder=str(tiny["fa"]), steps=6,
                out=out, device=resolve_device("cpu"))
    args.update(kw)
    return run_edit_command(image or inputs["photo"], sound or str(inputs["sound"]), **args)


def test_same_seed_same_edit_and_volume_modes(tmp_path, tiny, inputs):
    outs = []
    for i, (seed, flag) in enumerate([(1, "louder"), (1, "louder"), (2, "louder"), (1, "quieter")]):
        rep = _edit(tiny, inputs, tmp_path / f"o{i}.png", seed=seed, **{flag: True})
        assert rep["mode"] == "volume" and rep["strength"] == 1.0
        assert rep["gains"] == ([2.0, 0.5] if flag == "louder" else [0.5, 2.0])
        outs.append(pixels(tmp_path / f"o{i}.png"))
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2]) and not np.array_equal(outs[0], outs[3])


def test_region_in_the_report_and_the_provenance(tmp_path, tiny, inputs):
    rep = _edit(tiny, inputs, tmp_path / "r.png", sweep="0.5,1", strip=tmp_path / "s.png")  # an insert: auto
    assert rep["region"] == "auto" and len(rep["region_boxes_model_px"]) == 2  # the main edit and the sweep's other
    with Image.open(tmp_path / "r.png") as im:
        assert json.loads(im.text["soundsight"])["params"]["region"] == "auto"
    rep = _edit(tiny, inputs, tmp_path / "n.png", region="none")
    assert rep["region"] == "none" and rep["region_boxes_model_px"] is None
    rep = _edit(tiny, inputs, tmp_path / "v.png", louder=True)  # a volume edit: the whole picture
    assert rep["region"] == "none"
    rep = _edit(tiny, inputs, tmp_path / "b.png", region="0.2,0.1,0.6,0.5")
    assert rep["region"] == [0.2, 0.1, 0.6, 0.5] and len(rep["region_boxes_model_px"]) == 1


def test_add_rule_with_a_standardised_generator(tmp_path, tiny, inputs):
    from soundsight.registry import save_model
    from soundsight_plugins.scene_gen.gan import GANConfig, Generator

    G = tiny["modules"]["g"]
    d = G.cfg.feature_dim
    mean = 0.7 * torch.nn.functional.normalize(torch.randn(d, generator=torch.Generator().manual_seed(3)), dim=0)
    cfg = GANConfig.from_dict({**G.cfg.to_dict(), "norm_cond_mean": [float(v) for v in mean], "norm_cond_scale": 2.0})
    G2 = Generator(cfg)
    G2.load_state_dict(G.state_dict())
    g2 = save_model(tmp_path / "g2", name="tiny-g-std", task="scene-generation", architecture="scene-icgan",
                    config=cfg.to_dict(), tensors={"model.safetensors": G2.state_dict()})
    add = _edit(tiny, inputs, tmp_path / "add.png", generator=str(g2), rule="add", seed=1)
    mix = _edit(tiny, inputs, tmp_path / "mix.png", generator=str(g2), rule="mix", seed=1)
    assert add["rule"] == "add" and mix["rule"] == "mix"
    assert not np.array_equal(pixels(tmp_path / "add.png"), pixels(tmp_path / "mix.png"))
    with Image.open(tmp_path / "add.png") as im:
        assert json.loads(im.text["soundsight"])["params"]["rule"] == "add"
    vol = _edit(tiny, inputs, tmp_path / "vol.png", generator=str(g2), rule="add", louder=True)
    assert vol["rule"] is None  # the rule is an insert's; a volume edit ignores it


def test_refine_flag_and_gains(tmp_path, tiny, inputs):
    rep = _edit(tiny, inputs, tmp_path / "r.png", steps=4, refine=True, gains="3,1", strength=0.7,
                composite="residual")
    assert rep["inversion"]["refine_steps"] > 0 and rep["gains"] == [3.0, 1.0] and rep["strength"] == 0.7
    assert pixels(tmp_path / "r.png").shape == (60, 80, 3)


@pytest.mark.parametrize("case,needle", [
    ("unreadable", "not a readable image"),
    ("silent", "silent"),
    ("missing-sound", "no such file"),
    ("bad-gain", "bad gain"),
    ("two-modes", "at most one"),
    ("bad-gains", "--gains"),
    ("bad-sweep", "--sweep"),
    ("bad-composite", "--composite"),
    ("bad-rule", "--rule"),
    ("bad-region", "--region"),
    ("region-outside", "outside the edited square"),
    ("add-without-mean", "standardised condition"),
    ("unknown-model", "not installed"),
    ("wrong-model", "not 'scene-generation'"),
    ("exists", "exists"),
])
def test_errors_write_nothing(tmp_path, tiny, inputs, case, needle):
    from soundsight.errors import UserError

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    kw = dict(out=out_dir / "o.png", strip=out_dir / "s.png", steps=2)
    if case == "unreadable":
        kw["image"] = tmp_path / "bad.png"
        kw["image"].write_bytes(b"this is not a png" * 8)
    elif case == "silent":
        kw["sound"] = str(inputs["silent"])
    elif case == "missing-sound":
        kw["sound"] = str(tmp_path / "nope.wav")
    elif case == "bad-gain":
        kw["sound"] = f"{inputs['sound']}*loud"
    elif case == "two-modes":
        kw.update(louder=True, quieter=True)
    elif case == "bad-gains":
        kw["gains"] = "2"
    elif case == "bad-sweep":
        kw["sweep"] = "0,a"
    elif case == "bad-composite":
        kw["composite"] = "paste"
    elif case == "bad-rule":
        kw["rule"] = "blend"
    elif case == "bad-region":
        kw["region"] = "0,0,2,2"
    elif case == "region-outside":
        kw["region"] = "0,0,0.1,1"
    elif case == "add-without-mean":
        kw["rule"] = "add"  # the tiny G was trained without the standardised condition
    elif case == "unknown-model":
        kw["generator"] = "no-such-gan"
    elif case == "wrong-model":
        kw["generator"] = str(tiny["fv"])
    elif case == "exists":
        kw["strip"] = None
        kw["out"].write_bytes(b"old")
    with pytest.raises(UserError) as exc:
        _edit(tiny, inputs, **kw)
    msg = str(exc.value)
    assert needle.lower() in msg.lower() and "\n" not in msg
    expect = ["o.png"] if case == "exists" else []
    assert sorted(p.name for p in out_dir.iterdir()) == expect


def test_cli_errors_are_one_line_exit_2(tmp_path, tiny, inputs):
    r = run_cli("edit", inputs["photo"], "--sound", inputs["silent"], *model_args(tiny), "--out", tmp_path / "o.png")
    assert_user_error(r, "silent")
    r = run_cli("edit", inputs["photo"], "--sound", inputs["sound"], "--generator", "no-such-gan",
                "--out", tmp_path / "o.png")
    assert_user_error(r, "no-such-gan", "not installed")
    assert list(tmp_path.iterdir()) == []


def test_missing_default_models_name_the_training_command(tmp_path, monkeypatch):
    from soundsight import registry
    from soundsight.errors import ModelError
    from soundsight_plugins.latent_edit.pipeline import resolve_models

    monkeypatch.setattr(registry, "search_dirs", lambda: [tmp_path])
    with pytest.raises(ModelError) as exc:
        resolve_models()
    msg = str(exc.value)
    assert "scene-gan-64" in msg and "python -m soundsight_train.scene_gan" in msg and "\n" not in msg


def test_recipe_step(tmp_path, tiny, inputs):
    (tmp_path / "out").mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
version: 1
defaults: {{seed: 3, steps: 3}}
steps:
  - step: edit
    for_each: ['{inputs["photo"]}']
    with: {{image: '{{item}}', sound: '{inputs["sound"]}', out: 'out/{{stem}}.png', generator: '{tiny["g"]}',
            image_encoder: '{tiny["fv"]}', audio_encoder: '{tiny["fa"]}', quieter: true}}
""")
    r = run_cli("run", recipe, "--json")
    assert r.code == 0, r.err
    # the step hands its parameters on: the same picture as the command with seed 3, 3 steps, --quieter
    rep = _edit(tiny, inputs, tmp_path / "direct.png", seed=3, steps=3, quieter=True)
    assert rep["mode"] == "volume" and rep["gains"] == [0.5, 2.0]
    assert np.array_equal(pixels(tmp_path / "out/photo.png"), pixels(tmp_path / "direct.png"))
    with Image.open(tmp_path / "out/photo.png") as im:
        prov = json.loads(im.text["soundsight"])
    assert prov["params"]["quieter"] is True and prov["recipe_item"].startswith("edit")
    r2 = run_cli("run", recipe, "--json")  # resumed: nothing redone
    assert r2.code == 0 and len(json.loads(r2.out)["skipped"]) == 1


# --------------------------------------------------------------------------------------------
# the evaluation on a toy dataset


def test_eval_edit_on_toy_scenes(tmp_path, tiny, inputs):
    from test_scene_models import write_toy_scenes

    from soundsight_train import eval_edit

    data = write_toy_scenes(tmp_path / "scenes-toy", counts={"train": 4, "val": 2, "test": 6})
    out = tmp_path / "eval"
    rc = eval_edit.main(["--data", str(data), "--n", "3", "--real", "0", "--photo", str(inputs["photo"]),
                         "--steps", "4", "--region", "none", "--topk", "1", "--strengths", "0.5,1", "--volume-strengths", "1",
                         "--generator", str(tiny["g"]), "--image-encoder", str(tiny["fv"]),
                         "--audio-encoder", str(tiny["fa"]), "--evaluator", str(tiny["ev"]), "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    s = res["summary"]
    assert s["test composites"]["n"] == 3 and s["real photos"]["n"] == 1 and s["all"]["n"] == 4
    for g in s.values():
        assert set(g["insert"]) == {"0.5", "1.0"}
        for v in g["insert"].values():
            assert 0 <= v["hit"] <= 1 and -1 <= v["outside_ssim"] <= 1
    rows = res["rows"]
    assert all(r["insert_class"] in ("class0", "class1", "class2") for r in rows)
    comp = [r for r in rows if r["source"] == "test-composite"]
    assert all(r["insert_class"] not in [f"class{c}" for c in data_labels(data, r["name"])] for r in comp)
    md = (out / "results.md").read_text()
    assert "| test composites | 3 |" in md and "SSIM outside object" in md and "ceiling" in md
    # the pasted real object: the ceiling is a rate like the others
    assert all(0 <= g["paste_hit"] <= 1 for g in s.values()) and all(isinstance(r["paste_hit"], bool) for r in rows)
    rc = eval_edit.main(["--data", str(data), "--n", "2", "--real", "0", "--steps", "2", "--topk", "1",
                         "--strengths", "1", "--volume-strengths", "1", "--volume-region", "auto",
                         "--generator", str(tiny["g"]), "--image-encoder", str(tiny["fv"]),
                         "--audio-encoder", str(tiny["fa"]), "--evaluator", str(tiny["ev"]), "--out", str(out / "r")])
    res = json.loads((out / "r" / "results.json").read_text())
    md = (out / "r" / "results.md").read_text()
    assert rc == 0 and res["setup"]["region"] == res["setup"]["volume_region"] == "auto"
    assert "mix rule, region auto" in md and "0.5], region auto;" in md


def data_labels(data, name):
    from soundsight_train import scenes

    i = int(name.split("-")[1])
    return [int(c) for c in scenes.SceneSplit(data, "test").labels[i] if c >= 0]
