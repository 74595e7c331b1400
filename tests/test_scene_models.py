"""scene-gen models (plugins/scene_gen) and their training entrypoints (train/scene_*.py).

Tiny configs on a toy scenes dataset written here in train/scenes.py's on-disk format (coloured
squares that grow with gain, tones), so no Debian package and no cached dataset is needed:
shapes, the InfoNCE loss against a hand-computed case, the level-keeping audio front end,
one optimisation step per stage, determinism by seed, and each entrypoint end to end
(--tiny) with its registry folder loaded back through the loaders.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from soundsight_plugins.scene_gen import loaders
from soundsight_plugins.scene_gen.encoders import (
    AudioEncoder,
    AudioEncoderConfig,
    AudioFrontEnd,
    ImageEncoder,
    ImageEncoderConfig,
    ProjectionHead,
    fit_length,
)
from soundsight_plugins.scene_gen.gan import Discriminator, GANConfig, Generator, diff_augment
from soundsight_plugins.scene_gen.losses import hinge_d, hinge_g, infonce_l2, l2_logits, nt_xent


HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
needs_diffusers = pytest.mark.skipif(not HAS_DIFFUSERS, reason="the LDM back end needs diffusers")


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def write_toy_scenes(folder, counts=None, seconds=0.5, seed=0, n_classes=3):
    """A scenes dataset folder in train/scenes.py's on-disk format, made from coloured squares and
    tones (no Debian packages): class c is colour c and a tone; the square's side grows with gain."""
    from soundsight_train import scenes

    counts = counts or {"train": 24, "val": 8, "test": 8}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    spec = scenes.SceneSpec(seconds=seconds)
    sr, n = spec.sample_rate, spec.n_samples
    colours = np.array([[230, 40, 40], [40, 200, 60], [40, 80, 230], [230, 220, 40]])[:n_classes]
    t = np.arange(sr) / sr
    recs = [(0.3 * np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
            for f in (220.0, 660.0, 1760.0, 3000.0)[:n_classes]]
    bank = scenes.AudioBank.from_list(recs, sr)
    bank.save(folder / "bank.npz")
    for split, count in counts.items():
        S = spec.size
        a = {"images": np.zeros((count, S, S, 3), np.uint8), "labels": np.full((count, 2), -1, np.int16),
             "boxes": np.full((count, 2, 4), -1, np.int16), "gains": np.zeros((count, 2), np.float32),
             "stamps": np.full((count, 2), -1, np.int16), "recordings": np.full((count, 2), -1, np.int16),
             "offsets": np.zeros((count, 2), np.int32), "scales": np.zeros((count, 2), np.float32),
             "n_objects": np.zeros(count, np.int8), "background": np.zeros(count, np.int16),
             "crop": np.zeros((count, 4), np.int16)}
        for i in range(count):
            img = (rng.integers(60, 120, (S, S, 3))).astype(np.uint8)
            k = 1 + int(rng.random() < 0.4)
            cls = rng.choice(n_classes, size=k, replace=False)
            gains = sorted(np.exp(rng.uniform(np.log(0.25), np.log(4.0), k)), reverse=True)
            for j in reversed(range(k)):
                side = int(spec.object_side(gains[j]))
                y1 = min(S, int(spec.ground(gains[j])))
                y0 = max(0, y1 - side)
                x0 = int(rng.integers(0, S - side + 1))
                img[y0:y1, x0:x0 + side] = colours[cls[j]]
                a["boxes"][i, j] = (x0, y0, x0 + side, y1)
                a["labels"][i, j] = cls[j]
                a["gains"][i, j] = gains[j]
                a["recordings"][i, j] = cls[j]
                a["stamps"][i, j] = cls[j]
                a["offsets"][i, j] = int(rng.integers(0, sr))
                a["scales"][i, j] = scenes.clip_scale(bank.clip(int(cls[j]), 0, n), spec.ref_rms)
            a["images"][i] = img
            a["n_objects"][i] = k
        np.savez_compressed(folder / f"{split}.npz", **a)
    item = {"source": "toy", "licence": "CC0-1.0"}
    meta = {"format": scenes.FORMAT_VERSION, "spec": spec.__dict__, "seed": seed, "counts": counts,
            "classes": [f"class{c}" for c in range(n_classes)],
            "stamps": [dict(item, id=c) for c in range(n_classes)],
            "recordings": [dict(item, id=c) for c in range(n_classes)],
            "backgrounds": [dict(item, id=0)], "licences": {"toy": "CC0-1.0"}, "splits": {}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_scenes(tmp_path_factory.mktemp("data") / "scenes-toy")


def _changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point())


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------
# losses


def test_infonce_matches_a_hand_computed_2x2_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # distances of unit vectors: d(a1,v1)=0, d(a1,v2)=sqrt(.8), d(a2,v1)=sqrt(2), d(a2,v2)=sqrt(.4)
    s8, s2, s4 = math.sqrt(0.8), math.sqrt(2.0), math.sqrt(0.4)
    la1 = math.log(1 + math.exp(-s8))  # audio 1 vs images {v1, v2}
    la2 = math.log(1 + math.exp(-s2 + s4))  # audio 2: -log(e^-s4 / (e^-s2 + e^-s4))
    lv1 = math.log(1 + math.exp(-s2))  # image 1 vs audio {a1, a2}
    lv2 = math.log(1 + math.exp(-s8 + s4))  # image 2: -log(e^-s4 / (e^-s8 + e^-s4))
    expected = (la1 + la2 + lv1 + lv2) / 4  # 1/(2B) sum_j (L^A_j + L^V_j), B = 2
    assert float(infonce_l2(a, v)) == pytest.approx(expected, abs=1e-5)
    # features are unit-normalised first: scaling changes nothing
    assert float(infonce_l2(3 * a, 0.5 * v)) == pytest.approx(expected, abs=1e-5)
    # temperature divides the logits
    torch.testing.assert_close(l2_logits(a, v, 0.5), 2 * l2_logits(a, v), atol=1e-5, rtol=1e-5)
    # symmetric in the two modalities
    assert float(infonce_l2(v, a)) == pytest.approx(expected, abs=1e-5)
    a.requires_grad_(True)
    infonce_l2(a, a.detach()).backward()  # zero distances on the diagonal: gradient stays finite
    assert torch.isfinite(a.grad).all()


def test_hinge_and_nt_xent():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert float(hinge_d(real, fake)) == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert float(hinge_g(fake)) == pytest.approx(1.0)
    z = torch.eye(4)
    assert float(nt_xent(z, z, temperature=0.05)) < 1e-6  # views identical, negatives orthogonal
    assert float(nt_xent(z, z.roll(1, 0), temperature=0.05)) > 10


# --------------------------------------------------------------------------------------------
# audio front end: level is kept


def test_front_end_keeps_level_unlike_a_per_clip_zscore():
    cfg = AudioEncoderConfig.preset("tiny", seconds=0.5)
    g = torch.Generator().manual_seed(0)
    x = 0.05 * torch.randn(2, 8000, generator=g)  # 4x stays inside ±1: no clipping
    assert float((4 * x).abs().max()) < 1.0
    torch.manual_seed(0)
    model = AudioEncoder(cfg).eval()
    spec, spec4 = model.frontend(x), model.frontend(4 * x)
    # a gain of 4 is a power gain of 16: the global normalisation shifts every bin by log(16)/std
    torch.testing.assert_close(spec4 - spec, torch.full_like(spec, math.log(16.0)), atol=1e-3, rtol=0)
    with torch.no_grad():
        e, e4 = model.embed(x), model.embed(4 * x)
    assert float((e - e4).norm(dim=1).min()) > 1e-3, "the embedding must change with gain"
    # the public code's per-clip z-score removes the gain: same spectrogram, same embedding
    zcfg = AudioEncoderConfig.preset("tiny", seconds=0.5, norm="clip")
    zmodel = AudioEncoder(zcfg).eval()
    zmodel.load_state_dict(model.state_dict())
    torch.testing.assert_close(zmodel.frontend(4 * x), zmodel.frontend(x), atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(zmodel.embed(4 * x), zmodel.embed(x), atol=1e-4, rtol=1e-4)


def test_front_end_length_clip_and_stats():
    cfg = AudioEncoderConfig.preset("tiny", seconds=0.5)
    fe = AudioFrontEnd(cfg)
    short = torch.arange(3000, dtype=torch.float32)[None]
    tiled = fit_length(short, 8000)
    assert tiled.shape == (1, 8000) and torch.equal(tiled[0, 3000:6000], short[0])
    assert fit_length(torch.zeros(1, 20000), 8000).shape == (1, 8000)
    assert fe(torch.randn(3, 5000) * 0.1).shape == (3, 1, cfg.n_bins, cfg.n_frames)
    # clipping to ±1: a 10x louder square wave that already sits at ±1 gives the same spectrogram
    sq = torch.sign(torch.sin(torch.arange(8000) / 5.0))[None]
    torch.testing.assert_close(fe.log_spec(10 * sq), fe.log_spec(sq))
    mean, std = fe.statistics(0.05 * torch.randn(4, 8000, generator=torch.Generator().manual_seed(1)))
    assert math.isfinite(mean) and std > 0
    # paper settings: 10 s, nperseg 512, hop 159 -> 257 x 1004
    paper = AudioEncoderConfig.preset("paper")
    assert (paper.n_bins, paper.n_frames) == (257, 1004)


# --------------------------------------------------------------------------------------------
# shapes and one optimisation step per stage


@pytest.mark.parametrize("size", [32, 64, 128])
def test_image_encoder_shapes(size):
    enc = ImageEncoder(ImageEncoderConfig.for_size(size, "tiny")).eval()
    x = torch.rand(2, 3, size, size)
    assert enc(x).shape == (2, 32)
    e = enc.embed(x)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2))
    # uint8 NHWC at another size is accepted (resized to the encoder's size)
    assert enc.embed(torch.randint(0, 255, (2, 48, 48, 3), dtype=torch.uint8)).shape == (2, 32)


