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
