"""The scene evaluator: a supervised classifier + object-size regressor for judging generated scenes.

Never used for generation. It plays the part CLIP plays in the Sound2Scene paper's Table 1
(R@1 / R@5 of generated images against the sound's class) and the part Inception plays in FID
(its pooled features), and it measures the volume control (the size of the loudest object).

Network: a 3x3 stride-2 stem and four stages of ResNet basic blocks (strides 1, 2, 2, 2; the
encoders' blocks), global average pooling → ``features`` (``widths[-1]``-d, what FID uses),
dropout, then two linear heads:

- ``logits`` (``n_classes``): multi-label, trained with softmax cross-entropy against the
  scene's one or two classes (each an equal share); the ranking of the logits gives R@k.
- ``size``: log of the loudest object's longer box side as a fraction of the image side,
  standardised by ``size_mean`` / ``size_std`` of the training set (``predict`` undoes it).

Trained on the real composites of the scenes dataset (``soundsight_train.scene_evaluator``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoders import _from_dict, _init, _stages

ARCHITECTURE = "scene-evaluator"
TASK = "scene-evaluation"


@dataclass
class EvaluatorConfig:
    image_size: int = 64
    n_classes: int = 0
    classes: tuple = ()  # class names, index = label
    widths: tuple = (32, 64, 128, 256)
    blocks: tuple = (1, 1, 1, 1)
    dropout: float = 0.2
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.25, 0.25, 0.25)
    # the size target: log(longer side of the loudest object's box / image side), standardised
    size_mean: float = 0.0
    size_std: float = 1.0

    @classmethod
    def preset(cls, name: str = "cpu", **overrides) -> "EvaluatorConfig":
        """``cpu``: ~1.2 M params; ``tiny``: tests."""
        base = {"cpu": {}, "tiny": dict(widths=(8, 16, 16, 32), dropout=0.0)}[name]
        return cls(**{**base, **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "EvaluatorConfig":
        return _from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)


def size_target(boxes, image_side: float):
    """log(longer side / image side) of each sample's first (loudest) box; boxes (N, 2, 4) or (N, 4)
    as (x0, y0, x1, y1), x1/y1 exclusive, in pixels of an ``image_side`` image (numpy or torch)."""
    b = boxes[:, 0] if boxes.ndim == 3 else boxes
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    if isinstance(b, torch.Tensor):
        return torch.log(torch.maximum(w, h).double() / image_side)
    import numpy as np

    return np.log(np.maximum(w, h).astype(np.float64) / image_side)


class SceneEvaluator(nn.Module):
    def __init__(self, cfg: EvaluatorConfig):
        super().__init__()
        if cfg.n_classes < 1:
            raise ValueError("the evaluator needs n_classes >= 1")
        self.cfg = cfg
        w0 = cfg.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, 2 if cfg.image_size >= 64 else 1, 1, bias=False),
                                  nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        self.body = _stages(cfg.widths, cfg.blocks, w0)
        self.drop = nn.Dropout(cfg.dropout)
        self.cls = nn.Linear(cfg.widths[-1], cfg.n_classes)
        self.size = nn.Linear(cfg.widths[-1], 1)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        _init(self)

    @property
    def num_features(self) -> int:
        return self.cfg.widths[-1]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC / NCHW or float [0, 1] NCHW at any size → normalised NCHW at image_size
        (generated images of another size are resized with antialiasing, like real ones)."""
        x = images
        if x.dtype == torch.uint8:
            if x.shape[-1] == 3 and x.shape[1] != 3:
                x = x.permute(0, 3, 1, 2)
            x = x.float() / 255.0
        x = x.float()
        s = self.cfg.image_size
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled last-stage activations (B, widths[-1]): the FID feature space."""
        return self.body(self.stem(self.prepare(images))).mean((2, 3))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (B, n_classes), standardised log size (B,))."""
        h = self.drop(self.features(images))
        return self.cls(h), self.size(h).squeeze(1)

    def log_size(self, standardised: torch.Tensor) -> torch.Tensor:
        return standardised * self.cfg.size_std + self.cfg.size_mean

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 256) -> dict:
        """Evaluation-mode outputs on CPU: ``logits`` (N, C), ``log_size`` (N,) (log of the loudest
        object's longer side / image side), ``features`` (N, F)."""
        was = self.training
        self.eval()
        logits, size, feats = [], [], []
        dev = self.mean.device
        for i in range(0, len(images), batch):
            h = self.features(images[i:i + batch].to(dev))
            feats.append(h.float().cpu())
            logits.append(self.cls(h).float().cpu())
            size.append(self.log_size(self.size(h).squeeze(1)).float().cpu())
        self.train(was)
        return {"logits": torch.cat(logits), "log_size": torch.cat(size), "features": torch.cat(feats)}

    @classmethod
    def from_state(cls, config: dict, state: dict, device=None) -> "SceneEvaluator":
        m = cls(EvaluatorConfig.from_dict(config))
        m.load_state_dict(state)
        return (m.to(device) if device is not None else m).eval()

    @classmethod
    def from_registry(cls, folder, device=None) -> "SceneEvaluator":
        return cls.from_state(folder.config, folder.tensors("model.safetensors"), device)


class FIDFeatures(nn.Module):
    """The evaluator's pooled features as a torchmetrics FID feature extractor: float [0, 1] NCHW
    images (any size) in, (B, F) features out; ``num_features`` tells torchmetrics the width."""

    def __init__(self, evaluator: SceneEvaluator):
        super().__init__()
        self.evaluator = evaluator
        self.num_features = evaluator.num_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.evaluator.eval()
        return self.evaluator.features(images.to(self.evaluator.mean.device)).float()


# --------------------------------------------------------------------------------------------
# Metrics on a labelled set (shared by the training entrypoint and eval_scene)


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) bool: label (N,) in the top k of logits (N, C)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(1)


def all_in_topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) bool: every label of a sample (labels (N, 2), -1 = none) is in the top k."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    found = (top[:, None, :] == labels[:, :, None]).any(2) | (labels < 0)
    return found.all(1)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    pred, target = pred.double(), target.double()
    ss_res = float(((target - pred) ** 2).sum())
    ss_tot = float(((target - target.mean()) ** 2).sum())
    return 1.0 - ss_res / max(ss_tot, 1e-12)


def labelled_metrics(out: dict, labels: torch.Tensor, log_size: torch.Tensor) -> dict:
    """Accuracy of the evaluator on real composites: ``top1`` / ``top5`` (the loudest object's
    class), ``top1_any`` (the top class is one of the objects), ``both_top3`` (two-object
    samples: both classes in the top 3), ``size_r2`` / ``size_mae_log`` of the log size."""
    logits = out["logits"]
    labels = labels.long()
    two = labels[:, 1] >= 0
    res = {"n": len(labels),
           "top1": float(topk_hits(logits, labels[:, 0], 1).float().mean()),
           "top5": float(topk_hits(logits, labels[:, 0], 5).float().mean()),
           "top1_any": float((logits.argmax(1)[:, None] == labels).any(1).float().mean()),
           "both_top3": float(all_in_topk(logits[two], labels[two], 3).float().mean()) if two.any() else None,
           "two_object_n": int(two.sum()),
           "size_r2": r2_score(out["log_size"], log_size),
           "size_mae_log": float((out["log_size"].double() - log_size.double()).abs().mean())}
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}
