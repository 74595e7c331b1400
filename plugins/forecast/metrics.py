"""Frame metrics for forecasts: SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5,
K1 0.01, K2 0.03, valid filtering, as skimage's gaussian_weights=True,
use_sample_covariance=False) and PSNR, per image, batched."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per image: x, y (..., C, H, W) → (...,). Channels are averaged."""
    lead = x.shape[:-3]
    c, h, w = x.shape[-3:]
    x = x.reshape(-1, 1, h, w).double()
    y = y.reshape(-1, 1, h, w).double()
    g = gaussian_window(win, sigma, x.device).double()[None, None]
    mu_x, mu_y = F.conv2d(x, g), F.conv2d(y, g)
    sxx = F.conv2d(x * x, g) - mu_x**2
    syy = F.conv2d(y * y, g) - mu_y**2
    sxy = F.conv2d(x * y, g) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean((1, 2, 3)).view(*lead, c).mean(-1).float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR per image: (..., C, H, W) → (...,)."""
    mse = ((x.double() - y.double()) ** 2).mean((-3, -2, -1)).clamp_min(1e-10)
    return (10 * torch.log10(data_range**2 / mse)).float()
