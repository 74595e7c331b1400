"""Latent-diffusion back end of scene-gen (Sound2Vision's LDM variant), from diffusers components.

Every component is built from a config here and trained from scratch (nothing is downloaded;
no hub ids): an ``AutoencoderKL`` (stage 1: images ↔ latents), a ``UNet2DConditionModel``
whose cross-attention reads the conditioning feature z_V as a short sequence of tokens
(``cond_tokens`` tokens made by one linear layer from the unit-norm feature, standardised
with the training features' statistics: conditioning.py), and a
``DDIMScheduler`` for sampling. Classifier-free guidance: during training the condition is
replaced by a learned null sequence with probability ``cond_drop``; sampling mixes the
conditional and unconditional predictions with ``guidance``.

Registry convention: one ``model.safetensors`` with the state dict of ``SceneLDM`` (keys
``vae.*``, ``unet.*``, ``cond.*``, ``null``) and the ``LDMConfig`` in the card; the diffusers
modules are rebuilt from ``LDMConfig.vae_kwargs()`` / ``unet_kwargs()`` at load time, so no
diffusers ``save_pretrained`` files are needed. ``latent_scale`` (1 / std of the training
latents) is measured after stage 1 and stored in the config.

diffusers is imported when a model is built, not when this module is imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conditioning import Standardize
from .encoders import _from_dict

ARCHITECTURE = "scene-ldm"
TASK = "scene-generation"


@dataclass
class LDMConfig:
    image_size: int = 64
    feature_dim: int = 256
    # stage 1: AutoencoderKL (len(vae_channels) - 1 downsamplings: 64 px -> 16 x 16 x 4)
    vae_channels: tuple = (32, 64, 64)
    vae_layers: int = 1
    vae_groups: int = 16
    vae_mid_attention: bool = False
    latent_channels: int = 4
    latent_scale: float = 1.0
    # per-channel mean of the autoencoder's latents, removed before scaling. The noise schedule
    # keeps ~7 % of the signal at its last step while sampling starts from zero-mean noise, so a
    # latent mean left in would be pulled toward 0 (whole pictures tinted). None: no shift
    # (models trained before it).
    latent_shift: tuple | None = None
    # stage 2: UNet2DConditionModel on the latents
    unet_channels: tuple = (64, 128, 128)
    unet_attn: tuple = (False, True, True)  # cross-attention blocks per level
    unet_layers: int = 1
    unet_groups: int = 32
    heads: int = 4
    cross_dim: int = 128
    cond_tokens: int = 4
    cond_drop: float = 0.1
    # training features' mean and 1 / RMS, applied after unit-normalising (conditioning.py); None: off
    norm_cond_mean: tuple | None = None
    norm_cond_scale: float = 1.0
    guidance: float = 2.0
    # noise schedule (DDIM at sampling)
    train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "epsilon"

    @classmethod
    def for_size(cls, size: int, preset: str = "cpu", **overrides) -> "LDMConfig":
        """``cpu`` (64 px: VAE 0.9 M, UNet 6.7 M params), ``paper`` (wider, deeper), ``tiny`` (tests)."""
        if size not in (32, 64, 128):
            raise ValueError(f"LDM sizes are 32, 64 or 128, not {size}")
        base: dict = dict(image_size=size)
        if size == 128:
            base.update(vae_channels=(32, 64, 64, 64))  # 128 -> 16 x 16 latents
        if size == 32:
            base.update(vae_channels=(32, 64))  # 32 -> 16 x 16
        if preset == "paper":
            base.update(vae_channels=tuple(2 * c for c in base.get("vae_channels", cls.vae_channels)),
                        vae_layers=2, vae_groups=32, vae_mid_attention=True, unet_channels=(128, 256, 256),
                        unet_layers=2, heads=8, cross_dim=256)
        elif preset == "tiny":
            base.update(vae_channels=(8, 16) if size == 32 else (8, 16, 16), vae_groups=4,
                        unet_channels=(16, 32), unet_attn=(False, True), unet_groups=8, heads=2, cross_dim=16,
                        cond_tokens=2)
        elif preset != "cpu":
            raise ValueError(f"unknown preset {preset!r}")
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict) -> "LDMConfig":
        return _from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    def vae_kwargs(self) -> dict:
        n = len(self.vae_channels)
        return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                    up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(self.vae_channels),
                    layers_per_block=self.vae_layers, latent_channels=self.latent_channels,
                    norm_num_groups=self.vae_groups, sample_size=self.image_size, scaling_factor=1.0,
                    mid_block_add_attention=self.vae_mid_attention)

    def unet_kwargs(self) -> dict:
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in self.unet_attn)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(self.unet_attn))
        return dict(sample_size=self.latent_size, in_channels=self.latent_channels,
                    out_channels=self.latent_channels, down_block_types=down, up_block_types=up,
                    mid_block_type="UNetMidBlock2DCrossAttn", block_out_channels=tuple(self.unet_channels),
                    layers_per_block=self.unet_layers, norm_num_groups=self.unet_groups,
                    cross_attention_dim=self.cross_dim, attention_head_dim=self.heads)

    def scheduler_kwargs(self) -> dict:
        return dict(num_train_timesteps=self.train_timesteps, beta_schedule=self.beta_schedule,
                    beta_start=self.beta_start, beta_end=self.beta_end, prediction_type=self.prediction_type,
                    clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")


def _quiet_diffusers():
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


class SceneLDM(nn.Module):
    def __init__(self, cfg: LDMConfig):
        super().__init__()
        _quiet_diffusers()
        from diffusers import AutoencoderKL, UNet2DConditionModel

        self.cfg = cfg
        self.vae = AutoencoderKL(**cfg.vae_kwargs())
        self.unet = UNet2DConditionModel(**cfg.unet_kwargs())
        self.standardize = Standardize(cfg.norm_cond_mean, cfg.norm_cond_scale)
        self.cond = nn.Linear(cfg.feature_dim, cfg.cond_tokens * cfg.cross_dim)
        self.null = nn.Parameter(torch.zeros(cfg.cond_tokens, cfg.cross_dim))

    # -- pieces ------------------------------------------------------------------------------

    def scheduler(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler(**self.cfg.scheduler_kwargs())

    def condition(self, features: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """encoder_hidden_states (B, cond_tokens, cross_dim) of features (B, D); rows where
        ``drop`` is True get the learned null sequence (classifier-free guidance)."""
        h = self.standardize(F.normalize(features.float(), dim=-1))
        c = self.cond(h).view(len(h), self.cfg.cond_tokens, self.cfg.cross_dim)
        if drop is not None:
            c = torch.where(drop[:, None, None], self.null[None].to(c.dtype), c)
        return c

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False):
        """Scaled latents of images in [-1, 1] (posterior mean unless ``sample``)."""
        dist = self.vae.encode(images).latent_dist
        return self.normalize(dist.sample(generator) if sample else dist.mode())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] of scaled latents."""
        return self.vae.decode(latents / self.cfg.latent_scale + self._shift(latents)).sample

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """The autoencoder's raw latents in the units the UNet learns on (``latent_shift``, ``latent_scale``)."""
        return (z - self._shift(z)) * self.cfg.latent_scale

    def _shift(self, like: torch.Tensor):
        if self.cfg.latent_shift is None:
            return 0.0
        return torch.tensor(self.cfg.latent_shift, dtype=like.dtype, device=like.device)[None, :, None, None]

    # -- training losses ---------------------------------------------------------------------

    def vae_loss(self, images: torch.Tensor, kl_weight: float = 1e-6, generator=None) -> dict:
        """Stage 1: L1 + MSE reconstruction of [-1, 1] images, plus kl_weight x KL (per pixel)."""
        dist = self.vae.encode(images).latent_dist
        rec = self.vae.decode(dist.sample(generator)).sample
        l1 = (rec.float() - images.float()).abs().mean()
        mse = (rec.float() - images.float()).square().mean()
        kl = dist.kl().float().mean() / images[0].numel()
        return {"loss": l1 + mse + kl_weight * kl, "l1": l1, "mse": mse, "kl": kl}

    def unet_loss(self, latents: torch.Tensor, features: torch.Tensor, generator: torch.Generator | None = None,
                  scheduler=None) -> dict:
        """Stage 2: noise-prediction MSE on scaled latents, condition dropped with p = cond_drop."""
        sched = scheduler or self.scheduler()
        b, dev = len(latents), latents.device
        gdev = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(latents.shape, generator=generator, device=gdev).to(dev)
        t = torch.randint(0, self.cfg.train_timesteps, (b,), generator=generator, device=gdev).to(dev)
        drop = (torch.rand(b, generator=generator, device=gdev) < self.cfg.cond_drop).to(dev)
        noisy = sched.add_noise(latents, noise, t)
        pred = self.unet(noisy, t, self.condition(features, drop)).sample
        if self.cfg.prediction_type == "epsilon":
            target = noise
        elif self.cfg.prediction_type == "v_prediction":
            target = sched.get_velocity(latents, noise, t)
        else:
            target = latents
        loss = (pred.float() - target.float()).square().mean()
        return {"loss": loss}

    # -- sampling ----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, features: torch.Tensor, steps: int = 25, generator: torch.Generator | None = None,
               guidance: float | None = None, eta: float = 0.0, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] (B, 3, S, S) for features (B, D) with ``steps`` DDIM steps.

        The initial noise comes from ``generator`` (same seed, same images); ``eta`` = 0 is
        deterministic DDIM. ``guidance`` defaults to the config's (1 = no guidance)."""
        cfg = self.cfg
        dev = next(self.parameters()).device
        g = cfg.guidance if guidance is None else guidance
        sched = self.scheduler()
        sched.set_timesteps(steps, device=dev)
        b = len(features)
        if latents is None:
            gdev = generator.device if generator is not None else torch.device("cpu")
            shape = (b, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
            latents = torch.randn(shape, generator=generator, device=gdev).to(dev)
        latents = latents * sched.init_noise_sigma
        cond = self.condition(features.to(dev))
        if g != 1.0:
            ctx = torch.cat([self.null[None].expand(b, -1, -1).to(cond.dtype), cond], 0)
        for t in sched.timesteps:
            if g != 1.0:
                out = self.unet(torch.cat([latents, latents], 0), t, ctx).sample
                uncond, c = out.chunk(2)
                eps = uncond + g * (c - uncond)
            else:
                eps = self.unet(latents, t, cond).sample
            latents = sched.step(eps, t, latents, eta=eta, generator=generator).prev_sample
        return ((self.decode(latents).float() + 1) / 2).clamp(0, 1)

    @classmethod
    def from_state(cls, config: dict, state: dict, device=None) -> "SceneLDM":
        m = cls(LDMConfig.from_dict(config))
        m.load_state_dict(state)
        return (m.to(device) if device is not None else m).eval()

    @classmethod
    def from_registry(cls, folder, device=None) -> "SceneLDM":
        return cls.from_state(folder.config, folder.tensors("model.safetensors"), device)
