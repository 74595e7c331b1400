"""The scene-gen trainers' shared run skeleton (train/scene_loop.py, the run state of
train/scene_common.py) and the resume of each trainer not covered elsewhere: the GAN, the audio
encoder and the LDM continue from their saved step and write a loadable registry folder (the
image encoder's and the evaluator's resume are tested in test_scene_models / test_scene_eval).

Resumes run on copies of the run folders of the session's tiny models (scene_models fixture),
so the fixture's own folders stay as they were written.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from soundsight_plugins.scene_gen import loaders
from test_scene_models import _threads, needs_diffusers  # noqa: F401 (_threads: autouse, one torch thread)


def _curve(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]


def _state(run: Path) -> dict:
    return json.loads((run / "ckpt" / "state.json").read_text())


def _card(folder: Path) -> dict:
    return json.loads((Path(folder) / "card.json").read_text())


def _copy_run(scene_models, key: str, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(scene_models["root"] / "runs" / key, run)
    return run


def _common(scene_models, run: Path, out: Path) -> list[str]:
    return ["--tiny", "--data", str(scene_models["toy"]), "--threads", "1", "--out", str(out), "--run-dir", str(run)]


def _new_training_steps(before: list[dict], after: list[dict]) -> list[int]:
    """Steps of the training records a resumed run appended to the curve."""
    return [r["step"] for r in after[len(before):] if "loss" in r or "loss_d" in r]


# --------------------------------------------------------------------------------------------
# TrainLoop on a toy problem


def _loop_args(**kw):
    base = dict(log_every=2, ckpt_minutes=5.0, max_minutes=0.0, eval_every=2)
    base.update(kw)
    return argparse.Namespace(**base)


def _toy_loop(tmp_path, args, lines, **kw):
    from soundsight_train import scene_common as sc
    from soundsight_train.scene_loop import TrainLoop, epoch_line, lr_epoch_fields

    Path(tmp_path).mkdir(parents=True, exist_ok=True)  # the run folder (made by sc.start in a trainer)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = {"step": 0, "elapsed": 0.0, "command": "test", "world": 1, "device": "cpu", "config": {}, "args": {}}
    loop = TrainLoop(args, tmp_path, state, {"model": model}, {"opt": opt}, True, lines.append,
                     lr_epoch_fields(opt, 4, 8), epoch_line, **kw)
    x, y = torch.randn(16, 3), torch.randn(16, 1)

    def train_step(step):
        loss = ((model(x) - y) ** 2).mean()
        sc.backward_step(loss, opt, None)
        return {"loss": loss.detach()}

    return loop, state, train_step


def test_train_loop_records_evaluates_and_checkpoints(tmp_path):
    lines = []
    loop, state, train_step = _toy_loop(tmp_path, _loop_args(), lines)

    def evaluate(step):
        return {"x": step}, f"eval at {step}"

    assert loop.run(0, 5, train_step, evaluate) == 5
    loop.close()
    curve = _curve(tmp_path)
    # a record every --log-every steps and at the last; evaluations at 2 and 4, not at the last step
    assert [r["step"] for r in curve if "loss" in r] == [2, 4, 5]
    assert [(r["step"], r["val"]) for r in curve if "val" in r] == [(2, {"x": 2}), (4, {"x": 4})]
    rec = curve[0]
    assert list(rec) == ["step", "loss", "sec_per_step", "lr", "elapsed", "epoch"]
    assert rec["lr"] == 0.1 and rec["epoch"] == 1.0  # 2 steps x 4 samples / 8
    assert lines[0].startswith("step 2/5  loss ") and " ep 1.00 " in lines[0]
    assert lines[1].startswith("eval at 2 (") and lines[1].endswith("s)")
    # the last step writes a checkpoint holding the step counter
    assert _state(tmp_path)["step"] == 5 and state["step"] == 5
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()


def test_train_loop_stops_on_a_non_finite_loss_and_on_the_budget(tmp_path):
    lines = []
    loop, state, _ = _toy_loop(tmp_path / "a", _loop_args(), lines)
    assert loop.run(0, 5, lambda step: {"loss": torch.tensor(float("nan"))}, lambda step: ({}, "")) is None
    assert lines == ["error: non-finite loss at step 1"]

    lines = []
    loop, state, train_step = _toy_loop(tmp_path / "b", _loop_args(max_minutes=1e-9, log_every=100), lines)
    assert loop.run(0, 50, train_step, lambda step: ({}, "")) == 1
    assert lines == ["--max-minutes 1e-09 reached at step 1"]
    assert _state(tmp_path / "b")["step"] == 1  # a spent budget checkpoints

    # stop_on_budget=False: the budget neither stops nor checkpoints (the evaluator ends its loop itself)
    loop, state, train_step = _toy_loop(tmp_path / "c", _loop_args(max_minutes=1e-9, log_every=100), [],
                                        stop_on_budget=False)
    assert loop.step_done(1, None, step=1) is False
    assert not (tmp_path / "c" / "ckpt").exists()


def test_off_the_clock_time_is_not_training_time(tmp_path):
    import time

    loop, state, train_step = _toy_loop(tmp_path, _loop_args(), [])
    with loop.off_the_clock():
        time.sleep(0.2)
    assert loop.elapsed() < 0.1


def test_restore_brings_back_counters_not_the_run_description(tmp_path):
    from soundsight_train import scene_common as sc

    model = torch.nn.Linear(2, 2)
    sc.save_checkpoint(tmp_path, {"model": model}, {}, {"step": 7, "elapsed": 12.5, "cpu_seconds": 3.0,
                                                        "command": "old", "world": 4, "device": "cuda"})
    args = argparse.Namespace(seed=1)
    cfg = argparse.Namespace(to_dict=lambda: {"a": 1})
    state = sc.initial_state({"step": 0, "elapsed": 0.0, "cpu_seconds": 0.0}, "new", 1, "cpu", cfg, args)
    assert list(state) == ["step", "elapsed", "cpu_seconds", "command", "world", "device", "config", "args"]
    fresh = torch.nn.Linear(2, 2)
    prev = sc.restore(tmp_path / "ckpt", {"model": fresh}, {}, argparse.Namespace(torch_device="cpu"), state)
    assert prev["command"] == "old"
    assert state["step"] == 7 and state["elapsed"] == 12.5 and state["cpu_seconds"] == 3.0
    assert state["command"] == "new" and state["world"] == 1 and state["device"] == "cpu"
    assert torch.equal(fresh.weight, model.weight)
    assert sc.restore(None, {"model": fresh}, {}, None, state) is None
    # the batch RNG: distinct per process and per resume point, reproducible
    draws = [torch.rand(3, generator=sc.batch_generator(0, r, s)) for r, s in ((0, 0), (1, 0), (0, 7), (0, 0))]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert torch.equal(draws[0], draws[3])


# --------------------------------------------------------------------------------------------
# resume of the trainers


def test_gan_resume_continues_from_the_saved_step(scene_models, tmp_path):
    from soundsight import registry
    from soundsight_train import scene_gan

    run, out = _copy_run(scene_models, "gan", tmp_path), tmp_path / "gan-more"
    saved = _state(run)["step"]
    before = _curve(run)
    with open(run / "curve.jsonl", "a") as f:  # a step trained after the last checkpoint, then killed
        f.write(json.dumps({"step": saved + 1, "loss_d": 99.0, "loss_g": 99.0}) + "\n")
    common = _common(scene_models, run, out) + ["--image-encoder", str(scene_models["fv"]), "--size", "64"]
    assert scene_gan.main([*common, "--steps", str(saved + 1), "--resume"]) == 0
    assert _curve(run)[:len(before)] == before  # the lost step's record is gone, the rest kept
    assert _new_training_steps(before, _curve(run)) == [saved + 1]
    assert all(r.get("loss_d") != 99.0 for r in _curve(run))
    assert _state(run)["step"] == saved + 1 and _card(out)["training"]["steps"] == saved + 1
    G = loaders.load_gan(registry.resolve(out), "cpu")
    old = registry.resolve(scene_models["gan"]).tensors()
    new = registry.resolve(out).tensors()
    assert all(torch.equal(new[k], v) for k, v in G.state_dict().items())
    assert any(not torch.equal(old[k], new[k]) for k in old)  # one more step of training
    img = G.generate(torch.nn.functional.normalize(torch.randn(2, G.cfg.feature_dim), dim=-1),
                     torch.Generator().manual_seed(0))
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all()
    with pytest.raises(SystemExit):  # another model config is refused
        scene_gan.main([*common, "--steps", str(saved + 2), "--resume", "--ch", "8"])


def test_gan_learning_rate_decays_linearly_from_decay_from(scene_models, tmp_path):
    from soundsight_train import scene_gan
    from soundsight_train.schedules import linear_decay

    assert [linear_decay(s, 100, 0) for s in (0, 99)] == [1.0, 1.0]
    assert [linear_decay(s, 100, 60) for s in (0, 59, 60, 80, 99, 100)] == [1.0, 1.0, 1.0, 0.5, 0.025, 0.0]
    run, out = _copy_run(scene_models, "gan", tmp_path), tmp_path / "gan-decay"
    saved = _state(run)["step"]
    common = _common(scene_models, run, out) + ["--image-encoder", str(scene_models["fv"]), "--size", "64"]
    # resumed with a decay over its next 4 steps: the last of them (step index saved + 3) runs at a
    # quarter of the base rates, which the checkpoint's optimisers keep; the card names the schedule
    assert scene_gan.main([*common, "--steps", str(saved + 4), "--decay-from", str(saved),
                           "--lr-g", "1e-4", "--lr-d", "4e-4", "--resume"]) == 0
    opt = torch.load(run / "ckpt" / "optim.pt", weights_only=True)
    rates = [g["lr"] for g in opt["opt_g"]["param_groups"]] + [g["lr"] for g in opt["opt_d"]["param_groups"]]
    assert rates == pytest.approx([1e-4 * 0.25, 4e-4 * 0.25])
    assert _card(out)["training"]["optimizer"]["schedule"] == f"constant to step {saved}, then linear to 0 at step {saved + 4}"
    with pytest.raises(SystemExit):
        scene_gan.main([*common, "--steps", str(saved + 4), "--decay-from", str(saved + 4), "--resume"])


def test_standing_stats_fit_the_batch_norm_statistics_to_the_weights():
    """The EMA copy of G inherits the live G's batch-norm running statistics, which do not fit
    its averaged weights; standing_stats recomputes them, so G in eval mode draws what the same
    weights draw with batch statistics."""
    from soundsight.device import resolve_device
    from soundsight_plugins.scene_gen.gan import GANConfig, Generator
    from soundsight_train.scene_gan import standing_stats

    torch.manual_seed(0)
    cfg = GANConfig.for_size(32, "tiny")
    g = Generator(cfg)
    bns = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:  # statistics of other weights
        m.running_mean.fill_(2.0)
        m.running_var.fill_(9.0)
    feats = torch.nn.functional.normalize(torch.randn(64, cfg.feature_dim), dim=-1)
    gen = torch.Generator().manual_seed(1)
    z, f = g.sample_z(256, gen), feats[torch.randint(64, (256,), generator=gen)]
    with torch.no_grad():
        stale = g.eval()(z, f)
        standing_stats(g, feats, resolve_device("cpu"), batches=20, batch=32)
        fresh = g(z, f)
        assert not g.training and all(m.momentum == 0.1 for m in bns)
        batch_stats = g.train()(z, f)
    err_stale, err_fresh = (stale - batch_stats).abs().mean(), (fresh - batch_stats).abs().mean()
    assert err_fresh < 0.2 * err_stale, (err_fresh, err_stale)


def test_gan_recon_term_is_trained_and_recorded(scene_models, tmp_path):
    from soundsight_train import scene_gan

    run, out = tmp_path / "run", tmp_path / "gan-recon"
    common = _common(scene_models, run, out) + ["--image-encoder", str(scene_models["fv"]), "--size", "64"]
    assert scene_gan.main([*common, "--steps", "2", "--recon", "5", "--recon-pool", "8"]) == 0
    records = [r for r in _curve(run) if "loss_g" in r]
    assert records and all(r["recon"] > 0 for r in records)
    for r in records:  # G's loss is the hinge term -D(G) plus the weighted L1 term
        assert r["loss_g"] == pytest.approx(-r["d_fake"] + 5 * r["recon"], abs=1e-3)
    assert _card(out)["training"]["recon"] == {"weight": 5.0, "pool": 8, "loss": "L1 of average-pooled images"}
    plain = _common(scene_models, tmp_path / "run2", tmp_path / "plain")
    assert scene_gan.main([*plain, "--image-encoder", str(scene_models["fv"]), "--size", "64", "--steps", "1",
                           "--cond-norm", "none"]) == 0
    assert _card(tmp_path / "plain")["training"]["recon"] is None
    assert _card(tmp_path / "plain")["config"]["norm_cond_mean"] is None
    assert all("recon" not in r for r in _curve(tmp_path / "run2"))


def test_gan_feature_term_is_trained_and_recorded(scene_models, tmp_path):
    from soundsight_train import scene_gan

    run, out = tmp_path / "run", tmp_path / "gan-feat"
    common = _common(scene_models, run, out) + ["--image-encoder", str(scene_models["fv"]), "--size", "64"]
    assert scene_gan.main([*common, "--steps", "2", "--feat", "3"]) == 0
    records = [r for r in _curve(run) if "loss_g" in r]
    assert records and all(0 < r["feat"] < 2 for r in records)  # 1 - cosine of unit vectors
    for r in records:  # G's loss is the hinge term -D(G) plus the weighted feature term
        assert r["loss_g"] == pytest.approx(-r["d_fake"] + 3 * r["feat"], abs=1e-3)
    assert _card(out)["training"]["feature_consistency"]["weight"] == 3.0
    cfg = _card(out)["config"]  # the conditioning statistics measured on the training features
    assert len(cfg["norm_cond_mean"]) == cfg["feature_dim"] and cfg["norm_cond_scale"] > 1


def test_audio_encoder_resume_keeps_the_front_end_statistics(scene_models, tmp_path):
    from soundsight import registry
    from soundsight_train import scene_audio_encoder

    run, out = _copy_run(scene_models, "fa", tmp_path), tmp_path / "fa-more"
    saved = _state(run)["step"]
    before = _curve(run)
    common = _common(scene_models, run, out) + ["--image-encoder", str(scene_models["fv"])]
    # fewer statistics clips than the first run: a resume must keep the saved mean / std, not re-measure
    assert scene_audio_encoder.main([*common, "--steps", str(saved + 1), "--resume", "--stats-clips", "2"]) == 0
    assert _new_training_steps(before, _curve(run)) == [saved + 1]
    card, first = _card(out), _card(scene_models["fa"])
    assert card["training"]["steps"] == saved + 1
    assert card["config"]["norm_mean"] == first["config"]["norm_mean"]
    assert card["config"]["norm_std"] == first["config"]["norm_std"]
    fa = loaders.load_audio_encoder(registry.resolve(out), "cpu")
    e = fa.embed(torch.randn(2, 8000) * 0.05)
    assert e.shape == (2, card["config"]["feature_dim"]) and torch.isfinite(e).all()


@needs_diffusers
def test_ldm_resume_in_the_unet_phase_keeps_latent_scale(scene_models, tmp_path):
    from soundsight import registry
    from soundsight_train import scene_ldm

    run, out = _copy_run(scene_models, "ldm", tmp_path), tmp_path / "ldm-more"
    saved = _state(run)
    assert saved["phase"] == "unet"
    before = _curve(run)
    common = _common(scene_models, run, out) + ["--image-encoder", str(scene_models["fv"]), "--size", "64"]
    assert scene_ldm.main([*common, "--unet-steps", str(saved["unet_step"] + 1), "--resume"]) == 0
    assert _new_training_steps(before, _curve(run)) == [saved["unet_step"] + 1]
    card = _card(out)
    assert card["training"]["vae_steps"] == saved["vae_step"]
    assert card["training"]["unet_steps"] == saved["unet_step"] + 1
    # the latents' scale of the first run is kept (not measured again on the resumed VAE)
    assert card["config"]["latent_scale"] == saved["config"]["latent_scale"] == _state(run)["config"]["latent_scale"]
    ldm = loaders.load_ldm(registry.resolve(out), "cpu")
    x = ldm.sample(torch.randn(1, card["config"]["feature_dim"]), steps=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (1, 3, 64, 64) and torch.isfinite(x).all()


@needs_diffusers
def test_ldm_stopped_in_the_autoencoder_phase_resumes_to_the_end(scene_models, tmp_path):
    from soundsight import registry
    from soundsight_train import scene_ldm

    run, out = tmp_path / "run", tmp_path / "ldm"
    common = _common(scene_models, run, out) + ["--image-encoder", str(scene_models["fv"])]
    # a spent time budget during phase 1: checkpoint, no registry folder
    assert scene_ldm.main([*common, "--max-minutes", "1e-9"]) == 0
    st = _state(run)
    assert (st["phase"], st["vae_step"], st["unet_step"]) == ("vae", 1, 0) and not out.exists()
    assert scene_ldm.main([*common, "--resume"]) == 0
    st, card = _state(run), _card(out)
    assert (st["phase"], st["vae_step"], st["unet_step"]) == ("unet", 2, 3)
    assert [r["step"] for r in _curve(run) if r.get("phase") == "vae"] == [1, 2]
    assert card["training"]["vae_steps"] == 2 and card["training"]["unet_steps"] == 3
    # the checkpoint's config carries the latent scale measured after phase 1, as the card does
    assert st["config"]["latent_scale"] == card["config"]["latent_scale"] > 0
    # the UNet had not started: the resumed run measured the conditioning statistics
    assert len(card["config"]["norm_cond_mean"]) == card["config"]["feature_dim"]
    assert loaders.load_ldm(registry.resolve(out), "cpu").cfg.latent_scale == card["config"]["latent_scale"]


@needs_diffusers
def test_ldm_unet_widths_from_the_command_line_reach_the_card_and_the_loader(scene_models, tmp_path):
    from soundsight import registry
    from soundsight_train import scene_ldm

    out = tmp_path / "ldm"
    common = _common(scene_models, tmp_path / "run", out) + ["--image-encoder", str(scene_models["fv"])]
    assert scene_ldm.main([*common, "--unet-channels", "8,24"]) == 0
    assert _card(out)["config"]["unet_channels"] == [8, 24]
    ldm = loaders.load_ldm(registry.resolve(out), "cpu")
    assert ldm.cfg.unet_channels == (8, 24) and ldm.unet.config.block_out_channels == (8, 24)


@needs_diffusers
def test_ldm_latents_are_centred_per_channel_and_init_from_keeps_the_autoencoder(scene_models, tmp_path):
    from soundsight import registry
    from soundsight_train import scene_ldm, scenes

    out = tmp_path / "ldm"
    common = ["--image-encoder", str(scene_models["fv"])]
    assert scene_ldm.main(_common(scene_models, tmp_path / "run", out) + common) == 0
    cfg = _card(out)["config"]
    assert len(cfg["latent_shift"]) == cfg["latent_channels"]
    ldm = loaders.load_ldm(registry.resolve(out), "cpu")
    x = torch.from_numpy(scenes.SceneSplit(scene_models["toy"], "train").images_at(cfg["image_size"]))
    x = x.permute(0, 3, 1, 2).float() / 255 * 2 - 1
    with torch.no_grad():
        z = torch.cat([ldm.encode(x), ldm.encode(x.flip(-1))])
    # what the UNet learns on: per-channel mean 0 and unit spread (the sampler's starting noise)
    assert z.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert z.std().item() == pytest.approx(1.0, abs=1e-3)
    with torch.no_grad():  # the shift is undone by decode: the autoencoder's own reconstruction
        raw = ldm.vae.decode(ldm.vae.encode(x[:2]).latent_dist.mode()).sample
        assert torch.allclose(ldm.decode(ldm.encode(x[:2])), raw, atol=1e-4)

    # --init-from: phase 2 from those weights, the autoencoder untouched
    out2 = tmp_path / "ldm2"
    assert scene_ldm.main(_common(scene_models, tmp_path / "run2", out2) + common
                          + ["--init-from", str(out), "--vae-steps", "0"]) == 0
    card2 = _card(out2)
    assert card2["training"]["vae_steps"] == 0 and card2["training"]["unet_steps"] == 3
    assert card2["training"]["init_from"]["path"] == str(out)
    a, b = registry.resolve(out).tensors("model.safetensors"), registry.resolve(out2).tensors("model.safetensors")
    vae_keys = [k for k in a if k.startswith("vae.")]
    assert vae_keys and all(torch.equal(a[k], b[k]) for k in vae_keys)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("unet."))
    assert card2["config"]["latent_shift"] == pytest.approx(cfg["latent_shift"], abs=1e-5)
    with pytest.raises(SystemExit, match="not the architecture"):
        scene_ldm.main(_common(scene_models, tmp_path / "run3", tmp_path / "ldm3") + common
                       + ["--init-from", str(out), "--vae-steps", "0", "--unet-channels", "8,24"])
