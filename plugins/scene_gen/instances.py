"""Instance anchoring: the sound's feature pulled toward the nearest training instance's.

IC-GAN conditions its generator on the feature of a real instance. Sound2Scene feeds the audio
feature f_A straight in, and G, trained on image features only, reads an audio feature less
surely than an image's: on the val split the shipped GAN kept the level in 0.560 of the sounds
(monotonic size over 0.25x / 1x / 4x) and FID 8.05. Halfway between f_A and the f_V of the
training image nearest to it (``anchor``), the condition stays the sound's (its class and
level decide the neighbour and half the vector) but lies where G was trained: 0.698 and 7.77,
with the same R@1 (README, imagine section; measured by ``eval_scene --anchor``).

The bank is its own registry model (``scene-instances-64``), built by
``python -m soundsight_train.scene_instances`` from the scenes dataset's training images with
the image encoder G was conditioned on; its card names that encoder, and the bank refuses a
generator conditioned on another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

ARCHITECTURE = "scene-instance-bank"
TASK = "scene-instances"
FILE = "instances.safetensors"


@dataclass
class BankConfig:
    feature_dim: int
    n: int
    dataset: str = ""
    split: str = "train"

    def to_dict(self) -> dict:
        return asdict(self)


def anchor(features: torch.Tensor, bank: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """unit((1 - w) f̂ + w b), b the bank's nearest unit-norm instance to f̂ (largest cosine);
    returns the anchored features (B, D) and the instances' indices (B,)."""
    f = F.normalize(features.float(), dim=-1)
    bank = bank.to(f.device, torch.float32)
    idx = (f @ bank.t()).argmax(1)
    if weight == 0:
        return f, idx
    return F.normalize((1 - weight) * f + weight * bank[idx], dim=-1), idx


class InstanceBank:
    """The unit-norm f_V features (N, D) of a dataset's training images."""

    def __init__(self, features: torch.Tensor, cfg: BankConfig):
        self.features = F.normalize(features.float(), dim=-1)
        self.cfg = cfg

    def anchor(self, features: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        return anchor(features, self.features, weight)

    @classmethod
    def from_registry(cls, folder, device=None) -> "InstanceBank":
        t = folder.tensors(FILE)
        cfg = BankConfig(**folder.config)
        bank = cls(t["features"], cfg)
        if device is not None:
            bank.features = bank.features.to(device)
        if tuple(bank.features.shape) != (cfg.n, cfg.feature_dim):
            raise ValueError(f"{folder.name}: {FILE} holds {tuple(bank.features.shape)} features, its card says "
                             f"({cfg.n}, {cfg.feature_dim})")
        return bank
