"""Sound-driven edits in the generator's condition space, and compositing back onto the photo.

Sound2Scene / Sound2Vision: the audio encoder f_A lands in the image encoder's feature space,
so an audio embedding z_A can stand in for (or move) the image feature z_V that conditions G.

- insert a sound: z = (1 - λ) z_V_inv + λ z_A, with the inverted noise z_N_inv kept (the
  paper's ``mix`` rule); or the ``add`` rule, z = z_V_inv + λ (z_A - μ), μ the mean training
  feature the generator standardises its condition with. In the training scenes the background
  does not depend on the sound, so what z_A holds beyond μ is the sounding object (its class,
  size, place), and adding it keeps the photo's own scene where ``mix`` scales it down by 1 - λ;
- volume direction (§5.2): z = z_V_inv + λ (z_A(g1) - z_A(g2)) for one sound at two gains
  (g1 > g2 makes its source bigger / closer, g1 < g2 smaller / farther);

then the result is normalised to unit length when the generator reads unit-norm features (it
normalises internally as well; doing it here makes the vectors we report the ones G sees).

A regional edit (``--region``) applies the edited condition inside a square only and keeps the
inverted z_V outside it, in every conditional batch norm of G (its regional condition): the
object is drawn in latent space where it goes, and the rest of the picture is the
reconstruction's, where the paper's rule repaints the whole scene (f_V describes the scene,
background included). ``auto`` places the square where the whole-image edit drew its change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("insert", "volume")
INSERT_RULES = ("mix", "add")
COMPOSITES = ("masked", "residual", "none")
AUTO_SHARE = 0.5  # the auto square is the smallest that holds this share of the whole-image edit's change
AUTO_SIDES = (0.25, 0.75)  # its side, as a fraction of the model size: at least / at most


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def insert_sound(z_v: torch.Tensor, z_a: torch.Tensor, strength: float) -> torch.Tensor:
    """(1 - λ) ẑ_V + λ ẑ_A for λ = ``strength`` (unit-norm inputs; the output is not normalised)."""
    return (1.0 - strength) * unit(z_v) + strength * unit(z_a)


def insert_added(z_v: torch.Tensor, z_a: torch.Tensor, strength: float, mean: torch.Tensor) -> torch.Tensor:
    """ẑ_V + λ (ẑ_A - μ): the sound's departure from the mean feature, added (not normalised)."""
    return unit(z_v) + strength * (unit(z_a) - mean.to(z_a.device, torch.float32))


def feature_mean(G) -> torch.Tensor | None:
    """μ: the mean unit-norm training feature the generator subtracts from its condition (None
    for a generator trained without the standardised condition)."""
    m = getattr(G.cfg, "norm_cond_mean", None)
    return None if m is None else torch.tensor(m, dtype=torch.float32)


def volume_direction(z_v: torch.Tensor, z_a_g1: torch.Tensor, z_a_g2: torch.Tensor, strength: float) -> torch.Tensor:
    """ẑ_V + λ (ẑ_A(g1) - ẑ_A(g2)) (the paper's edit; not normalised)."""
    return unit(z_v) + strength * (unit(z_a_g1) - unit(z_a_g2))


def condition_for(G, z: torch.Tensor) -> torch.Tensor:
    """The edited condition as the generator reads it (unit-norm when it normalises features)."""
    return unit(z) if getattr(G.cfg, "normalize_features", True) else z.float()


@dataclass
class EditPlan:
    """What to do with the inverted photo: ``insert`` a sound or move along its ``volume`` direction."""

    mode: str  # insert | volume
    strengths: list  # λ values to render (the first is the main output's unless told otherwise)
    gains: tuple = (1.0, 1.0)  # (g1, g2) for the volume direction
    rule: str = "mix"  # insert rule: mix | add
    mean: torch.Tensor | None = None  # μ for the add rule (``feature_mean(G)``)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown edit mode {self.mode!r}")
        if self.rule not in INSERT_RULES:
            raise ValueError(f"unknown insert rule {self.rule!r} ({', '.join(INSERT_RULES)})")
        if self.mode == "insert" and self.rule == "add" and self.mean is None:
            raise ValueError("the add rule needs the generator's mean feature, and this generator has none "
                             "(it was trained without the standardised condition); use the mix rule")