def test_image_encoder_step():
    torch.manual_seed(0)
    enc, head = ImageEncoder(ImageEncoderConfig.for_size(32, "tiny")), ProjectionHead(32, 16)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=1e-3)
    before = _snapshot(enc)
    x = torch.rand(8, 3, 32, 32)
    z = head(enc(torch.cat([x, x.flip(-1)])))
    loss = nt_xent(z[:8], z[8:])
    loss.backward()
    opt.step()
    assert math.isfinite(float(loss.detach())) and _changed(before, enc)


def test_audio_encoder_step():
    torch.manual_seed(0)
    cfg = AudioEncoderConfig.preset("tiny", seconds=0.5)
    fa = AudioEncoder(cfg)
    assert fa(torch.randn(3, 8000) * 0.1).shape == (3, 32)
    opt = torch.optim.Adam(fa.parameters(), lr=1e-3, weight_decay=1e-5)
    before = _snapshot(fa)
    loss = infonce_l2(fa(torch.randn(4, 8000) * 0.1), torch.randn(4, 32), temperature=0.1)
    loss.backward()
    opt.step()
    assert math.isfinite(float(loss.detach())) and _changed(before, fa)


@pytest.mark.parametrize("size", [32, 64])
def test_gan_shapes_and_step(size):
    torch.manual_seed(0)
    cfg = GANConfig.for_size(size, "tiny", feature_dim=32, attn_res=16, d_attn_res=16)
    G, D = Generator(cfg), Discriminator(cfg)
    assert G.attn and D.attn  # self-attention blocks are built where asked
    h = torch.randn(4, 32)
    fake = G(G.sample_z(4), h)
    assert fake.shape == (4, 3, size, size) and float(fake.detach().abs().max()) <= 1
    og = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.999))
    od = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.999))
    bg, bd = _snapshot(G), _snapshot(D)
    real = torch.rand(4, 3, size, size) * 2 - 1
    ld = hinge_d(D(diff_augment(real), h), D(diff_augment(fake.detach()), h))
    ld.backward()
    od.step()
    D.requires_grad_(False)
    lg = hinge_g(D(diff_augment(G(G.sample_z(4), h), "color,translation,cutout"), h))
    lg.backward()
    og.step()
    assert math.isfinite(float(ld.detach())) and math.isfinite(float(lg.detach()))
    assert _changed(bg, G) and _changed(bd, D)


