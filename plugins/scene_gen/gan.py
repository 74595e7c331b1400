"""ICGAN-style conditional GAN of scene-gen: G(z_N, z_V) and a projection discriminator.

Written from the BigGAN / IC-GAN / Sound2Scene papers' descriptions (no code from their
repositories).

Generator ``Generator``
    z_N (``z_dim``) is split into ``len(blocks) + 1`` equal chunks (BigGAN's hierarchical
    latent). The conditioning feature z_V (D-dim, unit-normalised here, then standardised with
    the training features' statistics when the config has them: conditioning.py) is projected by one
    linear layer to a ``shared_dim`` embedding (IC-GAN's replacement of the class embedding).
    Chunk 0 → a spectrally normalised linear layer → 4x4 x C0. Each up-block (BigGAN residual
    block): CBN → ReLU → 2x nearest upsample → 3x3 conv → CBN → ReLU → 3x3 conv, plus an
    upsampled 1x1-conv shortcut; every CBN's gain and bias are linear in [z chunk_i, embedding].
    Optional self-attention (SAGAN non-local block) at ``attn_res``. Output: BN → ReLU → 3x3
    conv → tanh, images in [-1, 1]. All convolutions and linear layers of the image path are
    spectrally normalised (BigGAN does this in G too). Batch-norm statistics: running averages
    at inference, so a sample depends only on (z_N, z_V).

Discriminator ``Discriminator`` (training only)
    BigGAN down-blocks (ReLU → conv → ReLU → conv → 2x2 average pool, 1x1-conv shortcut),
    optional self-attention, ReLU, global sum pooling → φ(x); output ψ(φ(x)) + <E(z_V), φ(x)>
    (projection discriminator, with a linear embedding E of the continuous feature). Trained
    with the hinge loss (``losses.hinge_d`` / ``losses.hinge_g``).

Sizes: ``GANConfig.for_size(64 | 128 | 32, preset)``; channel widths are ``ch * mult`` per
resolution, from 4x4 up to the image size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from .conditioning import Standardize
from .encoders import _from_dict, count_parameters  # noqa: F401  (re-exported)

ARCHITECTURE = "scene-icgan"
TASK = "scene-generation"


def sn(module: nn.Module, eps: float = 1e-6) -> nn.Module:
    return spectral_norm(module, eps=eps)


@dataclass
class GANConfig:
    image_size: int = 64
    feature_dim: int = 256  # D of the image encoder
    z_dim: int = 60  # split into len(g_mult) chunks (one per block + the input layer)
    ch: int = 16
    g_mult: tuple = (8, 8, 4, 2, 1)  # channels ch*m at 4, 8, 16, 32, 64 px
    shared_dim: int = 64  # projected feature fed to every CBN
    attn_res: int = 32  # self-attention in G at this resolution (0: none)
    d_ch: int = 16
    d_mult: tuple = (1, 2, 4, 8, 8)  # D channels after each down-block: 32, 16, 8, 4 px, + one at 4 px
    d_attn_res: int = 32  # self-attention in D at this resolution (0: none)
    normalize_features: bool = True  # unit-normalise z_V inside (IC-GAN uses normalised features)
    bn_eps: float = 1e-4
    # training features' mean and 1 / RMS, applied after unit-normalising (conditioning.py); None: off
    norm_cond_mean: tuple | None = None
    norm_cond_scale: float = 1.0

    @classmethod
    def for_size(cls, size: int, preset: str = "cpu", **overrides) -> "GANConfig":
        """``cpu`` (64 px: G 0.6 M, D 0.6 M params), ``paper`` (BigGAN widths: ch 64, 96 at 128 px
        where G has 70 M params; z 120), ``tiny`` (tests)."""
        if size not in (32, 64, 128):
            raise ValueError(f"GAN sizes are 32, 64 or 128, not {size}")
        n_up = {32: 3, 64: 4, 128: 5}[size]
        g_mult = {3: (4, 4, 2, 1), 4: (8, 8, 4, 2, 1), 5: (16, 16, 8, 4, 2, 1)}[n_up]
        d_mult = {3: (1, 2, 4, 4), 4: (1, 2, 4, 8, 8), 5: (1, 2, 4, 8, 16, 16)}[n_up]
        base = dict(image_size=size, g_mult=g_mult, d_mult=d_mult, attn_res=min(32, size // 2),
                    d_attn_res=min(32, size // 2), z_dim={3: 60, 4: 60, 5: 120}[n_up])
        if preset == "paper":
            base.update(ch=64 if size < 128 else 96, d_ch=64 if size < 128 else 96, shared_dim=128, z_dim=120)
        elif preset == "tiny":
            base.update(ch=4, d_ch=4, shared_dim=8, z_dim=4 * (n_up + 1), attn_res=0, d_attn_res=0)
        elif preset != "cpu":
            raise ValueError(f"unknown preset {preset!r}")
        base.update(overrides)
        cfg = cls(**base)
        cfg.check()
        return cfg

    def check(self) -> None:
        n = len(self.g_mult)
        if self.image_size != 4 * 2 ** (n - 1):
            raise ValueError(f"g_mult has {n} entries: 4 px doubled {n - 1} times is not {self.image_size}")
        if self.z_dim % n:
            raise ValueError(f"z_dim {self.z_dim} must split into {n} equal chunks")

    @classmethod
    def from_dict(cls, d: dict) -> "GANConfig":
        return _from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def chunk(self) -> int:
        return self.z_dim // len(self.g_mult)


class CBN(nn.Module):
    """Conditional batch norm: BN without affine, gain = 1 + Wg c, bias = Wb c."""

    def __init__(self, channels: int, cond_dim: int, eps: float):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False, eps=eps)
        self.gain = sn(nn.Linear(cond_dim, channels, bias=False))
        self.bias = sn(nn.Linear(cond_dim, channels, bias=False))

    def forward(self, x, c, outside=None):
        """``outside`` = (c_out, mask (B, 1, h, w) in [0, 1]): the condition is c where the mask
        is 1 and c_out where it is 0 (gain and bias are linear in c, so blending them is
        blending the condition)."""
        h = self.bn(x)
        gain, bias = (1 + self.gain(c))[:, :, None, None], self.bias(c)[:, :, None, None]
        if outside is not None:
            c_out, mask = outside
            m = _fit_mask(mask, x.shape[-2:])
            gain = m * gain + (1 - m) * (1 + self.gain(c_out))[:, :, None, None]
            bias = m * bias + (1 - m) * self.bias(c_out)[:, :, None, None]
        return h * gain + bias


def _fit_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """The region mask at a feature map's resolution (area-averaged, so a soft edge stays soft)."""
    return F.adaptive_avg_pool2d(mask, size)


