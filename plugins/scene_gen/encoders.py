"""Encoders of scene-gen: the image encoder f_V and the audio encoder f_A with its front end.

Written from the Sound2Scene paper's description (no code from the authors' repository).

f_V (``ImageEncoder``)
    A ResNet-style network of our own for 32/64/128 px RGB: a 3x3 stem (stride 2 from 64 px on,
    plus a 2x2 max-pool at 128 px, so the first stage always runs at 32x32 or smaller), four
    stages of basic residual blocks (strides 1, 2, 2, 2), global average pooling and one linear
    layer to ``feature_dim`` (D). Trained self-supervised (``soundsight_train.scene_image_encoder``).
    The paper uses a SwAV ResNet-50 at 224 px; this is the CPU-sized counterpart.

f_A (``AudioEncoder``)
    ResNet-18 layout: 7x7 stride-2 stem, 3x3 stride-2 max-pool, four stages of two basic
    blocks (strides 1, 2, 2, 2), adaptive average pooling, one linear layer to D. One input
    channel: the log-spectrogram of ``AudioFrontEnd``.

Audio front end (``AudioFrontEnd``), all in torch
    16 kHz mono waveform → fixed length (``seconds``; shorter input is tiled, longer input is
    cropped from the start) → clipped to ±1 → power STFT |X|^2 (Hann window, ``n_fft``, ``hop``,
    no centre padding) → optional mel filterbank (``n_mels`` > 0; 0 keeps the linear bins as
    in the paper) → log(x + 1e-7) → normalisation.

    Normalisation ``"global"`` (default) subtracts a fixed mean and divides by a fixed std that
    were measured once on the training set and are stored in the config, so a louder input
    gives a larger log-spectrogram and ``--gain`` reaches the encoder. ``"clip"`` is the public
    code's per-clip z-score, which removes a pure gain (only the 1e-7 floor and the ±1 clip let
    level through); it is kept for comparison.

    Paper settings: ``seconds=10, n_fft=512, hop=159, n_mels=0`` (257 x 1004). The CPU default
    uses ``hop=320, n_mels=64`` (64 x 249 for 5 s): about 16x fewer input pixels for the
    ResNet-18, the same frequency range and the same level behaviour.

Feature convention: ``forward`` returns raw D-dim features; ``embed`` returns them unit-norm
(the space the InfoNCE alignment and the generators' conditioning use).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE_ARCHITECTURE = "scene-image-encoder"
IMAGE_TASK = "scene-image-embedding"
AUDIO_ARCHITECTURE = "scene-audio-encoder"
AUDIO_TASK = "scene-audio-embedding"


def _from_dict(cls, d: dict):
    """Dataclass from a (JSON) dict: unknown keys ignored, lists back to tuples."""
    out = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            out[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**out)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------
# Building blocks


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)), inplace=True)


def _stages(widths, blocks, cin: int) -> nn.Sequential:
    layers = []
    for i, (w, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            layers.append(BasicBlock(cin, w, stride=(1 if i == 0 else 2) if j == 0 else 1))
            cin = w
    return nn.Sequential(*layers)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # zero-init the last BN of each residual branch: blocks start as identities
    for m in module.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


# --------------------------------------------------------------------------------------------
# Image encoder f_V


@dataclass
class ImageEncoderConfig:
    image_size: int = 64  # 32, 64 or 128
    widths: tuple = (32, 64, 128, 256)
    blocks: tuple = (1, 1, 1, 1)
    feature_dim: int = 256  # D
    proj_dim: int = 128  # SimCLR projection head output (training only)
    mean: tuple = (0.5, 0.5, 0.5)  # input normalisation of [0, 1] images
    std: tuple = (0.25, 0.25, 0.25)

    @classmethod
    def for_size(cls, size: int, preset: str = "cpu", **overrides) -> "ImageEncoderConfig":
        """``cpu``: ~1.2 M params; ``paper``: ResNet-18 widths and depth, D = 512; ``tiny``: tests."""
        if size not in (32, 64, 128):
            raise ValueError(f"image encoder sizes are 32, 64 or 128, not {size}")
        base = {"cpu": {}, "paper": dict(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), feature_dim=512),
                "tiny": dict(widths=(8, 16, 16, 32), blocks=(1, 1, 1, 1), feature_dim=32, proj_dim=16)}[preset]
        return cls(image_size=size, **{**base, **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "ImageEncoderConfig":
        return _from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        w0 = cfg.widths[0]
        stride = 2 if cfg.image_size >= 64 else 1
        stem = [nn.Conv2d(3, w0, 3, stride, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True)]
        if cfg.image_size >= 128:
            stem.append(nn.MaxPool2d(2))
        self.stem = nn.Sequential(*stem)
        self.body = _stages(cfg.widths, cfg.blocks, w0)
        self.fc = nn.Linear(cfg.widths[-1], cfg.feature_dim)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        _init(self)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC / NCHW or float [0, 1] NCHW at any size → normalised NCHW at image_size."""
        x = images
        if x.dtype == torch.uint8:
            if x.shape[-1] == 3 and x.shape[1] != 3:
                x = x.permute(0, 3, 1, 2)
            x = x.float() / 255.0
        s = self.cfg.image_size
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Globally pooled last-stage activations (B, widths[-1])."""
        return self.body(self.stem(self.prepare(images))).mean((2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw features (B, D) of [0, 1] float NCHW (or uint8) images."""
        return self.fc(self.pooled(images))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Unit-norm features z_V, evaluated in batches without gradients."""
        out = [F.normalize(self(images[i:i + batch]).float(), dim=-1) for i in range(0, len(images), batch)]
        return torch.cat(out, 0)

    @classmethod
    def from_state(cls, config: dict, state: dict, device=None) -> "ImageEncoder":
        m = cls(ImageEncoderConfig.from_dict(config))
        m.load_state_dict(state)
        return (m.to(device) if device is not None else m).eval()

    @classmethod
    def from_registry(cls, folder, device=None) -> "ImageEncoder":
        return cls.from_state(folder.config, folder.tensors("model.safetensors"), device)


class ProjectionHead(nn.Module):
    """SimCLR head g(h): Linear-BN-ReLU-Linear (training only)."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
                                 nn.Linear(dim, out))

    def forward(self, h):
        return self.net(h)


