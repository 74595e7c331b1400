"""Frame metrics for forecasts: SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5,
K1 0.01, K2 0.03, valid filtering, as skimage's gaussian_weights=True,
use_sample_covariance=False) and PSNR, per image, batched."""

from __future__ import annotations

import torch


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, chunk: int = 256) -> torch.Tensor:
    """Mean SSIM per image: x, y (..., C, H, W) → (...,). Channels are averaged.

    The separable Gaussian window is applied as two banded matrix products over the five
    moment maps ("valid" filtering; float32; ``chunk`` images at a time to bound memory)."""
    lead = x.shape[:-3]
    c, h, w = x.shape[-3:]
    x = x.reshape(-1, h, w)
    y = y.reshape(-1, h, w)
    g1 = gaussian_window(win, sigma, x.device)[win // 2]
    g1 = (g1 / g1.sum()).float()

    def band(n):  # (n - win + 1, n): row i holds the window at columns i .. i + win - 1
        m = torch.zeros(n - win + 1, n, device=x.device)
        for i in range(n - win + 1):
            m[i, i : i + win] = g1
        return m

    gv, ght = band(h), band(w).t()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    out = []
    for i in range(0, x.shape[0], chunk):
        a, b = x[i : i + chunk].float(), y[i : i + chunk].float()
        maps = torch.stack([a, b, a * a, b * b, a * b], 1)  # (n, 5, H, W)
        mu_x, mu_y, exx, eyy, exy = (gv @ maps @ ght).unbind(1)
        sxx, syy, sxy = exx - mu_x**2, eyy - mu_y**2, exy - mu_x * mu_y
        s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
        out.append(s.mean((1, 2)))
    return torch.cat(out).view(*lead, c).mean(-1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR per image: (..., C, H, W) → (...,)."""
    mse = ((x.float() - y.float()) ** 2).mean((-3, -2, -1)).clamp_min(1e-10)
    return 10 * torch.log10(data_range**2 / mse)
