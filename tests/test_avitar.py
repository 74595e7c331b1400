"""AViTAR (acoustic-match's generator), its discriminators and losses, the learned RT60
estimator, their training entrypoints (tiny paths) and registry round trips. Tiny models only."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soundsight_plugins.acoustic_match import loaders  # noqa: E402
from soundsight_plugins.acoustic_match.avitar import AViTAR, AViTARConfig  # noqa: E402
from soundsight_plugins.acoustic_match.discriminators import (DiscConfig, Discriminators, MelLoss,  # noqa: E402
                                                              MultiResolutionSTFTLoss, d_loss,
                                                              feature_matching_loss, g_adv_loss)
from soundsight_plugins.acoustic_match.rt60_net import RT60Config, RT60Net, mel_filterbank  # noqa: E402

from test_acoustics import speech_like  # noqa: E402
from test_rooms import build_tiny_rooms  # noqa: E402

SR = 16000


def _tiny(seed=0, **kw) -> AViTAR:
    torch.manual_seed(seed)
    return AViTAR(AViTARConfig.preset("tiny", **kw))


def _trained_a_little(seed=0, **kw) -> AViTAR:
    """A tiny model whose residual branch is no longer zero (random decoder output layer)."""
    m = _tiny(seed, **kw)
    with torch.no_grad():
        torch.manual_seed(seed + 1)
        w = m.decoder.out.parametrizations.weight
        w.original0.normal_(0, 0.5)
    return m.eval()


def _speech(n=SR, seed=0, batch=1):
    x = np.stack([speech_like(n / SR + 0.01, seed=seed + b)[:n] for b in range(batch)])
    return torch.from_numpy(x.astype(np.float32))[:, None]


# ----------------------------------------------------------------------------------------------
# generator


def test_config_presets_and_sizes():
    tiny, cpu, paper = (AViTARConfig.preset(p) for p in ("tiny", "cpu", "paper"))
    assert tiny.hop == cpu.hop == paper.hop == 128 and cpu.ratios == (8, 4, 2, 2)
    assert 50_000 < AViTAR(tiny).num_parameters() < 200_000
    n_cpu = AViTAR(cpu).num_parameters()
    assert 500_000 < n_cpu < 1_500_000  # the shipped size: a few MB
    cfg = AViTARConfig.from_dict(json.loads(json.dumps(cpu.to_dict())))
    assert cfg == cpu
    with pytest.raises(ValueError):
        AViTARConfig.preset("huge")


@pytest.mark.parametrize("T", [1, 127, 128, 5000, 12345])
def test_match_shapes_any_length(T):
    m = _trained_a_little()
    x = torch.randn(2, 1, T) * 0.05
    img = torch.rand(2, 3, m.image_size, m.image_size)
    y = m.match(x, img)
    assert y.shape == (2, 1, T) and torch.isfinite(y).all()
    assert m.sample_rate == 16000 and m.image_size == 32


def test_residual_starts_as_identity_and_is_level_invariant():
    m = _tiny().eval()
    x = _speech(4000)
    img = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(m.match(x, img), x, atol=1e-6, rtol=0)  # zero-initialised reverb branch
    m = _trained_a_little()
    y1 = m.match(x, img)
    assert (y1 - x).abs().max() > 1e-3
    torch.testing.assert_close(m.match(10 * x, img), 10 * y1, rtol=1e-4, atol=1e-5)
    # another picture, another output
    assert (m.match(x, torch.rand(1, 3, 32, 32)) - y1).abs().max() > 1e-5
    # images of another size are resized
    assert m.match(x, torch.rand(1, 3, 48, 48)).shape == x.shape


def test_deterministic_and_batch_independent():
    a, b = _trained_a_little(seed=3), _trained_a_little(seed=3)
    x = _speech(3000, batch=3)
    img = torch.rand(3, 3, 32, 32)
    ya = a.match(x, img)
    torch.testing.assert_close(ya, b.match(x, img), atol=0, rtol=0)
    torch.testing.assert_close(ya, a.match(x, img), atol=0, rtol=0)
    torch.testing.assert_close(ya[1:2], a.match(x[1:2], img[1:2]), atol=1e-6, rtol=1e-5)


def test_no_image_ablation_ignores_the_image():
    m = _trained_a_little(use_image=False)
    assert m.image_encoder is None and m.null_image is not None
    x = _speech(2000)
    y = m.match(x, None)
    torch.testing.assert_close(m.match(x, torch.rand(1, 3, 32, 32)), y)
    assert y.shape == x.shape
    with pytest.raises(ValueError):
        _tiny().match(x, None)  # the full model needs its picture
    with pytest.raises(ValueError):
        m.match(x[0], None)  # (B, 1, T) only


# ----------------------------------------------------------------------------------------------
# discriminators and losses


def test_discriminator_outputs():
    cfg = DiscConfig.preset("tiny")
    D = Discriminators(cfg)
    x = torch.randn(2, 1, 4001)
    outs = D(x)
    assert len(outs) == len(cfg.periods) + cfg.scales
    for logits, feats in outs:
        assert logits.shape[0] == 2 and logits.dim() == 2
        assert len(feats) >= 5 and all(f.shape[0] == 2 for f in feats)
    # period discriminators fold the signal into columns of width p
    assert outs[0][1][0].shape[-1] == cfg.periods[0] and outs[1][1][0].shape[-1] == cfg.periods[1]
    # the paper's discriminator widths build too (HiFi-GAN: MPD 32, MSD 16)
    assert DiscConfig.preset("paper").mpd_channels == 32


def test_losses_behave():
    ones = [(torch.ones(2, 5), [torch.ones(2, 3)])]
    zeros = [(torch.zeros(2, 5), [torch.zeros(2, 3)])]
    assert float(d_loss(ones, zeros)) == 0.0  # perfect discriminator
    assert float(d_loss(zeros, ones)) == 2.0
    assert float(g_adv_loss(ones)) == 0.0 and float(g_adv_loss(zeros)) == 1.0
    assert float(feature_matching_loss(ones, zeros)) == 1.0
    x = _speech(8000)[:, 0]
    mel, mr = MelLoss(SR), MultiResolutionSTFTLoss()
    assert float(mel(x, x)) == 0.0 and float(mr(x, x)) < 1e-6
    noisy = x + 0.05 * torch.randn_like(x)
    assert float(mel(noisy, x)) > 0.1 and float(mr(noisy, x)) > 0.1
    fb = mel_filterbank(SR, 512, 40, 50.0, 8000.0)
    assert fb.shape == (40, 257)
    torch.testing.assert_close(fb.sum(1), torch.ones(40))
    assert torch.all(torch.diff(fb.argmax(1)) >= 0)  # centres rise


def test_one_training_step_updates_both_networks():
    from soundsight_train.avitar import train_step

    torch.manual_seed(0)
    G = AViTAR(AViTARConfig.preset("tiny")).train()
    D = Discriminators(DiscConfig.preset("tiny")).train()
    opt_g = torch.optim.AdamW(G.parameters(), lr=1e-3, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(D.parameters(), lr=1e-3, betas=(0.8, 0.99))
    x = _speech(4000, batch=2)
    y = torch.from_numpy(np.stack([np.convolve(x[b, 0].numpy(), np.exp(-np.arange(800) / 200.0))[:4000]
                                   for b in range(2)]).astype(np.float32))[:, None] * 0.1
    img = torch.rand(2, 3, 32, 32)
    g0 = {k: v.clone() for k, v in G.state_dict().items()}
    d0 = {k: v.clone() for k, v in D.state_dict().items()}
    stats = train_step(G, D, opt_g, opt_d, None, x, y, img, mel_loss=MelLoss(SR), stft_loss=MultiResolutionSTFTLoss(),
                       skip=500, adv=True, stft_weight=15.0)
    for k in ("loss", "mel", "stft", "adv", "fm", "d", "gnorm"):
        assert np.isfinite(stats[k]), k
    assert any(not torch.equal(g0[k], v) for k, v in G.state_dict().items())
    assert any(not torch.equal(d0[k], v) for k, v in D.state_dict().items())
    # without the adversarial terms the discriminators are left alone
    d1 = {k: v.clone() for k, v in D.state_dict().items()}
    stats = train_step(G, D, opt_g, opt_d, None, x, y, img, mel_loss=MelLoss(SR), stft_loss=MultiResolutionSTFTLoss(),
                       skip=0, adv=False, stft_weight=15.0)
    assert "adv" not in stats and all(torch.equal(d1[k], v) for k, v in D.state_dict().items())


def test_a_few_steps_lower_the_reconstruction_loss():
    from soundsight_train.avitar import train_step

    torch.manual_seed(1)
    G = AViTAR(AViTARConfig.preset("tiny")).train()
    opt = torch.optim.AdamW(G.parameters(), lr=1e-2, betas=(0.8, 0.99))
    x = _speech(4096, batch=2, seed=5)
    decay = np.exp(-np.arange(1600) / 300.0) * np.random.default_rng(0).standard_normal(1600)
    decay[0] = 3.0
    y = torch.from_numpy(np.stack([np.convolve(x[b, 0].numpy(), decay)[:4096] for b in range(2)]).astype(np.float32))
    y = y[:, None] * (x.pow(2).mean().sqrt() / y.pow(2).mean().sqrt())
    img = torch.rand(2, 3, 32, 32)
    mel, mr = MelLoss(SR), MultiResolutionSTFTLoss()
    losses = [train_step(G, None, opt, None, None, x, y, img, mel_loss=mel, stft_loss=mr, skip=0, adv=False,
                         stft_weight=15.0)["loss"] for _ in range(20)]
    assert np.mean(losses[-4:]) < 0.93 * losses[0]


# ----------------------------------------------------------------------------------------------
# the entrypoints on a tiny rooms dataset


@pytest.fixture(scope="module")
def tiny_rooms(tmp_path_factory):
    return build_tiny_rooms(tmp_path_factory.mktemp("data"), seed=2, bank_seed=20, length_step=0.3, n_rays=500)


def test_pair_stream_batches(tiny_rooms):
    from soundsight_train.avitar import PairStream

    s = PairStream(tiny_rooms, crop=4000, image_size=32, seed=0)
    dl = iter(torch.utils.data.DataLoader(s, batch_size=3))
    x, y, img = next(dl)
    assert x.shape == y.shape == (3, 1, 4000) and img.shape == (3, 3, 32, 32)
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    x2, _, _ = next(iter(torch.utils.data.DataLoader(PairStream(tiny_rooms, 4000, 32, seed=0), batch_size=3)))
    torch.testing.assert_close(x, x2)  # seeded


def test_pair_stream_alteration_path(tiny_rooms):
    pytest.importorskip("nara_wpe", reason="pip install nara_wpe")
    from soundsight_train.avitar import PairStream

    x, y, img = next(iter(PairStream(tiny_rooms, crop=8000, image_size=32, seed=1, alter=1.0)))
    assert x.shape == y.shape == (1, 8000) and torch.isfinite(x).all()
    assert not torch.allclose(x, y)


def test_tiny_entrypoint_writes_a_loadable_registry_folder(tiny_rooms, tmp_path):
    from soundsight.registry import resolve
    from soundsight_train import avitar as train_avitar

    out, run = tmp_path / "avitar-tiny", tmp_path / "run"
    rc = train_avitar.main(["--tiny", "--data", str(tiny_rooms), "--out", str(out), "--run", str(run),
                            "--threads", "1", "--eval-rooms", "1"])
    assert rc == 0
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"] == "avitar" and card["task"] == "acoustic-match"
    rows = card["metrics"]["unseen_rooms"]["rows"]
    assert {"input", "blind reverberator", "oracle", "AViTAR (waveform)", "AViTAR (ir mode)"} <= set(rows)
    assert card["training"]["steps"] == 4 and "espeak-ng (synthetic speech)" in card["data"]["licences"]
    curve = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    assert any("mel" in r for r in curve) and any("val" in r for r in curve)
    task, load, default_name, _ = loaders.ARCHITECTURES["avitar"]
    assert task == "acoustic-match" and default_name == "rooms-avitar-16k"
    model = load(resolve(out), "cpu")
    assert not model.training and model.sample_rate == 16000 and model.image_size == 32
    y = model.match(torch.randn(1, 1, 999) * 0.05, torch.rand(1, 3, 32, 32))
    assert y.shape == (1, 1, 999)
    # resume continues from the checkpoint
    rc = train_avitar.main(["--tiny", "--steps", "6", "--data", str(tiny_rooms), "--out", str(out), "--run", str(run),
                            "--threads", "1", "--resume", "--no-final-eval"])
    assert rc == 0 and json.loads((out / "card.json").read_text())["training"]["steps"] == 6


def test_rematch_fn_modes(tiny_rooms):
    from soundsight_train import rooms
    from soundsight_train.avitar import rematch_fn

    ds = rooms.RoomsData(tiny_rooms)
    m = _trained_a_little()
    dry = ds.utterance(0)
    w = rematch_fn(m, tail_s=0.5)(dry, ds.image(0), SR)
    assert w.shape == (len(dry) + SR // 2,)
    i = rematch_fn(m, tail_s=0.5, mode="ir", ir_s=0.25)(dry, ds.image(0), SR)
    assert i.shape == (len(dry) + SR // 4 - 1,) and np.all(np.isfinite(i))


def test_rt60_estimator_tiny_path(tiny_rooms, tmp_path):
    from soundsight.registry import resolve
    from soundsight_train import rt60_estimator

    out = tmp_path / "rt60-tiny"
    assert rt60_estimator.main(["--tiny", "--data", str(tiny_rooms), "--out", str(out), "--threads", "1"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"] == "rt60-estimator" and card["metrics"]["unseen_rooms_test_speech"]["n"] >= 1
    task, load, default_name, _ = loaders.ARCHITECTURES["rt60-estimator"]
    assert task == "rt60-estimation" and default_name == "rooms-rt60-16k"
    model = load(resolve(out), "cpu")
    x = _speech(12000, batch=2)
    r = model.estimate(x)
    assert r.shape == (2,) and torch.all(r > 0)
    torch.testing.assert_close(model.estimate(0.1 * x), r, rtol=1e-3, atol=1e-4)  # level invariant


def test_rt60_net_features_and_presets():
    m = RT60Net(RT60Config.preset("tiny")).eval()
    f = m.features(torch.randn(1, 1, 8000) * 0.05)
    assert f.shape == (1, 32, 8000 // 128 + 1) and float(f.min()) >= -4.0
    assert RT60Net(RT60Config.preset("cpu")).num_parameters() < 200_000
    # a fresh estimator starts near 0.7 s
    assert 0.3 < float(m.estimate(torch.randn(1, 1, 8000))[0]) < 1.5


def test_loaders_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, soundsight_plugins.acoustic_match.loaders as l; print('torch' in sys.modules, sorted(l.ARCHITECTURES))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False ['avitar', 'room-params', 'rt60-estimator']"


def test_eval_rematch_rows_for_avitar_and_the_learned_rt60(tiny_rooms):
    from soundsight_train import eval_rematch as ev
    from soundsight_train import rooms

    ds = rooms.RoomsData(tiny_rooms)
    items = ev.make_items(ds, "seen", n=2, seed=0, min_dry_s=1.0)
    torch.manual_seed(0)
    est = RT60Net(RT60Config.preset("tiny")).eval()
    extra = {**ev.avitar_methods(_trained_a_little(use_image=False), "AViTAR without image", ("waveform",)),
             **ev.avitar_methods(_tiny().eval(), "AViTAR")}
    assert list(extra) == ["AViTAR without image", "AViTAR (waveform mode)", "AViTAR (ir mode)"]
    res = ev.evaluate(items=items, extra=extra, rt60_estimator=ev.learned_rt60(est))
    rows = res["rows"]
    assert all(np.isfinite(r["rt60_learned_err"]) for r in rows.values())
    # an untrained residual AViTAR returns its input: the same scores as the input row
    assert rows["AViTAR (waveform mode)"]["stft"] == pytest.approx(rows["input"]["stft"], rel=1e-3)
    assert rows["AViTAR (waveform mode)"]["rt60_err"] == pytest.approx(rows["input"]["rt60_err"], abs=0.02)
    assert "learned estimator" in ev.markdown(res)


def test_eval_rematch_cli_with_models_updates_the_card(tiny_rooms, tmp_path, capsys):
    from soundsight.registry import resolve, save_model
    from soundsight_train import eval_rematch as ev

    m = _trained_a_little()
    save_model(tmp_path / "av", name="av", task="acoustic-match", architecture="avitar", config=m.cfg.to_dict(),
               tensors={"model.safetensors": m.state_dict()})
    torch.manual_seed(0)
    r = RT60Net(RT60Config.preset("tiny"))
    save_model(tmp_path / "rt", name="rt", task="rt60-estimation", architecture="rt60-estimator",
               config=r.cfg.to_dict(), tensors={"model.safetensors": r.state_dict()})
    rc = ev.main(["--folder", str(tiny_rooms), "--split", "unseen", "--n", "1", "--avitar", str(tmp_path / "av"),
                  "--modes", "waveform", "--rt60-model", str(tmp_path / "rt"), "--card", str(tmp_path / "av")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| AViTAR |" in text and "learned estimator" in text
    card = resolve(tmp_path / "av").card  # still verifies: only the card changed
    got = card["metrics"]["eval_rematch"]
    assert got["unseen"]["n"] == 1 and "rt60_learned_err" in got["unseen"]["rows"]["AViTAR"]
    assert got["command"].startswith("python -m soundsight_train.eval_rematch")
    with pytest.raises(SystemExit):
        ev.main(["--folder", str(tiny_rooms), "--avitar", str(tmp_path / "rt")])  # wrong architecture
