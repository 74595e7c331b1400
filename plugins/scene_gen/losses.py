"""Losses of scene-gen: the audio-visual alignment InfoNCE, SimCLR's NT-Xent, GAN hinge losses.

All functions take and return torch tensors; reductions are means over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l2_logits(a: torch.Tensor, v: torch.Tensor, temperature: float = 1.0, eps: float = 1e-12) -> torch.Tensor:
    """(B, B) logits S_ij = -||a_i/|a_i| - v_j/|v_j|||_2 / temperature (unit-norm features)."""
    a = F.normalize(a.float(), dim=-1)
    v = F.normalize(v.float(), dim=-1)
    # ||a - v||^2 = 2 - 2 a.v for unit vectors; the eps keeps the sqrt differentiable at 0
    d2 = (2.0 - 2.0 * (a @ v.t())).clamp_min(0.0)
    return -torch.sqrt(d2 + eps) / temperature


def infonce_l2(a: torch.Tensor, v: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Symmetric InfoNCE with negative L2 distances of unit-norm features as logits (Sound2Scene).

    L = 1/(2B) sum_j (L^A_j + L^V_j), with
    L^A_j = -log softmax_k(S(a_j, v_k))[j]  (audio j against all images),
    L^V_j = -log softmax_k(S(a_k, v_j))[j]  (image j against all audio).
    ``a``: (B, D) audio embeddings, ``v``: (B, D) image embeddings (pairs on the diagonal).
    """
    logits = l2_logits(a, v, temperature)
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy over 2B views (cosine similarities)."""
    z = F.normalize(torch.cat([z1, z2], 0).float(), dim=-1)
    n = len(z1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def hinge_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -E[D(G(z))]."""
    return -fake_logits.float().mean()
