"""Sound2Sight (Chatterjee & Cherian, ECCV 2020): audio-conditioned stochastic video forecasting.

Written from the paper's description (no code from the authors' repository).

Generation side (``Sound2Sight``)
    - frame encoder f: DCGAN-style conv + BatchNorm2d + LeakyReLU (48 px: 48→24→12→6→3→1,
      64 px: 64→32→16→8→4→1) to a ``g_dim`` (128) embedding, with skip connections;
    - frame predictor: 2-layer LSTM (hidden 256) over [f(X_t-1), z_t] → embedding of X_t;
    - decoder g: transposed convs mirroring f, concatenating the encoder skips (from the last
      seen frame for predicted frames), sigmoid output;
    - multimodal stochastic network: prior LSTM_phi(O^A_t, M^V_t-1) and posterior
      LSTM_psi(O^A_t, Q^V_t) (1 layer, hidden 256, input 128 audio + 128 visual) → mu, logvar of
      z_t (10-d). O^A comes from an audio transformer over per-frame STFT magnitudes (audio up to
      frame t+k-1), M^V from a visual transformer over the frames seen/generated so far, Q^V from
      a separate visual transformer over the real frames up to t (posterior only, training).
      Transformers: 1 layer, 4 heads, 128-d feed-forward, sinusoidal positions, causal.
    - ``use_audio=False`` is the paper's no-audio ablation: same networks, the audio input (and
      the audio transformer) removed; the stochastic LSTMs then see only the 128-d visual part.

Discriminator (``MultimodalDiscriminator``, training only)
    image term (is this frame real?), motion-dynamics term (a ConvLSTM over the generated frame
    in its real neighbourhood: R past frames and k future frames) and audio-alignment term (does
    this frame match this audio chunk? real frames with mismatched audio are negatives too).

Inference (``Sound2Sight.sample``) expands the batch to B*K once and runs the recurrence a single
time without gradients: seen frames, audio features and the warm-up of the prior are computed
once per clip; the visual transformer runs incrementally with a key/value cache, so no step
re-encodes the history.

Only torch is imported; devices come from the caller (``torch.device``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURE = "sound2sight"
TASK = "frame-forecast"


# --------------------------------------------------------------------------------------------
# Config


@dataclass
class Sound2SightConfig:
    image_size: int = 48  # 48 or 64
    channels: int = 1
    nf: int = 64  # encoder/decoder base width (DCGAN: nf, 2nf, 4nf, 8nf); paper 64
    g_dim: int = 128  # frame embedding
    z_dim: int = 10
    rnn_size: int = 256
    predictor_layers: int = 2
    prior_layers: int = 1
    posterior_layers: int = 1
    use_audio: bool = True
    # audio: per-frame chunks, STFT magnitudes
    sample_rate: int = 4400
    fps: int = 10
    audio_chunk: int = 440  # samples per frame
    stft_n_fft: int = 440
    stft_hop: int = 440
    audio_lookahead: int = 1  # k: O^A_t sees audio chunks up to t + (k - 1)
    # transformers
    embed_dim: int = 128
    tf_heads: int = 4
    tf_ff: int = 128
    tf_layers: int = 1
    tf_dropout: float = 0.1
    max_len: int = 512
    # skips from the last seen frame (SVG default) or from the previous (generated) frame
    last_frame_skip: bool = False
    # protocol defaults (M3SO-NB): 5 seen, 15 predicted in training, 25 at test
    n_past: int = 5
    n_future: int = 15
    n_eval: int = 25
    # discriminator
    d_nf: int = 64
    d_hidden: int = 64  # ConvLSTM channels
    motion_past: int = 2  # R
    motion_ahead: int = 1  # k

    @classmethod
    def for_size(cls, size: int, **overrides) -> "Sound2SightConfig":
        """Paper-sized config for 48 px (M3SO) or 64 px (AudioSet-Drums, YouTube-Painting)."""
        if size not in (48, 64):
            raise ValueError(f"Sound2Sight configs exist for 48 and 64 px, not {size}")
        base: dict[str, Any] = {"image_size": size}
        if size == 64:
            base.update(channels=3, fps=30, n_past=15, n_future=15, n_eval=30)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict) -> "Sound2SightConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def stft_bins(self) -> int:
        frames = 1 + (self.audio_chunk - self.stft_n_fft) // self.stft_hop
        return frames * (self.stft_n_fft // 2 + 1)


# --------------------------------------------------------------------------------------------
# Building blocks


def _conv(nin, nout, k=4, s=2, p=1, bn=True):
    layers = [nn.Conv2d(nin, nout, k, s, p, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(nout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _upconv(nin, nout, k=4, s=2, p=1):
    return nn.Sequential(nn.ConvTranspose2d(nin, nout, k, s, p, bias=False), nn.BatchNorm2d(nout),
                         nn.LeakyReLU(0.2, inplace=True))


def _last_kernel(size: int) -> int:
    if size not in (48, 64):
        raise ValueError(f"image_size must be 48 or 64, got {size}")
    return size // 16  # 3 for 48 px, 4 for 64 px


class FrameEncoder(nn.Module):
    """DCGAN encoder: 4 stride-2 conv blocks, then a valid conv to a g_dim vector (tanh)."""

    def __init__(self, cfg: Sound2SightConfig):
        super().__init__()
        nf, k = cfg.nf, _last_kernel(cfg.image_size)
        self.c1 = _conv(cfg.channels, nf)
        self.c2 = _conv(nf, nf * 2)
        self.c3 = _conv(nf * 2, nf * 4)
        self.c4 = _conv(nf * 4, nf * 8)
        self.c5 = nn.Sequential(nn.Conv2d(nf * 8, cfg.g_dim, k, 1, 0), nn.BatchNorm2d(cfg.g_dim), nn.Tanh())

    def forward(self, x):
        h1 = self.c1(x)
        h2 = self.c2(h1)
        h3 = self.c3(h2)
        h4 = self.c4(h3)
        h5 = self.c5(h4)
        return h5.flatten(1), [h1, h2, h3, h4]


class FrameDecoder(nn.Module):
    """Mirror of the encoder; each block concatenates the matching encoder skip."""

    def __init__(self, cfg: Sound2SightConfig):
        super().__init__()
        nf, k = cfg.nf, _last_kernel(cfg.image_size)
        self.upc1 = _upconv(cfg.g_dim, nf * 8, k, 1, 0)
        self.upc2 = _upconv(nf * 8 * 2, nf * 4)
        self.upc3 = _upconv(nf * 4 * 2, nf * 2)
        self.upc4 = _upconv(nf * 2 * 2, nf)
        self.upc5 = nn.ConvTranspose2d(nf * 2, cfg.channels, 4, 2, 1)

    def forward(self, h, skip):
        d1 = self.upc1(h[:, :, None, None])
        d2 = self.upc2(torch.cat([d1, skip[3]], 1))
        d3 = self.upc3(torch.cat([d2, skip[2]], 1))
        d4 = self.upc4(torch.cat([d3, skip[1]], 1))
        return torch.sigmoid(self.upc5(torch.cat([d4, skip[0]], 1)))


class StackedLSTM(nn.Module):
    """Linear embedding → stacked LSTMCells with explicit state → head (SVG-style)."""

    def __init__(self, nin, hidden, layers):
        super().__init__()
        self.embed = nn.Linear(nin, hidden)
        self.cells = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))
        self.hidden = hidden

    def init_state(self, batch, device, dtype=torch.float32):
        z = torch.zeros(batch, self.hidden, device=device, dtype=dtype)
        return [(z, z) for _ in self.cells]

    def run(self, x, state):
        h = self.embed(x)
        new = []
        for cell, s in zip(self.cells, state):
            hc = cell(h, s)
            new.append(hc)
            h = hc[0]
        return h, new


class PredictorLSTM(StackedLSTM):
    def __init__(self, nin, hidden, nout, layers):
        super().__init__(nin, hidden, layers)
        self.out = nn.Sequential(nn.Linear(hidden, nout), nn.Tanh())

    def forward(self, x, state):
        h, state = self.run(x, state)
        return self.out(h), state


class GaussianLSTM(StackedLSTM):
    def __init__(self, nin, hidden, z_dim, layers):
        super().__init__(nin, hidden, layers)
        self.mu = nn.Linear(hidden, z_dim)
        self.logvar = nn.Linear(hidden, z_dim)

    def forward(self, x, state):
        h, state = self.run(x, state)
        return self.mu(h), self.logvar(h), state


def sinusoidal_positions(length: int, dim: int, device=None, offset: int = 0) -> torch.Tensor:
    pos = torch.arange(offset, offset + length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


class CausalTransformerLayer(nn.Module):
    """Post-norm transformer encoder layer (as nn.TransformerEncoderLayer) with a causal mask
    and an incremental ``step`` that reuses cached keys/values."""

    def __init__(self, d, heads, ff, dropout):
        super().__init__()
        assert d % heads == 0
        self.h, self.dh = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ff, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def _split(self, x):  # (B, L, d) -> (B, h, L, dh)
        b, l, _ = x.shape
        return x.view(b, l, self.h, self.dh).transpose(1, 2)

    def _finish(self, x, att):
        b, _, l, _ = att.shape
        att = att.transpose(1, 2).reshape(b, l, self.h * self.dh)
        x = self.norm1(x + self.drop(self.proj(att)))
        return self.norm2(x + self.drop(self.ff(x)))

    def forward(self, x):
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, -1))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        return self._finish(x, att), (k, v)

    def step(self, x, cache):
        """x: (B, 1, d) — the newest position; cache: (k, v) of all earlier positions."""
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, -1))
        if cache is not None:
            k = torch.cat([cache[0], k], 2)
            v = torch.cat([cache[1], v], 2)
        att = F.scaled_dot_product_attention(q, k, v)  # the newest position sees everything
        return self._finish(x, att), (k, v)


class SequenceTransformer(nn.Module):
    """Per-step features → linear → + positions → causal transformer layers."""

    def __init__(self, nin, cfg: Sound2SightConfig):
        super().__init__()
        self.inp = nn.Linear(nin, cfg.embed_dim)
        self.layers = nn.ModuleList(
            CausalTransformerLayer(cfg.embed_dim, cfg.tf_heads, cfg.tf_ff, cfg.tf_dropout) for _ in range(cfg.tf_layers)
        )
        self.dim = cfg.embed_dim

    def forward(self, x):
        """x: (B, L, nin) → (B, L, d), caches (one (k, v) per layer)."""
        h = self.inp(x) + sinusoidal_positions(x.shape[1], self.dim, x.device).to(x.dtype)
        caches = []
        for layer in self.layers:
            h, c = layer(h)
            caches.append(c)
        return h, caches

    def step(self, x, pos: int, caches):
        """x: (B, nin) at position ``pos``; returns (B, d), updated caches."""
        h = self.inp(x[:, None]) + sinusoidal_positions(1, self.dim, x.device, offset=pos).to(x.dtype)
        new = []
        for layer, c in zip(self.layers, caches):
            h, c = layer.step(h, c)
            new.append(c)
        return h[:, 0], new


def stft_features(chunks: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(..., chunk) per-frame audio → (..., bins) log(1 + |STFT|) of each chunk."""
    lead = chunks.shape[:-1]
    x = chunks.reshape(-1, chunks.shape[-1]).float()
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, hop_length=hop, window=window, center=False, return_complex=True).abs()
    return torch.log1p(spec).transpose(1, 2).reshape(*lead, -1)


