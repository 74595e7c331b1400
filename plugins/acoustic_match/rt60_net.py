"""A learned blind RT60 estimator: reverberant speech -> speech-band RT60 (seconds).

Input: a waveform at 16 kHz, (B, 1, T) or (B, T), any length >= 0.5 s. Features: log-mel
spectrogram (FFT 512, hop 128, 48 mel bands 50 Hz .. 8 kHz; 32 ms / 8 ms) relative to the log
of the clip's mean mel power (the estimate must not depend on the level), in natural-log units
divided by 5 and clamped at -4 (87 dB below the mean: digital silence and padding look alike). Network: four conv
blocks (3 x 3 conv, GroupNorm, ReLU, 2 x 2 max-pool; widths w, 2w, 4w, 4w), then mean and max
over time and the remaining frequency axis, a small MLP, and the output is log(RT60) (RT60s
spread over a decade; errors are relative). Trained on the rooms dataset's seen rooms with the
target ``rt60_speech`` (Schroeder T30 on 177 Hz .. 5.7 kHz), see ``train/rt60_estimator.py``.

Only torch is imported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn

ARCHITECTURE = "rt60-estimator"
TASK = "rt60-estimation"


@dataclass
class RT60Config:
    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 128
    n_mels: int = 48
    f_min: float = 50.0
    f_max: float = 8000.0
    width: int = 8
    hidden: int = 64

    @classmethod
    def preset(cls, name: str, **overrides) -> "RT60Config":
        presets = {"tiny": dict(width=4, hidden=16, n_mels=32), "cpu": dict()}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "RT60Config":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


def _hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """HTK-scale triangular filters, (n_mels, n_fft // 2 + 1), each normalised to unit area."""
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1)
    m = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    hz = 700.0 * (10 ** (m / 2595.0) - 1.0)
    lo, ce, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lo) / (ce - lo)
    down = (hi - freqs[None]) / (hi - ce)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    return fb / fb.sum(dim=1, keepdim=True).clamp_min(1e-8)


def mel_power(wave: torch.Tensor, fb: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(B, T) -> (B, n_mels, frames) mel power."""
    win = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, n_fft, hop, window=win, center=True, return_complex=True)
    return torch.matmul(fb.to(wave.dtype), spec.real ** 2 + spec.imag ** 2)


class RT60Net(nn.Module):
    def __init__(self, cfg: RT60Config):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("fb", mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max),
                             persistent=False)
        w = cfg.width
        chans = [1, w, 2 * w, 4 * w, 4 * w]
        blocks = []
        for a, b in zip(chans[:-1], chans[1:]):
            blocks += [nn.Conv2d(a, b, 3, padding=1), nn.GroupNorm(min(8, b // 2) if b >= 4 else 1, b), nn.ReLU(),
                       nn.MaxPool2d(2)]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Linear(2 * chans[-1], cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))
        # start near the dataset's typical RT60 (~0.7 s)
        nn.init.constant_(self.head[-1].bias, math.log(0.7))

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_state(cls, config: dict, state: dict, device=None) -> "RT60Net":
        model = cls(RT60Config.from_dict(config))
        model.load_state_dict(state)
        if device is not None:
            model = model.to(device)
        return model.eval()

    @classmethod
    def from_registry(cls, folder, device=None) -> "RT60Net":
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return cls.from_state(folder.config, folder.tensors("model.safetensors", device="cpu"), dev)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) or (B, T) -> normalised log-mel (B, n_mels, frames)."""
        if wave.dim() == 3:
            wave = wave[:, 0]
        p = mel_power(wave.float(), self.fb, self.cfg.n_fft, self.cfg.hop)
        # level invariance: power relative to the clip's mean mel power (set by its loud parts,
        # so silence or padding around the speech barely moves it); the floor is relative too
        ref = p.flatten(1).mean(dim=1).clamp_min(1e-20)[:, None, None]
        return (torch.log(p / ref + 1e-9) / 5.0).clamp_min(-4.0)

    def from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel (B, n_mels, frames) -> log RT60 (B,)."""
        h = self.body(feats[:, None]).flatten(2)  # (B, C, F' T')
        h = torch.cat([h.mean(-1), h.amax(-1)], dim=1)
        return self.head(h)[:, 0]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) or (B, T) -> log RT60 (B,)."""
        return self.from_features(self.features(wave))

    @torch.no_grad()
    def estimate(self, wave: torch.Tensor) -> torch.Tensor:
        """RT60 in seconds, (B,)."""
        return torch.exp(self.forward(wave))