def edit_conditions(plan: EditPlan, z_v: torch.Tensor, z_a: dict) -> torch.Tensor:
    """(len(strengths), D) conditions; ``z_a`` holds ``"sound"`` (insert) or ``"g1"``/``"g2"`` (volume)."""
    rows = []
    for lam in plan.strengths:
        if plan.mode == "insert" and plan.rule == "add":
            rows.append(insert_added(z_v, z_a["sound"], lam, plan.mean))
        elif plan.mode == "insert":
            rows.append(insert_sound(z_v, z_a["sound"], lam))
        else:
            rows.append(volume_direction(z_v, z_a["g1"], z_a["g2"], lam))
    return torch.cat(rows, 0)


@torch.no_grad()
def render(G, z_n: torch.Tensor, conditions: torch.Tensor, outside: torch.Tensor | None = None,
           masks: torch.Tensor | None = None) -> torch.Tensor:
    """Images (B, 3, S, S) in [0, 1] for one z_N and B conditions; with ``outside`` (1, D) and
    ``masks`` (B, 1, S, S), the conditions hold only inside the masks (a regional edit)."""
    cond = condition_for(G, conditions)
    z = z_n.expand(len(cond), -1)
    if masks is None:
        return ((G(z, cond) + 1) / 2).float().clamp(0, 1)
    out = condition_for(G, outside).expand(len(cond), -1)
    return ((G(z, cond, outside=out, mask=masks.to(z.device)) + 1) / 2).float().clamp(0, 1)


# --------------------------------------------------------------------------------------------
# Regions


