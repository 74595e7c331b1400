"""`soundsight forecast` end to end with a tiny random-weight model (never the shipped one)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_video, make_wav
from support import assert_user_error, run_cli

CLIP = Path(__file__).resolve().parents[1] / "plugins" / "forecast" / "assets" / "m3so-test.mp4"


def save_tiny(folder: Path, **cfg_kw) -> Path:
    import torch

    from soundsight.registry import save_model
    from soundsight_plugins.forecast.model import Sound2Sight, Sound2SightConfig

    torch.manual_seed(0)
    cfg = Sound2SightConfig.for_size(48, nf=4, g_dim=16, rnn_size=16, embed_dim=16, tf_ff=16, tf_heads=2,
                                     d_nf=4, d_hidden=4, **cfg_kw)
    model = Sound2Sight(cfg).eval()
    return save_model(folder, name=folder.name, task="frame-forecast", architecture="sound2sight",
                      config=cfg.to_dict(), tensors={"model.safetensors": model.state_dict()})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("models") / "tiny-forecast")


def strip_pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_forecast_writes_video_strip_and_metrics(tmp_path, tiny_model):
    out, strip = tmp_path / "f.mp4", tmp_path / "f.png"
    r = run_cli("forecast", CLIP, "--model", tiny_model, "--samples", "4", "--out", out, "--strip", strip, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert (report["seen"], report["predict"], report["real_future_frames"]) == (5, 25, 25)
    m = report["metrics"]
    assert m["frames"] == list(range(6, 31)) and len(m["ssim_best"]) == 25
    assert all(-1 <= v <= 1 for v in m["ssim_best"]) and m["best_sample"] in range(4)
    info = json.loads(run_cli("info", out, "--json").out)[0]
    assert (info["frames"], info["width"], info["fps"], info["has_audio"]) == (30, 48, 10, True)
    px = strip_pixels(strip)
    assert px.shape == (5 * 49 + 1, 30 * 49 + 1, 3)  # row of real frames + one row per sample
    # the numbers are about the real future: frames 6..30 of the clip, read here independently
    # (10 fps, 48 px, luma as the 1-channel model sees them); the strip's top row shows them, each
    # sample row that sample's future. (The random model's SSIMs are all ~0.002 and its K futures
    # nearly equal, so the choice of the best sample is checked on known futures below.)
    import torch

    from soundsight.video import read_frames
    from soundsight_plugins.forecast.metrics import psnr

    real, _ = read_frames(CLIP, fps=10, size=(48, 48), max_frames=30)
    luma = torch.from_numpy(real.astype(np.float32) / 255.0 @ np.array([0.299, 0.587, 0.114], np.float32))

    def tiles(row, cols):
        return torch.stack([torch.from_numpy(px[1 + row * 49:49 + row * 49, 1 + c * 49:49 + c * 49, 0].astype(np.float32))
                            for c in cols])[:, None] / 255.0

    assert (tiles(0, range(30))[:, 0] - luma).abs().max() <= 1.5 / 255
    best_row = tiles(1 + m["best_sample"], range(5, 30))
    np.testing.assert_allclose(m["psnr_best"], psnr(best_row, luma[5:30, None]).numpy(), atol=0.05)  # 8-bit tiles
    assert m["ssim_best_mean"] == pytest.approx(float(np.mean(m["ssim_best"])), abs=1e-6)
    sidecar = json.loads(Path(str(out) + ".soundsight.json").read_text())
    assert sidecar["seed"] == 0 and "tiny-forecast" in sidecar["models"]


def test_metrics_score_the_sample_closest_to_the_real_future():
    """forecast() on futures of known quality: the real future plus noise of a set level per
    sample; the cleanest one is the best sample, its SSIM/PSNR are reported, --pick follows."""
    import torch

    from soundsight.device import resolve_device
    from soundsight_plugins.forecast.metrics import psnr, ssim
    from soundsight_plugins.forecast.pipeline import forecast

    rng = np.random.default_rng(0)
    frames = rng.random((9, 16, 16, 1)).astype(np.float32)  # 9 frames: 3 seen, 6 real future
    levels = torch.tensor([0.3, 0.15, 0.02, 0.4])
    noise = torch.rand(4, 1, 1, 16, 16, generator=torch.Generator().manual_seed(1)) - 0.5

    class KnownFutures:
        def sample(self, seen, audio, n_future, k, generator=None):
            assert seen.shape == (1, 3, 1, 16, 16) and n_future == 8  # 2 past the clip's end
            future = torch.from_numpy(frames[3:]).permute(0, 3, 1, 2)
            future = torch.cat([future, future[-1:].expand(2, -1, -1, -1)])
            return (future[None, None] + (levels[:k, None, None, None, None] * noise[:k])[None]).clamp(0, 1)

    class Cfg:
        fps, sample_rate = 10, 4400

    chunks = np.zeros((11, 440), np.float32)
    res = {pick: forecast(KnownFutures(), Cfg, frames, chunks, seen=3, predict=8, samples=4, seed=0, pick=pick,
                          device=resolve_device("cpu")) for pick in ("best", "first", "all")}
    m = res["best"].metrics
    assert m["best_sample"] == 2 and m["frames"] == [4, 5, 6, 7, 8, 9]  # scored where a real frame exists
    truth = torch.from_numpy(frames[3:]).permute(0, 3, 1, 2)
    clean = torch.from_numpy(res["best"].samples[2, :6]).permute(0, 3, 1, 2)
    np.testing.assert_allclose(m["ssim_best"], ssim(clean, truth).numpy(), atol=1e-6)
    np.testing.assert_allclose(m["psnr_best"], psnr(clean, truth).numpy(), atol=1e-4)
    first = torch.from_numpy(res["best"].samples[0, :6]).permute(0, 3, 1, 2)
    np.testing.assert_allclose(m["ssim_first"], ssim(first, truth).numpy(), atol=1e-6)
    assert m["ssim_best_mean"] > float(ssim(first, truth).mean()) + 0.02
    assert (res["best"].picked, res["first"].picked, res["all"].picked) == ([2], [0], [0, 1, 2, 3])
    np.testing.assert_array_equal(res["best"].truth, frames[3:])


def test_same_seed_same_futures(tmp_path, tiny_model):
    strips = []
    for i, seed in enumerate((3, 3, 4)):
        strip = tmp_path / f"s{i}.png"
        r = run_cli("forecast", CLIP, "--model", tiny_model, "--samples", "3", "--seed", seed,
                    "--out", tmp_path / f"o{i}.mp4", "--strip", strip)
        assert r.code == 0, r.err
        strips.append(strip_pixels(strip))
    assert np.array_equal(strips[0], strips[1])
    assert not np.array_equal(strips[0], strips[2])


def test_pick_all_tiles_and_upscale(tmp_path, tiny_model):
    r = run_cli("forecast", CLIP, "--model", tiny_model, "--samples", "4", "--pick", "all", "--predict", "5",
                "--out", tmp_path / "all.mp4", "--json")
    assert r.code == 0, r.err
    info = json.loads(run_cli("info", tmp_path / "all.mp4", "--json").out)[0]
    assert (info["width"], info["height"], info["frames"]) == (96, 96, 10)


def test_external_audio_for_silent_video(tmp_path, tiny_model):
    clip = make_video(tmp_path / "mute.mp4", frames=12, fps=25, size=(64, 40), audio=False)
    assert_user_error(run_cli("forecast", clip, "--model", tiny_model, "--out", tmp_path / "x.mp4"), "no audio track")
    assert not (tmp_path / "x.mp4").exists()
    wav = make_wav(tmp_path / "tone.wav", sr=22050, seconds=2.0)
    r = run_cli("forecast", clip, "--model", tiny_model, "--audio", f"{wav}*0.5", "--seen", "3", "--predict", "4",
                "--out", tmp_path / "x.mp4", "--upscale", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["real_future_frames"] == 2  # 12 frames at 25 fps → 5 at 10 fps, 3 of them seen
    info = json.loads(run_cli("info", tmp_path / "x.mp4", "--json").out)[0]
    assert (info["width"], info["height"], info["frames"]) == (64, 40, 7)


def test_no_audio_model_forecasts_a_silent_clip(tmp_path):
    model = save_tiny(tmp_path / "tiny-noaudio", use_audio=False)
    clip = make_video(tmp_path / "mute.mp4", frames=12, fps=25, size=(64, 40), audio=False)
    r = run_cli("forecast", clip, "--model", model, "--seen", "3", "--predict", "4", "--samples", "2",
                "--out", tmp_path / "x.mp4", "--json")
    assert r.code == 0, r.err
    info = json.loads(run_cli("info", tmp_path / "x.mp4", "--json").out)[0]
    assert info["frames"] == 7


@pytest.mark.parametrize("args,message", [
    (["--seen", "30", "--predict", "5"], "needs at least 31"),
    (["--seen", "1"], "outside what"),
    (["--samples", "0"], "at least 1"),
    (["--pick", "worst"], "--pick"),
])
def test_errors_write_nothing(tmp_path, tiny_model, args, message):
    out = tmp_path / "o.mp4"
    assert_user_error(run_cli("forecast", CLIP, "--model", tiny_model, "--out", out, "--strip", tmp_path / "s.png", *args), message)
    assert list(tmp_path.iterdir()) == []


def test_unreadable_clip_and_unknown_model(tmp_path, tiny_model):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    assert_user_error(run_cli("forecast", bad, "--model", tiny_model, "--out", tmp_path / "o.mp4"), "bad.mp4")
    assert_user_error(run_cli("forecast", CLIP, "--model", "no-such-model", "--out", tmp_path / "o.mp4"), "unknown model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_recipe_step(tmp_path, tiny_model):
    (tmp_path / "out").mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
version: 1
defaults: {{seed: 1, samples: 2, model: '{tiny_model}'}}
steps:
  - step: forecast
    for_each: ['{CLIP}']
    with: {{clip: '{{item}}', out: 'out/{{stem}}.mp4', strip: 'out/{{stem}}.png', predict: 6}}
""")
    r = run_cli("run", recipe, "--json")
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["done"]) == 1
    # the recipe's defaults and parameters reach the command: the same strip as the command line
    # with --seed 1 --samples 2 --predict 6 (5 seen + 6 predicted columns, real row + 2 sample rows)
    cli_strip = tmp_path / "cli.png"
    c = run_cli("forecast", CLIP, "--model", tiny_model, "--seed", "1", "--samples", "2", "--predict", "6",
                "--out", tmp_path / "cli.mp4", "--strip", cli_strip)
    assert c.code == 0, c.err
    px = strip_pixels(tmp_path / "out" / "m3so-test.png")
    assert px.shape == (3 * 49 + 1, 11 * 49 + 1, 3)
    assert np.array_equal(px, strip_pixels(cli_strip))
    info = json.loads(run_cli("info", tmp_path / "out" / "m3so-test.mp4", "--json").out)[0]
    assert info["frames"] == 11
    assert len(json.loads(run_cli("run", recipe, "--json").out)["skipped"]) == 1
