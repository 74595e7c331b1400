"""AViTAR (Chen et al., CVPR 2022, "Visual Acoustic Matching"): speech + a picture of a room ->
the speech as if recorded in that room. Written from the paper's description (no code from the
authors' repository).

Generator (``AViTAR``)
    - waveform encoder: conv1d (kernel 7) then one stage per stride (8, 4, 2, 2): a residual unit
      (dilated convs) and a strided conv1d (kernel 2 x stride) that doubles the channels; weight
      norm everywhere; total hop 128 samples (8 ms at 16 kHz); a 1x1 conv to the model width;
    - image encoder: a ResNet-18-shaped network (stem conv 7 / 2 + max-pool, four stages of two
      basic blocks, widths w, 2w, 4w, 8w) defined here and trained from scratch, GroupNorm instead
      of BatchNorm (batches hold few rooms, and the output must not depend on the batch); its
      last feature map is the set of image patches (4 x 4 at 128 px) with learned absolute
      positions;
    - conformer blocks (macaron feed-forwards, self-attention, depthwise conv module) with the
      cross-modal attention layer after the first feed-forward: queries from audio frames,
      keys/values from the image patches (softmax(Q K^T / sqrt(d)) V, multi-head);
    - decoder: transposed conv1d mirroring the encoder (strides 2, 2, 4, 8), adding the encoder's
      activations at each resolution (skip connections), residual units, a last conv1d to one
      channel.
    - Output. ``residual=True`` (what we train and ship): wet = dry + decoder output, i.e. the
      network adds the room's reverberation to the direct sound instead of re-synthesising the
      whole waveform; it starts from "output = input" and trains in far fewer steps on a CPU.
    - ``use_image=False`` is the no-image ablation: the same model with the image patches
      replaced by a learned constant set of tokens.
    - Levels. ``forward`` scales each input to RMS 0.05 (-26 dBFS, the training level) and the
      output back by the same factor, so the model sees one level whatever the caller passes.

``match(wave, image)``: wave float (B, 1, T) at ``sample_rate``, image float (B, 3, S, S) in
[0, 1] (S = ``image_size``); returns (B, 1, T). Any T: padded internally to the hop (128).

Discriminators and losses live in ``discriminators.py``. Only torch is imported here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

ARCHITECTURE = "avitar"
TASK = "acoustic-match"
#: the level the model works at (RMS of the training speech, -26 dBFS)
WORK_RMS = 0.05


# --------------------------------------------------------------------------------------------
# Config


@dataclass
class AViTARConfig:
    sample_rate: int = 16000
    image_size: int = 128  # square RGB input; the rooms dataset renders 128 px
    ngf: int = 8  # encoder's first width; doubles at each of the four strided stages
    ratios: tuple = (8, 4, 2, 2)  # encoder strides (decoder mirrors them)
    d_model: int = 96  # conformer width
    layers: int = 2  # conformer blocks
    heads: int = 4
    ff_mult: int = 2
    conv_kernel: int = 15  # conformer depthwise conv (frames of 8 ms)
    dropout: float = 0.0
    img_width: int = 8  # ResNet-18 base width (paper: 64)
    img_blocks: tuple = (2, 2, 2, 2)
    use_image: bool = True
    residual: bool = True
    max_frames: int = 4096  # longest sequence (frames) with sinusoidal positions precomputed

    @classmethod
    def preset(cls, name: str, **overrides) -> "AViTARConfig":
        """``tiny`` (tests: ~0.1 M parameters), ``cpu`` (what we ship: 0.78 M parameters, 3 MB;
        the encoder/decoder at 16 kHz dominate the cost, so ngf stays at 8), ``paper``
        (the public configuration: conformer 512-d x 4, 8 heads, FF x4, kernel 31, ngf 32,
        ResNet-18 at width 64 on 224 px)."""
        presets = {
            "tiny": dict(image_size=32, ngf=4, d_model=32, layers=1, heads=2, ff_mult=2, conv_kernel=7,
                         img_width=4, img_blocks=(1, 1, 1, 1)),
            "cpu": dict(),
            "paper": dict(image_size=224, ngf=32, d_model=512, layers=4, heads=8, ff_mult=4, conv_kernel=31,
                          img_width=64, dropout=0.1),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "AViTARConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("ratios", "img_blocks"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = list(self.ratios)
        d["img_blocks"] = list(self.img_blocks)
        return d

    @property
    def hop(self) -> int:
        return int(math.prod(self.ratios))


# --------------------------------------------------------------------------------------------
# Waveform encoder / decoder


def _wconv(cin, cout, k, stride=1, dilation=1, groups=1):
    pad = (k - 1) * dilation // 2
    return weight_norm(nn.Conv1d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, groups=groups))


class ResUnit(nn.Module):
    """Two dilated conv1d (kernel 3, dilations 1 and 3) with a residual connection."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1 = _wconv(ch, ch, 3, dilation=1)
        self.c2 = _wconv(ch, ch, 3, dilation=3)

    def forward(self, x):
        y = self.c1(F.leaky_relu(x, 0.2))
        y = self.c2(F.leaky_relu(y, 0.2))
        return x + y