# --------------------------------------------------------------------------------------------
# Audio front end


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """(n_freqs, n_mels) triangular filters on the HTK mel scale (peak 1, no area normalisation)."""
    f_max = f_max or sample_rate / 2

    def hz_to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    lo, mid, hi = hz[:-2], hz[1:-1], hz[2:]
    up = (freqs[:, None] - lo[None]) / (mid - lo)[None]
    down = (hi[None] - freqs[:, None]) / (hi - mid)[None]
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    # a filter narrower than the bin spacing would be empty: give it its nearest bin
    empty = fb.sum(0) == 0
    if empty.any():
        idx = torch.argmin((freqs[:, None] - mid[None]).abs(), 0)
        fb[idx[empty], torch.nonzero(empty).flatten()] = 1.0
    return fb.float()


@dataclass
class AudioEncoderConfig:
    # front end
    sample_rate: int = 16000
    seconds: float = 5.0
    n_fft: int = 512
    hop: int = 320
    n_mels: int = 64  # 0: linear STFT bins (n_fft // 2 + 1), as in the paper
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-7
    clip: float = 1.0  # waveform clipped to ±clip before the STFT
    norm: str = "global"  # "global": fixed mean/std below (keeps level); "clip": per-clip z-score
    norm_mean: float = 0.0  # measured on the training set (soundsight_train.scene_audio_encoder)
    norm_std: float = 1.0
    # ResNet-18 layout
    widths: tuple = (32, 64, 128, 256)
    blocks: tuple = (2, 2, 2, 2)
    feature_dim: int = 256  # D, the image encoder's

    @classmethod
    def preset(cls, name: str = "cpu", **overrides) -> "AudioEncoderConfig":
        """``cpu``: log-mel 64 x 249, widths /2 (2.8 M params); ``paper``: 257-bin STFT, hop 159,
        10 s, ResNet-18 widths (64..512); ``tiny``: tests."""
        base = {"cpu": {},
                "paper": dict(seconds=10.0, hop=159, n_mels=0, widths=(64, 128, 256, 512), feature_dim=512),
                "tiny": dict(hop=512, n_mels=16, widths=(4, 8, 8, 16), blocks=(1, 1, 1, 1), feature_dim=32)}[name]
        return cls(**{**base, **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "AudioEncoderConfig":
        return _from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def n_bins(self) -> int:
        return self.n_mels if self.n_mels > 0 else self.n_fft // 2 + 1

    @property
    def n_frames(self) -> int:
        return 1 + (self.n_samples - self.n_fft) // self.hop


def fit_length(wave: torch.Tensor, n: int) -> torch.Tensor:
    """(B, T) → (B, n): tile shorter input, crop longer input from the start."""
    t = wave.shape[-1]
    if t == 0:
        raise ValueError("empty waveform")
    if t < n:
        wave = wave.repeat(1, math.ceil(n / t))
    return wave[..., :n]


class AudioFrontEnd(nn.Module):
    """Waveform (B, T) float at ``sample_rate`` → normalised log-spectrogram (B, 1, bins, frames)."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        if cfg.n_mels > 0:
            fb = mel_filterbank(cfg.n_fft // 2 + 1, cfg.n_mels, cfg.sample_rate, cfg.f_min, cfg.f_max)
            self.register_buffer("fb", fb, persistent=False)
        else:
            self.fb = None

    def log_spec(self, wave: torch.Tensor) -> torch.Tensor:
        """Un-normalised log power spectrogram (B, bins, frames)."""
        cfg = self.cfg
        if wave.dim() == 1:
            wave = wave[None]
        x = fit_length(wave.float(), cfg.n_samples).clamp(-cfg.clip, cfg.clip)
        spec = torch.stft(x, cfg.n_fft, cfg.hop, window=self.window, center=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (B, n_fft//2+1, frames)
        if self.fb is not None:
            power = torch.einsum("bft,fm->bmt", power, self.fb)
        return torch.log(power + cfg.log_floor)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):  # the front end runs in fp32
            s = self.log_spec(wave)
            if self.cfg.norm == "clip":  # the public code's per-clip z-score (removes level)
                s = (s - s.mean((1, 2), keepdim=True)) / (s.std((1, 2), keepdim=True) + 1e-5)
            elif self.cfg.norm == "global":
                s = (s - self.cfg.norm_mean) / self.cfg.norm_std
            else:
                raise ValueError(f"unknown normalisation {self.cfg.norm!r} (global or clip)")
        return s[:, None]

    @torch.no_grad()
    def statistics(self, waves: torch.Tensor, batch: int = 64) -> tuple[float, float]:
        """Global mean and std of the log-spectrogram over a set of training clips."""
        total, sq, n = 0.0, 0.0, 0
        for i in range(0, len(waves), batch):
            s = self.log_spec(waves[i:i + batch]).double()
            total += float(s.sum())
            sq += float(s.square().sum())
            n += s.numel()
        mean = total / n
        return mean, math.sqrt(max(sq / n - mean * mean, 1e-12))


# --------------------------------------------------------------------------------------------
# Audio encoder f_A


class AudioEncoder(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.frontend = AudioFrontEnd(cfg)
        w0 = cfg.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(1, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.body = _stages(cfg.widths, cfg.blocks, w0)
        self.fc = nn.Linear(cfg.widths[-1], cfg.feature_dim)
        _init(self)

    def forward_spec(self, spec: torch.Tensor) -> torch.Tensor:
        """Raw features (B, D) of normalised log-spectrograms (B, 1, bins, frames)."""
        x = self.body(self.stem(spec))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Raw features (B, D) of waveforms (B, T) at ``cfg.sample_rate``."""
        return self.forward_spec(self.frontend(wave))

    @torch.no_grad()
    def embed(self, wave: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """Unit-norm features z_A, in batches without gradients."""
        out = [F.normalize(self(wave[i:i + batch]).float(), dim=-1) for i in range(0, len(wave), batch)]
        return torch.cat(out, 0)

    @classmethod
    def from_state(cls, config: dict, state: dict, device=None) -> "AudioEncoder":
        m = cls(AudioEncoderConfig.from_dict(config))
        m.load_state_dict(state)
        return (m.to(device) if device is not None else m).eval()

    @classmethod
    def from_registry(cls, folder, device=None) -> "AudioEncoder":
        return cls.from_state(folder.config, folder.tensors("model.safetensors"), device)