def change_above_base(edit: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S): how much each pixel changed, above the image's lower-quartile change (a GAN
    edit shifts colours everywhere a little; what stands above that is what the edit drew)."""
    d = (edit - recon).abs().amax(1, keepdim=True)
    return (d - d.flatten(1).quantile(0.25, dim=1)[:, None, None, None]).clamp_min(0)


def best_square(change: torch.Tensor, side: int) -> tuple[tuple[int, int, int, int], float]:
    """The ``side`` x ``side`` square of one (1, S, S) change map holding the most change:
    its box (x0, y0, x1, y1) and the change it holds."""
    covered = F.avg_pool2d(change[None], side, stride=1)[0, 0] * side * side
    k = int(covered.flatten().argmax())
    y0, x0 = divmod(k, covered.shape[1])
    return (x0, y0, x0 + side, y0 + side), float(covered.flatten()[k])


def auto_box(change: torch.Tensor, share: float = AUTO_SHARE, sides=AUTO_SIDES) -> tuple[int, int, int, int]:
    """The smallest square (side between ``sides`` of S, in steps of S/16) that holds ``share`` of a
    (1, S, S) change map, placed where it holds the most; the largest when none does."""
    S = change.shape[-1]
    total = float(change.sum())
    lo, hi = max(2, round(sides[0] * S)), max(2, round(sides[1] * S))
    step = max(1, S // 16)
    box = None
    for side in list(range(lo, hi, step)) + [hi]:
        box, held = best_square(change, side)
        if total <= 0 or held >= share * total:
            break
    return box


def box_mask(box, size: int, soft: float | None = None) -> torch.Tensor:
    """(1, 1, S, S) mask of a box (x0, y0, x1, y1) in model pixels, its edge blurred by ``soft``
    (default S/32) so the two conditions blend over a few pixels."""
    x0, y0, x1, y1 = box
    ys = torch.arange(size, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(size, dtype=torch.float32)[None, :] + 0.5
    m = ((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)).float()[None, None]
    return _blur(m, size / 32 if soft is None else soft).clamp(0, 1)


@torch.no_grad()
def render_edits(G, z_n: torch.Tensor, conditions: torch.Tensor, z_v: torch.Tensor, recon: torch.Tensor,
                 region="none") -> tuple[torch.Tensor, list]:
    """The edits (B, 3, S, S) and their region boxes: the whole picture for ``region`` ``none``,
    else rendered again with the edited conditions inside ``region_masks`` and z_V outside."""
    edits = render(G, z_n, conditions)
    if region == "none":
        return edits, []
    masks, boxes = region_masks(region, edits, recon)
    return render(G, z_n, conditions, outside=z_v, masks=masks), boxes


def region_masks(region, edits: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, list]:
    """(B, 1, S, S) masks and their boxes for ``region``: ``auto`` (each whole-image edit's own
    square, ``auto_box``) or one box (x0, y0, x1, y1) in model pixels for every edit."""
    S = edits.shape[-1]
    if region == "auto":
        change = change_above_base(edits.float().cpu(), recon.float().cpu().expand_as(edits))
        boxes = [auto_box(c) for c in change]
    else:
        boxes = [tuple(region)] * len(edits)
    return torch.cat([box_mask(b, S) for b in boxes]), boxes


# --------------------------------------------------------------------------------------------
# Back to the photo's size


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    r = max(1, int(3 * sigma))
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).to(x.device)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def change_mask(edit: torch.Tensor, recon: torch.Tensor, threshold: float = 0.1, sigma: float = 1.0) -> torch.Tensor:
    """(B, 1, S, S) soft mask in [0, 1] of where an edit changed the reconstruction most (model size).

    The largest per-channel change d, measured above the image's background level of change
    (its lower quartile: a GAN edit also shifts colours everywhere a little), ramped 0 → 1
    between ``threshold``/2 and ``threshold``·1.5 above it and blurred: a global drift stays
    out of the mask (the photo keeps its detail there), a new object goes in, with a soft edge.
    """
    d = (edit - recon).abs().amax(1, keepdim=True)
    base = d.flatten(1).quantile(0.25, dim=1)[:, None, None, None]
    m = ((d - base - threshold / 2) / threshold).clamp(0, 1)
    return _blur(m, sigma).clamp(0, 1)


def composite(photo: np.ndarray, box, recon: torch.Tensor, edits: torch.Tensor, how: str = "masked",
              threshold: float = 0.1) -> np.ndarray:
    """Edits at model size → uint8 (B, H, W, 3) at the photo's size.

    Only the square ``box`` (x0, y0, x1, y1) the model saw is edited; the rest is the photo.

    - ``residual``: photo + upscale(edit - reconstruction): what the edit did not change keeps
      the photo's own detail, whatever the reconstruction missed;
    - ``masked`` (default): like ``residual`` outside the changed region; inside it (soft mask
      of |edit - reconstruction|) the upscaled edit itself, so an inserted object is not
      overlaid with the texture of what it replaces;
    - ``none``: the upscaled edit inside the box.
    """
    if how not in COMPOSITES:
        raise ValueError(f"unknown composite {how!r} ({', '.join(COMPOSITES)})")
    x0, y0, x1, y1 = box
    side = x1 - x0
    base = torch.from_numpy(np.ascontiguousarray(photo[y0:y1, x0:x1])).permute(2, 0, 1)[None].float() / 255.0
    up_edit = _resize(edits.float().cpu(), side)
    if how == "none":
        region = up_edit
    else:
        up_delta = _resize((edits - recon).float().cpu(), side)
        region = base + up_delta
        if how == "masked":
            m = _resize(change_mask(edits.float().cpu(), recon.float().cpu(), threshold), side).clamp(0, 1)
            region = m * up_edit + (1 - m) * region
    region = (region.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.repeat(photo[None], len(edits), 0)
    out[:, y0:y1, x0:x1] = region
    return out


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) [0, 1] → uint8 (B, H, W, 3)."""
    return (x.float().clamp(0, 1).cpu() * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
