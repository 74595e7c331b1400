"""Standardised conditioning: f_V's unit-norm feature, centred and scaled before a generator's
first conditioning layer.

Why: features of real scenes share a large common direction (the mean cosine between unrelated
scenes is ~0.4 for the shipped f_V), and a unit vector spread over 256 dimensions gives each
one ~0.06. Next to N(0, 1) noise chunks (the GAN) or against a freshly initialised projection
(the LDM), what distinguishes one condition from another is then so small that a short run
learns to ignore it: the 1075-step GAN's images varied 9x less across conditions than across
noise. Subtracting the training features' mean and scaling the remainder to unit variance per
dimension (one scale for all dimensions, so no near-constant dimension is blown up) gives the
condition the same footing as the noise. The statistics are measured once on the training
features and stored in the model's config (``norm_cond_mean``, ``norm_cond_scale``); a config
without them (models trained before this) uses the unit-norm feature as it is.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def feature_statistics(*feature_sets: torch.Tensor) -> tuple[list[float], float]:
    """(mean, scale) of unit-norm features (N, D): scale = 1 / RMS of the centred features."""
    f = torch.cat([x.float() for x in feature_sets], 0)
    mean = f.mean(0)
    scale = 1.0 / float((f - mean).square().mean().sqrt().clamp_min(1e-8))
    return [round(float(v), 6) for v in mean], round(scale, 6)


class Standardize(nn.Module):
    """(h - mean) * scale with the config's statistics; the identity when there are none. The
    statistics live in the config, so the buffer is not part of the weights file."""

    def __init__(self, mean, scale: float):
        super().__init__()
        self.enabled = mean is not None
        self.register_buffer("mean", torch.tensor(mean if self.enabled else [], dtype=torch.float32),
                             persistent=False)
        self.scale = float(scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean.to(h.dtype)) * self.scale if self.enabled else h