def test_gan_generation_is_deterministic_by_seed():
    torch.manual_seed(0)
    G = Generator(GANConfig.for_size(32, "tiny", feature_dim=32)).eval()
    h = torch.randn(3, 32)
    a = G.generate(h, torch.Generator().manual_seed(5))
    b = G.generate(h, torch.Generator().manual_seed(5))
    c = G.generate(h, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == (3, 3, 32, 32) and 0 <= float(a.min()) and float(a.max()) <= 1
    # one image does not depend on the others in its batch (running BN statistics)
    torch.testing.assert_close(G.generate(h[:1], z=G.sample_z(3, torch.Generator().manual_seed(5))[:1]), a[:1])
    assert G.sample_z(100, torch.Generator().manual_seed(0), truncation=0.5).abs().max() <= 0.5


def test_standardised_conditioning_centres_the_features_and_separates_close_conditions():
    from soundsight_plugins.scene_gen.conditioning import Standardize, feature_statistics

    g = torch.Generator().manual_seed(0)
    # features like real scenes': a shared direction plus a small individual part
    common = torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0)
    feats = torch.nn.functional.normalize(common + 0.3 * torch.randn(200, 32, generator=g) / 32 ** 0.5, dim=1)
    mean, scale = feature_statistics(feats[:100], feats[100:])
    z = Standardize(mean, scale)(feats)
    assert z.mean(0).abs().max() < 1e-5 and float(z.square().mean()) == pytest.approx(1.0, rel=1e-4)
    assert torch.equal(Standardize(None, 1.0)(feats), feats)  # models trained without statistics
    # the same G weights: with the statistics, two close conditions give more different images
    torch.manual_seed(0)
    plain = Generator(GANConfig.for_size(32, "tiny", feature_dim=32)).eval()
    std = Generator(GANConfig.for_size(32, "tiny", feature_dim=32, norm_cond_mean=tuple(mean),
                                       norm_cond_scale=scale)).eval()
    std.load_state_dict(plain.state_dict())  # the statistics are config, not weights
    zn = plain.sample_z(1, torch.Generator().manual_seed(1)).expand(2, -1)
    spread = [float((G.generate(feats[:2], z=zn)[0] - G.generate(feats[:2], z=zn)[1]).abs().mean())
              for G in (plain, std)]
    assert spread[1] > 3 * spread[0]