class SelfAttention(nn.Module):
    """SAGAN / BigGAN non-local block with a zero-initialised residual gain."""

    def __init__(self, ch: int):
        super().__init__()
        self.theta = sn(nn.Conv2d(ch, max(ch // 8, 1), 1, bias=False))
        self.phi = sn(nn.Conv2d(ch, max(ch // 8, 1), 1, bias=False))
        self.g = sn(nn.Conv2d(ch, max(ch // 2, 1), 1, bias=False))
        self.o = sn(nn.Conv2d(max(ch // 2, 1), ch, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        b, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (B, c/8, HW)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # (B, c/8, HW/4)
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # (B, c/2, HW/4)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, -1)  # (B, HW, HW/4)
        o = self.o((g @ attn.transpose(1, 2)).view(b, -1, h, w))
        return x + self.gamma * o


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, eps: float):
        super().__init__()
        self.bn1 = CBN(cin, cond_dim, eps)
        self.conv1 = sn(nn.Conv2d(cin, cout, 3, 1, 1))
        self.bn2 = CBN(cout, cond_dim, eps)
        self.conv2 = sn(nn.Conv2d(cout, cout, 3, 1, 1))
        self.short = sn(nn.Conv2d(cin, cout, 1))

    def forward(self, x, c, outside=None):
        y = F.relu(self.bn1(x, c, outside))
        y = F.interpolate(y, scale_factor=2, mode="nearest")
        y = self.conv1(y)
        y = self.conv2(F.relu(self.bn2(y, c, outside)))
        return y + self.short(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        chans = [cfg.ch * m for m in cfg.g_mult]
        self.standardize = Standardize(cfg.norm_cond_mean, cfg.norm_cond_scale)
        self.shared = nn.Linear(cfg.feature_dim, cfg.shared_dim)
        self.linear = sn(nn.Linear(cfg.chunk, 16 * chans[0]))
        cond_dim = cfg.chunk + cfg.shared_dim
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        res = 4
        for i in range(len(chans) - 1):
            self.blocks.append(GBlock(chans[i], chans[i + 1], cond_dim, cfg.bn_eps))
            res *= 2
            if res == cfg.attn_res:
                self.attn[str(i)] = SelfAttention(chans[i + 1])
        self.out_bn = nn.BatchNorm2d(chans[-1], eps=cfg.bn_eps)
        self.out_conv = sn(nn.Conv2d(chans[-1], 3, 3, 1, 1))
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
                nn.init.orthogonal_(w)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def condition(self, features: torch.Tensor) -> torch.Tensor:
        h = F.normalize(features.float(), dim=-1) if self.cfg.normalize_features else features.float()
        return self.shared(self.standardize(h))

    def forward(self, z: torch.Tensor, features: torch.Tensor, outside: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, S, S) in [-1, 1] from noise z (B, z_dim) and features (B, D).

        With ``outside`` (B, D) and ``mask`` (B, 1, S, S) in [0, 1], the condition is regional:
        ``features`` where the mask is 1, ``outside`` where it is 0, in every conditional batch
        norm at its own resolution (the noise and the convolutions are shared, so the two
        regions join up). This is how an edit changes one part of a picture in latent space.
        """
        cfg = self.cfg
        if (outside is None) != (mask is None):
            raise ValueError("a regional condition needs both the outside features and the mask")
        zs = torch.split(z, cfg.chunk, dim=1)
        e = self.condition(features).to(z.dtype)
        e_out = None if outside is None else self.condition(outside).to(z.dtype)
        x = self.linear(zs[0]).view(len(z), -1, 4, 4)
        for i, block in enumerate(self.blocks):
            region = None if e_out is None else (torch.cat([zs[i + 1], e_out], 1), mask.to(z.dtype))
            x = block(x, torch.cat([zs[i + 1], e], 1), region)
            if str(i) in self.attn:
                x = self.attn[str(i)](x)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(x))))

    def sample_z(self, n: int, generator: torch.Generator | None = None, truncation: float = 0.0) -> torch.Tensor:
        """z_N ~ N(0, I) (optionally truncated to |z| < truncation by resampling), on CPU or the
        generator's device; the same generator state gives the same z on every platform."""
        dev = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn(n, self.cfg.z_dim, generator=generator, device=dev)
        if truncation > 0:
            for _ in range(100):
                bad = z.abs() > truncation
                if not bad.any():
                    break
                z = torch.where(bad, torch.randn(z.shape, generator=generator, device=dev), z)
            z = z.clamp(-truncation, truncation)
        return z

    @torch.no_grad()
    def generate(self, features: torch.Tensor, generator: torch.Generator | None = None,
                 z: torch.Tensor | None = None, truncation: float = 0.0) -> torch.Tensor:
        """Images in [0, 1] (B, 3, S, S) for features (B, D); z drawn from ``generator`` if not given."""
        dev = next(self.parameters()).device
        if z is None:
            z = self.sample_z(len(features), generator, truncation)
        x = self(z.to(dev), features.to(dev))
        return (x.float() + 1) / 2

    @classmethod
    def from_state(cls, config: dict, state: dict, device=None) -> "Generator":
        m = cls(GANConfig.from_dict(config))
        m.load_state_dict(state)
        return (m.to(device) if device is not None else m).eval()

    @classmethod
    def from_registry(cls, folder, device=None) -> "Generator":
        return cls.from_state(folder.config, folder.tensors("model.safetensors"), device)


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool, preact: bool):
        super().__init__()
        self.conv1 = sn(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = sn(nn.Conv2d(cout, cout, 3, 1, 1))
        self.short = sn(nn.Conv2d(cin, cout, 1)) if (cin != cout or down) else None
        self.down, self.preact = down, preact

    def forward(self, x):
        y = F.relu(x) if self.preact else x
        y = self.conv2(F.relu(self.conv1(y)))
        if self.down:
            y = F.avg_pool2d(y, 2)
        s = x
        if self.preact:
            if self.short is not None:
                s = self.short(s)
            if self.down:
                s = F.avg_pool2d(s, 2)
        else:  # first block: pool before the shortcut conv (BigGAN's DBlock for raw images)
            if self.down:
                s = F.avg_pool2d(s, 2)
            if self.short is not None:
                s = self.short(s)
        return y + s


class Discriminator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        chans = [cfg.d_ch * m for m in cfg.d_mult]
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        cin, res = 3, cfg.image_size
        for i, c in enumerate(chans):
            down = i < len(chans) - 1
            self.blocks.append(DBlock(cin, c, down, preact=i > 0))
            cin = c
            res = res // 2 if down else res
            if down and res == cfg.d_attn_res and not self.attn:
                self.attn[str(i)] = SelfAttention(c)
        self.linear = sn(nn.Linear(cin, 1))
        self.standardize = Standardize(cfg.norm_cond_mean, cfg.norm_cond_scale)
        self.embed = sn(nn.Linear(cfg.feature_dim, cin, bias=False))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
                nn.init.orthogonal_(w)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logits (B,) for images in [-1, 1] and their conditioning features."""
        x = images
        for i, block in enumerate(self.blocks):
            x = block(x)
            if str(i) in self.attn:
                x = self.attn[str(i)](x)
        phi = F.relu(x).sum((2, 3))
        h = F.normalize(features.float(), dim=-1) if self.cfg.normalize_features else features.float()
        return self.linear(phi).squeeze(1) + (self.embed(self.standardize(h).to(phi.dtype)) * phi).sum(1)


# --------------------------------------------------------------------------------------------
# Differentiable augmentation for D on small data (DiffAugment, Zhao et al. 2020; our own code)


def diff_augment(x: torch.Tensor, policy: str = "color,translation", generator: torch.Generator | None = None):
    """The same kind of random, differentiable transform for real and fake batches (in [-1, 1]).

    color: brightness ±0.5, saturation x[0, 2], contrast x[0.5, 1.5]; translation: shift by up to
    1/8 of the side with zero padding; cutout: one square of half the side set to 0.
    """
    if not policy:
        return x
    b, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        gdev = generator.device if generator is not None else "cpu"
        return torch.rand(*shape, generator=generator, device=gdev).to(dev)

    for p in policy.split(","):
        p = p.strip()
        if p == "color":
            x = x + (rand(b, 1, 1, 1) - 0.5)
            m = x.mean(1, keepdim=True)
            x = (x - m) * (rand(b, 1, 1, 1) * 2) + m
            m = x.mean((1, 2, 3), keepdim=True)
            x = (x - m) * (rand(b, 1, 1, 1) + 0.5) + m
        elif p == "translation":
            sh, sw = h // 8, w // 8
            ty = (rand(b) * (2 * sh + 1)).long() - sh
            tx = (rand(b) * (2 * sw + 1)).long() - sw
            gy = (torch.arange(h, device=dev)[None, :] - ty[:, None]).clamp(-1, h)  # source rows
            gx = (torch.arange(w, device=dev)[None, :] - tx[:, None]).clamp(-1, w)
            pad = F.pad(x, (1, 1, 1, 1))
            x = pad[torch.arange(b, device=dev)[:, None, None], :, (gy + 1)[:, :, None], (gx + 1)[:, None, :]]
            x = x.permute(0, 3, 1, 2)
        elif p == "cutout":
            ch, cw = h // 2, w // 2
            cy = (rand(b) * (h + 1 - ch)).long()
            cx = (rand(b) * (w + 1 - cw)).long()
            yy = torch.arange(h, device=dev)[None, :, None]
            xx = torch.arange(w, device=dev)[None, None, :]
            inside = ((yy >= cy[:, None, None]) & (yy < cy[:, None, None] + ch)
                      & (xx >= cx[:, None, None]) & (xx < cx[:, None, None] + cw))
            x = x * (~inside)[:, None].to(x.dtype)
        elif p:
            raise ValueError(f"unknown augmentation {p!r} (color, translation, cutout)")
    return x