def frame_chunks(waveform: torch.Tensor, n_frames: int, chunk: int) -> torch.Tensor:
    """Mono audio at the model's rate, (n,) or (B, n) → per-frame chunks (B, n_frames, chunk);
    chunk t covers frame t's time span. Short audio is padded with silence, long audio cut."""
    w = waveform if waveform.dim() == 2 else waveform[None]
    need = n_frames * chunk
    if w.shape[1] < need:
        w = F.pad(w, (0, need - w.shape[1]))
    return w[:, :need].reshape(w.shape[0], n_frames, chunk)


def kl_gaussians(mu_q, lv_q, mu_p, lv_p, per_dim: bool = False):
    """KL(N(mu_q, e^lv_q) || N(mu_p, e^lv_p)), summed over z dims → (...,) (or per dim)."""
    kl = 0.5 * (lv_p - lv_q + (lv_q.exp() + (mu_q - mu_p) ** 2) / lv_p.exp() - 1)
    return kl if per_dim else kl.sum(-1)


# --------------------------------------------------------------------------------------------
# Generator


class Sound2Sight(nn.Module):
    def __init__(self, cfg: Sound2SightConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg)
        self.decoder = FrameDecoder(cfg)
        self.predictor = PredictorLSTM(cfg.g_dim + cfg.z_dim, cfg.rnn_size, cfg.g_dim, cfg.predictor_layers)
        stoch_in = cfg.embed_dim * (2 if cfg.use_audio else 1)
        self.prior = GaussianLSTM(stoch_in, cfg.rnn_size, cfg.z_dim, cfg.prior_layers)
        self.posterior = GaussianLSTM(stoch_in, cfg.rnn_size, cfg.z_dim, cfg.posterior_layers)
        self.visual_prior = SequenceTransformer(cfg.g_dim, cfg)  # M^V (frames so far)
        self.visual_post = SequenceTransformer(cfg.g_dim, cfg)  # Q^V (posterior's own)
        self.audio_tf = SequenceTransformer(cfg.stft_bins, cfg) if cfg.use_audio else None

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_state(cls, config: dict, state: dict, device=None) -> "Sound2Sight":
        model = cls(Sound2SightConfig.from_dict(config))
        model.load_state_dict(state)
        if device is not None:
            model = model.to(device)
        return model.eval()

    @classmethod
    def from_registry(cls, folder, device=None) -> "Sound2Sight":
        """Load from a verified ``soundsight.registry.ModelFolder`` (safetensors only)."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return cls.from_state(folder.config, folder.tensors("model.safetensors", device="cpu"), dev)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- pieces ------------------------------------------------------------------------------

    def audio_context(self, audio: torch.Tensor, length: int) -> torch.Tensor | None:
        """O^A_t for t < length from (B, T_a, chunk) audio: transformer output at t + k - 1.

        Missing audio past the clip's end is silence."""
        if not self.cfg.use_audio:
            return None
        k = self.cfg.audio_lookahead
        need = length + k - 1
        if audio.shape[1] < need:
            audio = F.pad(audio, (0, 0, 0, need - audio.shape[1]))
        feats = stft_features(audio[:, :need], self.cfg.stft_n_fft, self.cfg.stft_hop)
        out, _ = self.audio_tf(feats.to(audio.dtype if audio.is_floating_point() else torch.float32))
        return out[:, k - 1 : k - 1 + length]

    def _stoch_in(self, o_a, vis):
        return vis if o_a is None else torch.cat([o_a, vis], -1)

    def _encode_frames(self, x):
        b, t = x.shape[:2]
        h, skips = self.encoder(x.flatten(0, 1))
        return h.view(b, t, -1), [s.view(b, t, *s.shape[1:]) for s in skips]

    # -- training ----------------------------------------------------------------------------

    def forward(self, frames: torch.Tensor, audio: torch.Tensor, n_past: int | None = None,
                generator: torch.Generator | None = None) -> dict:
        """Teacher-forced pass over a whole sequence.

        frames (B, T, C, H, W) in [0, 1], audio (B, T, chunk). Predicts frames 1..T-1 from the
        real previous frame with z from the posterior. Returns pred (B, T-1, C, H, W) and the
        per-step Gaussian parameters (B, T-1, z) of posterior and prior.
        """
        cfg = self.cfg
        n_past = n_past or cfg.n_past
        b, t = frames.shape[:2]
        h, skips = self._encode_frames(frames)
        o_a = self.audio_context(audio, t)
        m_v, _ = self.visual_prior(h)
        q_v, _ = self.visual_post(h)
        st_q = self.posterior.init_state(b, frames.device, h.dtype)
        st_p = self.prior.init_state(b, frames.device, h.dtype)
        st_f = self.predictor.init_state(b, frames.device, h.dtype)
        eps = torch.randn(b, t - 1, cfg.z_dim, device=frames.device, generator=generator, dtype=h.dtype)
        preds, mq, lq, mp, lp = [], [], [], [], []
        for i in range(1, t):
            oa = None if o_a is None else o_a[:, i]
            mu_q, lv_q, st_q = self.posterior(self._stoch_in(oa, q_v[:, i]), st_q)
            mu_p, lv_p, st_p = self.prior(self._stoch_in(oa, m_v[:, i - 1]), st_p)
            z = mu_q + (0.5 * lv_q).exp() * eps[:, i - 1]
            hp, st_f = self.predictor(torch.cat([h[:, i - 1], z], -1), st_f)
            preds.append(hp)
            mq.append(mu_q), lq.append(lv_q), mp.append(mu_p), lp.append(lv_p)
        hp = torch.stack(preds, 1)  # (B, T-1, g)
        # skip source for predicting frame i: frame i-1 while seen (and with last_frame_skip),
        # else the last seen frame
        src = [i - 1 if (cfg.last_frame_skip or i - 1 < n_past) else n_past - 1 for i in range(1, t)]
        idx = torch.tensor(src, device=frames.device)
        sk = [s.index_select(1, idx).flatten(0, 1) for s in skips]
        pred = self.decoder(hp.flatten(0, 1), sk).view(b, t - 1, *frames.shape[2:])
        stack = lambda xs: torch.stack(xs, 1)  # noqa: E731
        return {"pred": pred, "mu_q": stack(mq), "logvar_q": stack(lq), "mu_p": stack(mp), "logvar_p": stack(lp)}

    # -- inference ---------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, seen: torch.Tensor, audio: torch.Tensor, n_future: int, k_samples: int = 1,
               generator: torch.Generator | None = None, use_posterior_warmup: bool = True,
               temperature: float = 1.0) -> torch.Tensor:
        """K futures per clip in one batched pass.

        seen (B, S, C, H, W) in [0, 1]; audio (B, T, chunk) with T ≥ S + n_future (shorter is
        padded with silence); returns (B, K, n_future, C, H, W) in [0, 1].
        The model should be in eval mode (BatchNorm running statistics). ``temperature`` scales
        the prior's standard deviation: 0 gives its mean path for every sample, > 1 spreads the
        K futures wider (a model whose prior learned to be sharp can be too sure for best-of-K).
        """
        cfg = self.cfg
        b, s = seen.shape[:2]
        K = k_samples
        dev, dt = seen.device, seen.dtype
        total = s + n_future
        rep = lambda x: x.repeat_interleave(K, 0)  # noqa: E731

        # once per clip (batch B): seen frames, audio context, visual prior prefix, warm-ups
        h_seen, skips = self._encode_frames(seen)
        o_a = self.audio_context(audio, total)
        m_last, vp_cache = self.visual_prior(h_seen)  # causal outputs (B, S, d) + key/value cache
        q_v, _ = self.visual_post(h_seen)
        st_p = self.prior.init_state(b, dev, dt)
        st_q = self.posterior.init_state(b, dev, dt)
        warm_q = []
        for i in range(1, s):
            oa = None if o_a is None else o_a[:, i]
            _, _, st_p = self.prior(self._stoch_in(oa, m_last[:, i - 1]), st_p)
            mu_q, lv_q, st_q = self.posterior(self._stoch_in(oa, q_v[:, i]), st_q)
            warm_q.append((mu_q, lv_q))

        # expand to B*K; the predictor's warm-up already depends on the sampled z
        st_p = [(rep(hh), rep(cc)) for hh, cc in st_p]
        vp_cache = [(rep(k), rep(v)) for k, v in vp_cache]
        st_f = self.predictor.init_state(b * K, dev, dt)
        hk = rep(h_seen.flatten(1)).view(b * K, s, -1)
        for i in range(1, s):
            mu_q, lv_q = (rep(x) for x in warm_q[i - 1])
            if use_posterior_warmup:
                z = mu_q + (0.5 * lv_q).exp() * torch.randn(mu_q.shape, device=dev, generator=generator, dtype=dt)
            else:
                z = mu_q
            _, st_f = self.predictor(torch.cat([hk[:, i - 1], z], -1), st_f)
        skip_last = [rep(sk[:, s - 1]) for sk in skips]
        m_prev = rep(m_last[:, s - 1])
        h_prev = hk[:, s - 1]
        o_ak = None if o_a is None else rep(o_a[:, s:total].flatten(1)).view(b * K, n_future, -1)

        out = []
        for j in range(n_future):
            t = s + j
            if j > 0:  # encode the frame generated last step; advance M^V incrementally
                h_prev, sk_new = self.encoder(out[-1])
                if cfg.last_frame_skip:
                    skip_last = sk_new
                m_prev, vp_cache = self.visual_prior.step(h_prev, t - 1, vp_cache)
            oa = None if o_ak is None else o_ak[:, j]
            mu_p, lv_p, st_p = self.prior(self._stoch_in(oa, m_prev), st_p)
            z = mu_p + temperature * (0.5 * lv_p).exp() * torch.randn(mu_p.shape, device=dev, generator=generator,
                                                                       dtype=dt)
            hp, st_f = self.predictor(torch.cat([h_prev, z], -1), st_f)
            out.append(self.decoder(hp, skip_last))
        x = torch.stack(out, 1)  # (B*K, n_future, C, H, W)
        return x.view(b, K, n_future, *x.shape[2:])