def test_paper_gan_width():
    cfg = GANConfig.for_size(128, "paper")
    assert (cfg.ch, cfg.z_dim, cfg.g_mult) == (96, 120, (16, 16, 8, 4, 2, 1))
    with pytest.raises(ValueError):
        GANConfig.for_size(64, z_dim=61)


@needs_diffusers
def test_ldm_step_and_determinism():
    from soundsight_plugins.scene_gen.ldm import LDMConfig, SceneLDM

    torch.manual_seed(0)
    cfg = LDMConfig.for_size(32, "tiny", feature_dim=32)
    ldm = SceneLDM(cfg)
    assert cfg.latent_size == 16 and cfg.unet_kwargs()["cross_attention_dim"] == 16
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ov = torch.optim.AdamW(ldm.vae.parameters(), lr=1e-3)
    before = _snapshot(ldm.vae)
    res = ldm.vae_loss(x)
    res["loss"].backward()
    ov.step()
    assert math.isfinite(float(res["loss"].detach())) and _changed(before, ldm.vae)
    lat = ldm.encode(x).detach()
    assert lat.shape == (2, 4, 16, 16)
    ou = torch.optim.AdamW([p for n, p in ldm.named_parameters() if not n.startswith("vae.")], lr=1e-3)
    before = _snapshot(ldm.unet)
    loss = ldm.unet_loss(lat, torch.randn(2, 32), torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    ou.step()
    assert math.isfinite(float(loss.detach())) and _changed(before, ldm.unet)
    ldm.eval()
    h = torch.randn(2, 32)
    a = ldm.sample(h, steps=2, generator=torch.Generator().manual_seed(3))
    b = ldm.sample(h, steps=2, generator=torch.Generator().manual_seed(3))
    c = ldm.sample(h, steps=2, generator=torch.Generator().manual_seed(4))
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a, ldm.sample(h, steps=2, generator=torch.Generator().manual_seed(3), guidance=1.0))


# --------------------------------------------------------------------------------------------
# entrypoints end to end (--tiny) and the registry round trip


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    """Run the four entrypoints in order with --tiny; returns their registry folders."""
    from soundsight_train import scene_audio_encoder, scene_gan, scene_image_encoder, scene_ldm

    root = tmp_path_factory.mktemp("scene-models")
    common = ["--data", str(toy), "--threads", "1"]
    out = {k: root / "models" / k for k in ("fv", "gan", "fa", "ldm")}
    assert scene_image_encoder.main(["--tiny", *common, "--out", str(out["fv"]), "--run-dir", str(root / "runs/fv"),
                                     "--steps", "2"]) == 0
    fv = ["--image-encoder", str(out["fv"])]
    assert scene_gan.main(["--tiny", *common, *fv, "--out", str(out["gan"]), "--run-dir", str(root / "runs/gan")]) == 0
    assert scene_audio_encoder.main(["--tiny", *common, *fv, "--out", str(out["fa"]),
                                     "--run-dir", str(root / "runs/fa")]) == 0
    if HAS_DIFFUSERS:
        assert scene_ldm.main(["--tiny", *common, *fv, "--out", str(out["ldm"]),
                               "--run-dir", str(root / "runs/ldm")]) == 0
    else:
        del out["ldm"]
    return {"root": root, "common": common, **out}