class WaveEncoder(nn.Module):
    def __init__(self, cfg: AViTARConfig):
        super().__init__()
        ch = cfg.ngf
        self.stem = _wconv(1, ch, 7)
        self.stages = nn.ModuleList()
        self.widths = [ch]
        for r in cfg.ratios:
            self.stages.append(nn.Sequential(
                ResUnit(ch), nn.LeakyReLU(0.2),
                weight_norm(nn.Conv1d(ch, ch * 2, 2 * r, stride=r, padding=r // 2 + r % 2))))
            ch *= 2
            self.widths.append(ch)
        self.proj = _wconv(ch, cfg.d_model, 3)

    def forward(self, x) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, 1, T) with T a multiple of the hop -> (B, d, T / hop), skips at each resolution."""
        h = self.stem(x)
        skips = [h]
        for st in self.stages:
            h = st(h)
            skips.append(h)
        return self.proj(F.leaky_relu(h, 0.2)), skips


class WaveDecoder(nn.Module):
    def __init__(self, cfg: AViTARConfig, widths: list[int]):
        super().__init__()
        self.proj = _wconv(cfg.d_model, widths[-1], 3)
        self.ups = nn.ModuleList()
        self.res = nn.ModuleList()
        for i, r in enumerate(reversed(cfg.ratios)):
            cin, cout = widths[-1 - i], widths[-2 - i]
            self.ups.append(weight_norm(nn.ConvTranspose1d(cin, cout, 2 * r, stride=r, padding=r // 2 + r % 2,
                                                           output_padding=r % 2)))
            self.res.append(ResUnit(cout))
        self.out = _wconv(widths[0], 1, 7)

    def forward(self, z, skips: list[torch.Tensor]) -> torch.Tensor:
        h = self.proj(z) + skips[-1]
        for i, (up, res) in enumerate(zip(self.ups, self.res)):
            h = up(F.leaky_relu(h, 0.2))
            h = res(h + skips[-2 - i])
        return self.out(F.leaky_relu(h, 0.2))


# --------------------------------------------------------------------------------------------
# Image encoder (ResNet-18 shape, trained from scratch)


def _gn(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch // 2) if ch >= 4 else 1, ch)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _gn(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _gn(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _gn(cout))

    def forward(self, x):
        y = F.relu(self.n1(self.c1(x)))
        y = self.n2(self.c2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ImageEncoder(nn.Module):
    """(B, 3, S, S) in [0, 1] -> patch features (B, (S/32)^2, d_model) with positions."""

    def __init__(self, cfg: AViTARConfig):
        super().__init__()
        w = cfg.img_width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), _gn(w), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], w
        for i, n in enumerate(cfg.img_blocks):
            cout = w * 2 ** i
            for b in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (b == 0 and i > 0) else 1))
                cin = cout
        self.body = nn.Sequential(*layers)
        side = max(1, math.ceil(cfg.image_size / 32))
        self.patches = side * side
        self.proj = nn.Linear(cin, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(1, self.patches, cfg.d_model) * 0.02)
        # ImageNet statistics are as good as any for centring RGB in [0, 1]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, img):
        f = self.body(self.stem((img - self.mean) / self.std))  # (B, C, h, w)
        f = f.flatten(2).transpose(1, 2)  # (B, h*w, C)
        f = self.proj(f)
        if f.shape[1] == self.patches:
            f = f + self.pos
        return f


# --------------------------------------------------------------------------------------------
# Conformer with cross-modal attention


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, dtype=torch.float32)[None, :]
    ang = pos / torch.pow(10000.0, i / dim)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : dim // 2])
    return pe


class FeedForward(nn.Module):
    def __init__(self, d, mult, dropout):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d * mult), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(d * mult, d), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class ConvModule(nn.Module):
    def __init__(self, d, kernel, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.gn = nn.GroupNorm(1, d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):  # (B, L, d)
        y = self.norm(x).transpose(1, 2)
        y = F.glu(self.pw1(y), dim=1)
        y = F.silu(self.gn(self.dw(y)))
        return self.drop(self.pw2(y).transpose(1, 2))


class ConformerBlock(nn.Module):
    """FF/2 -> cross-modal attention (audio queries, image keys/values) -> self-attention ->
    conv module -> FF/2 -> LayerNorm, each a residual branch."""

    def __init__(self, cfg: AViTARConfig):
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ff_mult, cfg.dropout)
        self.x_norm = nn.LayerNorm(d)
        self.x_attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.sa_norm = nn.LayerNorm(d)
        self.sa = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(d, cfg.ff_mult, cfg.dropout)
        self.out_norm = nn.LayerNorm(d)

    def forward(self, x, img, key_padding_mask=None):
        x = x + 0.5 * self.ff1(x)
        q = self.x_norm(x)
        x = x + self.x_attn(q, img, img, need_weights=False)[0]
        h = self.sa_norm(x)
        x = x + self.sa(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        x = x + self.conv(x)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)


# --------------------------------------------------------------------------------------------
# The generator


class AViTAR(nn.Module):
    def __init__(self, cfg: AViTARConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = WaveEncoder(cfg)
        self.decoder = WaveDecoder(cfg, self.encoder.widths)
        self.image_encoder = ImageEncoder(cfg) if cfg.use_image else None
        side = max(1, math.ceil(cfg.image_size / 32))
        # the no-image ablation's stand-in for the patches (unused when there is an image)
        self.null_image = None if cfg.use_image else nn.Parameter(torch.randn(1, side * side, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.layers))
        self.register_buffer("pe", sinusoidal_positions(cfg.max_frames, cfg.d_model), persistent=False)
        if cfg.residual:
            # start at "output = input": the added reverberation begins at zero
            nn.init.zeros_(self.decoder.out.parametrizations.weight.original0)
            nn.init.zeros_(self.decoder.out.bias)

    # -- properties the command relies on ---------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def hop(self) -> int:
        return self.cfg.hop

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def from_state(cls, config: dict, state: dict, device=None) -> "AViTAR":
        model = cls(AViTARConfig.from_dict(config))
        model.load_state_dict(state)
        if device is not None:
            model = model.to(device)
        return model.eval()

    @classmethod
    def from_registry(cls, folder, device=None) -> "AViTAR":
        """Load from a verified ``soundsight.registry.ModelFolder`` (safetensors only)."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return cls.from_state(folder.config, folder.tensors("model.safetensors", device="cpu"), dev)

    # -- forward ----------------------------------------------------------------------------

    def image_tokens(self, image: torch.Tensor | None, batch: int) -> torch.Tensor:
        if self.image_encoder is None or image is None:
            if self.null_image is None:
                raise ValueError("this AViTAR needs an image")
            return self.null_image.expand(batch, -1, -1)
        if image.shape[-1] != self.cfg.image_size or image.shape[-2] != self.cfg.image_size:
            image = F.interpolate(image, size=(self.cfg.image_size, self.cfg.image_size), mode="bilinear",
                                  align_corners=False, antialias=True)
        return self.image_encoder(image)

    def forward(self, wave: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """wave (B, 1, T), image (B, 3, S, S) in [0, 1] (ignored by the no-image ablation) ->
        (B, 1, T)."""
        if wave.dim() != 3 or wave.shape[1] != 1:
            raise ValueError(f"wave must be (B, 1, T), got {tuple(wave.shape)}")
        B, _, T = wave.shape
        hop = self.cfg.hop
        Tp = max(hop, -(-T // hop) * hop)
        rms = wave.float().pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-5)
        gain = WORK_RMS / rms
        x = F.pad(wave * gain, (0, Tp - T))
        z, skips = self.encoder(x)
        L = z.shape[-1]
        if L > self.pe.shape[0]:
            pe = sinusoidal_positions(L, self.cfg.d_model).to(z.device, z.dtype)
        else:
            pe = self.pe[:L].to(z.dtype)
        h = z.transpose(1, 2) + pe
        img = self.image_tokens(image, B).to(h.dtype)
        for blk in self.blocks:
            h = blk(h, img)
        y = self.decoder(h.transpose(1, 2), skips)
        if self.cfg.residual:
            y = x + y
        return y[..., :T] / gain

    @torch.no_grad()
    def match(self, wave: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """Inference: (B, 1, T) speech + (B, 3, S, S) room picture -> (B, 1, T) in that room."""
        return self.forward(wave, image)


def build(cfg: AViTARConfig, device=None) -> AViTAR:
    m = AViTAR(cfg)
    return m.to(device) if device is not None else m


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
