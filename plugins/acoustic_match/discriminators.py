"""AViTAR's discriminators and losses (HiFi-GAN style; written from the papers' descriptions).

- ``PeriodDiscriminator(p)``: the waveform folded into (T / p, p) columns, 2-D convs with
  kernel (5, 1) and stride (3, 1) so each column (samples p apart) is judged on its own;
  ``MultiPeriodDiscriminator`` runs periods 2, 3, 5, 7, 11.
- ``ScaleDiscriminator``: grouped strided conv1d stack (kernel 41, stride 4) on the waveform;
  ``MultiScaleDiscriminator`` runs it on the raw signal and on 2x and 4x average-pooled copies.
- Widths scale with ``channels`` (HiFi-GAN's are 32 for MPD and 16 for MSD; we train at 4-8).

Losses: LSGAN (``d_loss``: (D(real) - 1)^2 + D(fake)^2; ``g_adv_loss``: (D(fake) - 1)^2),
feature matching (L1 between the discriminators' activations on real and generated audio),
log-mel L1 (``MelLoss``: FFT 1024, hop 256, 80 bands) and the multi-resolution STFT loss
(``MultiResolutionSTFTLoss``: spectral convergence + log-magnitude L1 at FFT 512/1024/2048).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from .rt60_net import mel_filterbank


@dataclass
class DiscConfig:
    periods: tuple = (2, 3, 5, 7, 11)
    mpd_channels: int = 8  # HiFi-GAN: 32
    scales: int = 3
    msd_channels: int = 4  # HiFi-GAN: 16

    @classmethod
    def preset(cls, name: str) -> "DiscConfig":
        return {"tiny": cls(periods=(2, 3), mpd_channels=2, scales=2, msd_channels=2),
                "cpu": cls(),
                "paper": cls(mpd_channels=32, msd_channels=16)}[name]

    @classmethod
    def from_dict(cls, d: dict) -> "DiscConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "periods" in kw:
            kw["periods"] = tuple(kw["periods"])
        return cls(**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["periods"] = list(self.periods)
        return d


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, c: int):
        super().__init__()
        self.period = period
        chans = [1, c, 4 * c, 16 * c, 32 * c]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0))) for a, b in zip(chans[:-1], chans[1:]))
        self.convs.append(weight_norm(nn.Conv2d(chans[-1], chans[-1], (5, 1), 1, padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x):
        B, C, T = x.shape
        if T % self.period:
            x = F.pad(x, (0, self.period - T % self.period), mode="reflect")
        x = x.view(B, C, -1, self.period)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        x = self.post(x)
        feats.append(x)
        return x.flatten(1), feats


class ScaleDiscriminator(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        # HiFi-GAN's groups (1, 4, 16, 16, 16, 1), reduced to what divides narrower layers
        chans = [1, c, 4 * c, 16 * c, 64 * c, 64 * c, 64 * c]
        kernels, strides, groups = (15, 41, 41, 41, 41, 5), (1, 4, 4, 4, 4, 1), (1, 4, 16, 16, 16, 1)
        spec = [(a, b, k, s, math.gcd(math.gcd(a, b), g))
                for a, b, k, s, g in zip(chans[:-1], chans[1:], kernels, strides, groups)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv1d(a, b, k, s, padding=k // 2, groups=gr)) for a, b, k, s, gr in spec)
        self.post = weight_norm(nn.Conv1d(64 * c, 1, 3, 1, padding=1))

    def forward(self, x):
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        x = self.post(x)
        feats.append(x)
        return x.flatten(1), feats


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, cfg: DiscConfig):
        super().__init__()
        self.discs = nn.ModuleList(PeriodDiscriminator(p, cfg.mpd_channels) for p in cfg.periods)

    def forward(self, x):
        return [d(x) for d in self.discs]


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, cfg: DiscConfig):
        super().__init__()
        self.discs = nn.ModuleList(ScaleDiscriminator(cfg.msd_channels) for _ in range(cfg.scales))

    def forward(self, x):
        outs = []
        for i, d in enumerate(self.discs):
            if i:
                x = F.avg_pool1d(x, 4, 2, padding=2)
            outs.append(d(x))
        return outs


class Discriminators(nn.Module):
    """MPD + MSD; ``forward(x)`` -> list of (logits, feature maps), one per sub-discriminator."""

    def __init__(self, cfg: DiscConfig):
        super().__init__()
        self.cfg = cfg
        self.mpd = MultiPeriodDiscriminator(cfg)
        self.msd = MultiScaleDiscriminator(cfg)

    def forward(self, x):
        return self.mpd(x) + self.msd(x)


# --------------------------------------------------------------------------------------------
# Losses


def d_loss(real_outs, fake_outs) -> torch.Tensor:
    loss = 0.0
    for (r, _), (f, _) in zip(real_outs, fake_outs):
        loss = loss + torch.mean((r.float() - 1) ** 2) + torch.mean(f.float() ** 2)
    return loss


def g_adv_loss(fake_outs) -> torch.Tensor:
    loss = 0.0
    for f, _ in fake_outs:
        loss = loss + torch.mean((f.float() - 1) ** 2)
    return loss


def feature_matching_loss(real_outs, fake_outs) -> torch.Tensor:
    loss = 0.0
    for (_, rf), (_, ff) in zip(real_outs, fake_outs):
        for a, b in zip(rf, ff):
            loss = loss + torch.mean(torch.abs(a.detach().float() - b.float()))
    return loss


def _mag(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    win = torch.hann_window(n_fft, device=x.device, dtype=torch.float32)
    s = torch.stft(x.float().reshape(-1, x.shape[-1]), n_fft, hop, window=win, center=True, return_complex=True)
    return (s.real ** 2 + s.imag ** 2 + 1e-9).sqrt()


class MelLoss(nn.Module):
    """L1 between natural-log mel magnitudes (HiFi-GAN's mel loss; FFT 1024, hop 256, 80 bands)."""

    def __init__(self, sr: int = 16000, n_fft: int = 1024, hop: int = 256, n_mels: int = 80):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("fb", mel_filterbank(sr, n_fft, n_mels, 0.0, sr / 2), persistent=False)

    def mel(self, x):
        return torch.log(torch.matmul(self.fb, _mag(x, self.n_fft, self.hop)).clamp_min(1e-5))

    def forward(self, y, target):
        return F.l1_loss(self.mel(y), self.mel(target))


class MultiResolutionSTFTLoss(nn.Module):
    def __init__(self, resolutions=((512, 128), (1024, 256), (2048, 512))):
        super().__init__()
        self.resolutions = tuple(resolutions)

    def forward(self, y, target):
        loss = 0.0
        for n_fft, hop in self.resolutions:
            a, b = _mag(y, n_fft, hop), _mag(target, n_fft, hop)
            sc = torch.linalg.norm(b - a, dim=(1, 2)) / torch.linalg.norm(b, dim=(1, 2)).clamp_min(1e-7)
            loss = loss + sc.mean() + F.l1_loss(torch.log(a), torch.log(b))
        return loss / len(self.resolutions)