def test_entrypoints_write_registry_models(trained):
    from soundsight.registry import resolve

    expect = {"fv": (loaders.IMAGE_ENCODER, "scene-image-embedding"), "gan": (loaders.GAN, "scene-generation"),
              "fa": (loaders.AUDIO_ENCODER, "scene-audio-embedding"), "ldm": (loaders.LDM, "scene-generation")}
    for key, (arch, task) in expect.items():
        if key not in trained:
            continue
        folder = resolve(trained[key], task=task)
        card = folder.card
        assert card["architecture"] == arch and card["config"]
        assert card["training"]["command"].startswith("python -m soundsight_train.scene_")
        assert card["data"]["dataset"] == "scenes-toy" and card["data"]["counts"]["train"] == 24
        assert card["metrics"]["val"], key
        curve = [json.loads(line) for line in (trained["root"] / "runs" / key / "curve.jsonl").read_text().splitlines()]
        assert any("val_final" in r for r in curve)
    fv_card = resolve(trained["fv"]).card
    assert fv_card["training"]["steps"] == 2 and "knn_top1" in fv_card["metrics"]["val"]
    fa_card = resolve(trained["fa"]).card
    assert fa_card["config"]["norm"] == "global" and fa_card["config"]["norm_std"] > 0
    assert fa_card["aligned_to"]["image_encoder"]["name"] == "fv"
    assert {"r1", "r5", "gain_monotonic"} <= set(fa_card["metrics"]["val"])
    assert (trained["root"] / "runs/gan/samples.png").is_file()
    if "ldm" in trained:
        assert (trained["root"] / "runs/ldm/samples.png").is_file()
        assert resolve(trained["ldm"]).config["latent_scale"] > 0


def test_loaders_rebuild_the_models(trained, monkeypatch):
    """The plugin's register_models hook + registry.load build every architecture from its folder."""
    from soundsight import registry
    from soundsight.device import resolve_device
    from soundsight_plugins.scene_gen import plugin

    specs = []
    plugin.register_models(register=specs.append)
    assert {s.architecture for s in specs} == set(loaders.ARCHITECTURES)
    monkeypatch.setattr(registry, "model_specs", lambda: specs)
    dev = resolve_device("cpu")
    fv = registry.load(trained["fv"], dev)
    fa = registry.load(trained["fa"], dev, task="scene-audio-embedding")
    gan = registry.load(trained["gan"], dev)
    assert isinstance(fv, ImageEncoder) and isinstance(fa, AudioEncoder) and isinstance(gan, Generator)
    assert not (fv.training or fa.training or gan.training)
    # weights equal the saved tensors
    saved = registry.resolve(trained["gan"]).tensors()
    assert all(torch.equal(saved[k], v) for k, v in gan.state_dict().items())
    # the chain of the command: sound -> f_A -> G, deterministic by seed
    z_a = fa.embed(torch.randn(2, 8000) * 0.05)
    img1 = gan.generate(z_a, torch.Generator().manual_seed(0))
    img2 = loaders.load_gan(registry.resolve(trained["gan"]), "cpu").generate(z_a, torch.Generator().manual_seed(0))
    assert img1.shape == (2, 3, 32, 32) and torch.equal(img1, img2)
    assert fv.embed(img1).shape == (2, 32)
    if "ldm" not in trained:
        return
    ldm = registry.load(trained["ldm"], dev)
    assert not ldm.training
    x1 = ldm.sample(z_a, steps=2, generator=torch.Generator().manual_seed(0))
    x2 = loaders.load_ldm(registry.resolve(trained["ldm"])).sample(z_a, steps=2,
                                                                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(x1, x2)


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    from soundsight_train import scene_image_encoder

    run = trained["root"] / "runs/fv"
    assert json.loads((run / "ckpt/state.json").read_text())["step"] == 2
    out = tmp_path / "fv-more"
    assert scene_image_encoder.main(["--tiny", *trained["common"], "--out", str(out), "--run-dir", str(run),
                                     "--steps", "3", "--resume"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["steps"] == 3
    # a different config is refused
    with pytest.raises(SystemExit):
        scene_image_encoder.main(["--tiny", *trained["common"], "--out", str(out), "--run-dir", str(run),
                                  "--steps", "4", "--resume", "--feature-dim", "16"])
