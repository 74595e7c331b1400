"""Background augmentation of f_V's training: object masks recovered from the stored background
crop, and the swap itself (train/scenes.py, train/scene_image_encoder.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture()
def scene_folder(tmp_path):
    """A 3-image split on one real (PNG) background photo, with known pasted squares."""
    from soundsight_train import scenes

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (400, 480, 3)).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "bg.png")
    spec = scenes.SceneSpec()
    S = spec.size
    bg = scenes.load_background(tmp_path / "bg.png")
    crops = np.array([[0, 0, 320, 0], [40, 20, 300, 1], [100, 50, 250, 0]], np.int16)
    images = np.stack([scenes.crop_background(bg, c, S) for c in crops])
    truth = np.zeros((3, S, S), np.uint8)
    for i, (y, x, side) in enumerate([(10, 20, 40), (60, 60, 64), (0, 0, 32)]):
        images[i, y:y + side, x:x + side] = (255, 0, 255)
        truth[i, y:y + side, x:x + side] = 1
    n = len(images)
    np.savez(tmp_path / "train.npz", images=images, background=np.zeros(n, np.int16), crop=crops,
             labels=np.zeros((n, 2), np.int16), gains=np.ones((n, 2), np.float32))
    scenes.AudioBank.from_list([np.zeros(100, np.float32)], spec.sample_rate).save(tmp_path / "bank.npz")
    meta = {"spec": spec.__dict__, "classes": ["a"], "backgrounds": [{"id": 0, "path": str(tmp_path / "bg.png")}]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    return tmp_path, truth


def test_object_masks_recover_pasted_pixels(scene_folder):
    from soundsight_train import scenes

    folder, truth = scene_folder
    split = scenes.SceneSplit(folder, "train")
    m = scenes.object_masks(split, 128)
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.97, iou
    assert (folder / "masks-train.npz").is_file()
    m32 = scenes.object_masks(split, 32)  # from the cache, downsampled
    assert m32.shape == (3, 32, 32) and abs(int(m32.sum()) - int(truth.sum()) / 16) < 20


def test_swap_background_keeps_objects_and_replaces_the_rest():
    from soundsight_train.scene_image_encoder import swap_background

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    masks = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    masks[:, :, 4:8, 4:8] = 1
    bank = torch.zeros(5, 3, 16, 16, dtype=torch.uint8)  # black backgrounds
    y = swap_background(x, masks, bank, 1.0, g, torch.device("cpu"))
    assert torch.equal(y[:, :, 4:8, 4:8], x[:, :, 4:8, 4:8])
    assert float(y.sum()) == pytest.approx(float(x[:, :, 4:8, 4:8].sum()), rel=1e-5)
    assert torch.equal(swap_background(x, masks, bank, 0.0, g, torch.device("cpu")), x)
    # with 0 < p < 1, every sample is either the original image or objects over a new background
    y = swap_background(x.repeat(8, 1, 1, 1), masks.repeat(8, 1, 1, 1), bank, 0.5, g, torch.device("cpu"))
    original = [torch.equal(y[i], x[i % 4]) for i in range(32)]
    assert 4 < sum(original) < 28
    for i in range(32):
        assert torch.equal(y[i, :, 4:8, 4:8], x[i % 4, :, 4:8, 4:8])


def test_mask_boxes_and_object_crop_zoom_onto_the_object():
    from soundsight_train.scene_image_encoder import mask_boxes, object_crop

    masks = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    masks[0, :, 8:16, 16:24] = 1  # rows 8..15, columns 16..23
    boxes = mask_boxes(masks)
    assert boxes[0].tolist() == pytest.approx([0.0, -0.5, 0.5, 0.0])
    assert boxes[1].tolist() == [-1.0, -1.0, 1.0, 1.0]  # empty mask: the whole image
    x = masks.float().expand(2, 3, 32, 32).clone()
    v = object_crop(x, boxes, torch.Generator().manual_seed(0), margin=(1.3, 1.3))
    assert float(v[0].mean()) > 0.3  # the object fills much more of the view than of the image (1/16)
    assert float(x[0].mean()) == pytest.approx(1 / 16)


# --------------------------------------------------------------------------------------------
# the object-autoencoder objective of f_V (--objective object-ae)


def test_object_ae_loss_hand_computed():
    from soundsight_train.scene_image_encoder import object_ae_loss

    # 1x2 image: pixel 0 is an object pixel (value 1.0), pixel 1 background (value 0.9, target grey)
    x = torch.tensor([[1.0, 0.9]]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    mask = torch.tensor([[1.0, 0.0]]).view(1, 1, 1, 2)
    pred = torch.zeros(1, 4, 1, 2)  # sigmoid 0.5 everywhere, mask logit 0
    loss, mse, bce = object_ae_loss(pred, x, mask, object_weight=4.0)
    # weights 5 (object) and 1: ((1 - 0.5)^2 * 5 + (0.5 - 0.5)^2 * 1) / (5 + 1)
    assert float(mse) == pytest.approx(0.25 * 5 / 6)
    assert float(bce) == pytest.approx(np.log(2))
    assert float(loss) == pytest.approx(0.25 * 5 / 6 + 0.1 * np.log(2))
    # a confident, right prediction costs (almost) nothing; the background's own colour is not wanted
    good = torch.cat([torch.full((1, 3, 1, 2), 0.0), torch.tensor([[20.0, -20.0]]).view(1, 1, 1, 2)], 1)
    good[:, :3, :, 0] = 20.0
    assert float(object_ae_loss(good, x, mask)[0]) < 1e-6
    assert float(object_ae_loss(good, x, mask)[1]) < float(
        object_ae_loss(torch.cat([good[:, :3] * 0 + torch.logit(torch.tensor(0.9)), good[:, 3:]], 1), x, mask)[1])


def test_object_ae_learns_to_draw_the_object_without_its_background():
    from soundsight_plugins.scene_gen.encoders import ImageEncoderConfig
    from soundsight_train.scene_image_encoder import ObjectAE, object_ae_loss

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n, s = 8, 32
    x = torch.rand(n, 3, s, s, generator=g)  # noise backgrounds
    mask = torch.zeros(n, 1, s, s)
    for i in range(n):  # one flat square per image: its own colour, place and size
        y0, x0, side = 2 + 3 * i, 20 - 2 * i, 6 + i
        mask[i, :, y0:y0 + side, x0:x0 + side] = 1
        x[i] = x[i] * (1 - mask[i]) + torch.rand(3, 1, 1, generator=g) * mask[i]
    model = ObjectAE(ImageEncoderConfig.for_size(s, "tiny"))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        loss = object_ae_loss(model(x), x, mask)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    model.eval()
    with torch.no_grad():
        pred = model(x)
    drawn = pred[:, 3:] > 0
    iou = float((drawn & mask.bool()).sum() / (drawn | mask.bool()).sum())
    assert float(object_ae_loss(pred, x, mask)[0]) < 0.5 * first
    assert iou > 0.5, iou


def test_image_encoder_entrypoint_with_the_object_ae_objective(scene_folder, tmp_path):
    from soundsight.registry import resolve
    from soundsight_plugins.scene_gen import loaders
    from soundsight_train import scene_image_encoder

    folder, _ = scene_folder
    for name in ("train.npz", "masks-train.npz"):  # the three scenes serve as val too
        if (folder / name).is_file():
            (folder / name.replace("train", "val")).write_bytes((folder / name).read_bytes())
    meta = json.loads((folder / "meta.json").read_text())
    meta["backgrounds"][0].update(source="test", licence="CC0-1.0")  # what the model card records
    meta.update(stamps=[], recordings=[], licences={}, seed=0, counts={"train": 3, "val": 3})
    (folder / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "fv-ae"
    argv = ["--tiny", "--objective", "object-ae", "--data", str(folder), "--threads", "1", "--batch", "3",
            "--bg-bank", "4", "--out", str(out), "--run-dir", str(tmp_path / "run")]
    assert scene_image_encoder.main(argv) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["objective"] == "object-ae" and "object autoencoder" in card["training"]["method"]
    encoder = loaders.load_image_encoder(resolve(out))
    assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, 32)


def test_object_ae_objective_needs_background_paths(tmp_path):
    from test_scene_models import write_toy_scenes  # toy data: no background photo paths
    from soundsight_train import scene_image_encoder

    data = write_toy_scenes(tmp_path / "toy")
    with pytest.raises(SystemExit, match="object masks"):
        scene_image_encoder.main(["--tiny", "--objective", "object-ae", "--data", str(data), "--threads", "1",
                                  "--out", str(tmp_path / "o"), "--run-dir", str(tmp_path / "r")])