# --------------------------------------------------------------------------------------------
# Discriminator


class ConvLSTMCell(nn.Module):
    def __init__(self, nin, hidden, k=3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(nin + hidden, 4 * hidden, k, 1, k // 2)

    def forward(self, x, state):
        if state is None:
            z = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
            state = (z, z)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class MultimodalDiscriminator(nn.Module):
    """Image term, motion-dynamics term (ConvLSTM) and audio-alignment term; logits out."""

    def __init__(self, cfg: Sound2SightConfig):
        super().__init__()
        self.cfg = cfg
        nf = cfg.d_nf
        # shared frame features: size/4 spatial
        self.features = nn.Sequential(_conv(cfg.channels, nf, bn=False), _conv(nf, nf * 2))
        self.image_head = nn.Sequential(_conv(nf * 2, nf * 4), nn.Conv2d(nf * 4, 1, 3, 1, 1))
        self.motion = ConvLSTMCell(nf * 2, cfg.d_hidden)
        self.motion_head = nn.Sequential(_conv(cfg.d_hidden, nf * 2), nn.Conv2d(nf * 2, 1, 3, 1, 1))
        if cfg.use_audio:
            self.av_frame = nn.Sequential(_conv(nf * 2, nf * 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                          nn.Linear(nf * 4, 128))
            self.av_audio = nn.Sequential(nn.Linear(cfg.stft_bins, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128))
            self.av_head = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(256, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1))

    def forward(self, window, audio_chunk=None, audio_neg=None) -> dict:
        """All terms for frames under test ``window[:, R]`` in their neighbourhood ``window``
        (B, R+1+k, C, H, W) with their audio chunk (B, chunk); ``audio_neg``: mismatched audio."""
        frame = window[:, self.cfg.motion_past]
        out = {"image": self.image(frame), "motion": self.dynamics(window)}
        if self.cfg.use_audio and audio_chunk is not None:
            out["audio"] = self.alignment(frame, audio_chunk)
            if audio_neg is not None:
                out["audio_neg"] = self.alignment(frame, audio_neg)
        return out

    def image(self, x):
        return self.image_head(self.features(x)).mean((1, 2, 3))

    def dynamics(self, window):
        """window (B, R+1+k, C, H, W): the frame under test among its neighbours."""
        b, w = window.shape[:2]
        f = self.features(window.flatten(0, 1)).view(b, w, *self._fshape(window))
        state = None
        for i in range(w):
            h, state = self.motion(f[:, i], state)
        return self.motion_head(h).mean((1, 2, 3))

    def _fshape(self, window):
        s = window.shape[-1] // 4
        return (self.cfg.d_nf * 2, s, s)

    def alignment(self, x, audio_chunk):
        a = stft_features(audio_chunk, self.cfg.stft_n_fft, self.cfg.stft_hop).to(x.dtype)
        return self.av_head(torch.cat([self.av_frame(self.features(x)), self.av_audio(a)], -1))[:, 0]


# --------------------------------------------------------------------------------------------
# Helpers


def build(cfg: Sound2SightConfig, device=None) -> tuple[Sound2Sight, MultimodalDiscriminator]:
    g, d = Sound2Sight(cfg), MultimodalDiscriminator(cfg)
    if device is not None:
        g, d = g.to(device), d.to(device)
    return g, d


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
