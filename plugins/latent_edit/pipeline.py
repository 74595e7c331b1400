"""`soundsight edit`: photo + sound → the photo with the sound's source inserted or moved.

1. Models, by name through the registry (scene-gen defines them; this plugin imports nothing
   from it): the image encoder f_V, the audio encoder f_A and the generator G. They must share
   one feature space (same D; G's card names the f_V it was conditioned on).
2. The photo is centre-cropped to a square at G's size and inverted (``invert.invert``).
3. The sound (a mix expression) is loaded at f_A's rate, mono, with its level kept (f_A's
   front end keeps level: louder means a bigger / closer source), and embedded: once for an
   insert, at two gains for a volume edit.
4. Edits are rendered at model size from the inverted z_N and the edited condition (inside a
   region only, with ``--region``: ``edits.region_masks``), then composited onto the photo at
   its own size (``edits.composite``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from soundsight.errors import InputError, ModelError

DEFAULT_GENERATOR = "scene-gan-64"
DEFAULT_IMAGE_ENCODER = "scene-image-encoder-64"
DEFAULT_AUDIO_ENCODER = "scene-audio-encoder-64"
DEFAULT_SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0)
LOUDER, QUIETER = (2.0, 0.5), (0.5, 2.0)  # (g1, g2) of the volume direction, relative to the sound
SILENCE_PEAK = 1e-5  # a sound whose peak is below this (about -100 dBFS) is treated as silent

# role -> (task, architecture, how to make the default model)
ROLES = {
    "generator": ("scene-generation", "scene-icgan",
                  "python -m soundsight_train.scene_gan --image-encoder scene-image-encoder-64 --out models/scene-gan-64"),
    "image_encoder": ("scene-image-embedding", "scene-image-encoder",
                      "python -m soundsight_train.scene_image_encoder --out models/scene-image-encoder-64"),
    "audio_encoder": ("scene-audio-embedding", "scene-audio-encoder",
                      "python -m soundsight_train.scene_audio_encoder --image-encoder scene-image-encoder-64 "
                      "--out models/scene-audio-encoder-64"),
}
DEFAULTS = {"generator": DEFAULT_GENERATOR, "image_encoder": DEFAULT_IMAGE_ENCODER,
            "audio_encoder": DEFAULT_AUDIO_ENCODER}


# --------------------------------------------------------------------------------------------
# Models


def resolve_models(names: dict | None = None) -> dict:
    """role → verified ModelFolder. A default model that is not installed is named together with
    the training command that makes it (scene-gen's models are trained, not downloaded)."""
    from soundsight import registry

    names = {**DEFAULTS, **{k: v for k, v in (names or {}).items() if v}}
    folders = {}
    for role, name in names.items():
        task, arch, command = ROLES[role]
        try:
            folder = registry.resolve(name, task=task)
        except ModelError as exc:
            if str(exc).startswith("unknown model"):
                hint = f"; train it with `{command}`" if name == DEFAULTS[role] else ""
                raise ModelError(f"the scene-gen {role.replace('_', ' ')} {name!r} is not installed "
                                 f"(`soundsight models list` shows what is){hint}") from None
            raise
        if folder.card.get("architecture") != arch:
            raise ModelError(f"model {folder.name} is a {folder.card.get('architecture')!r} model; "
                             f"the {role.replace('_', ' ')} must be a {arch!r} model")
        folders[role] = folder
    dims = {role: f.config.get("feature_dim") for role, f in folders.items()}
    if len(set(dims.values())) > 1:
        raise ModelError("the scene-gen models do not share one feature space (feature sizes "
                         + ", ".join(f"{folders[r].name} {d}" for r, d in dims.items()) + ")")
    return folders


def conditioning_mismatch(folders: dict) -> str | None:
    """A warning when G's card names another image encoder than the one given."""
    cond = folders["generator"].card.get("conditioning", {}).get("image_encoder", {})
    want = cond.get("files", {}).get("model.safetensors")
    have = folders["image_encoder"].provenance().get("model.safetensors")
    if want and have and want != have:
        return (f"{folders['generator'].name} was conditioned on {cond.get('name')!r}, not on "
                f"{folders['image_encoder'].name}; the inversion will be worse")
    return None


def load_models(folders: dict, device) -> dict:
    from soundsight import registry

    return {role: registry.load(folder, device) for role, folder in folders.items()}


# --------------------------------------------------------------------------------------------
# Inputs


def load_photo(path) -> np.ndarray:
    from soundsight.image import image_to_array, load_image

    return image_to_array(load_image(path))


def load_sound(expr: str, sample_rate: int, gain: float = 1.0) -> np.ndarray:
    """Mono float32 (n,) at ``sample_rate`` with its level kept; silence is an error."""
    from soundsight.audio import load_mix

    audio, _ = load_mix(expr, sr=sample_rate, channels=1, gain=gain)
    wave = audio[0]
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if not np.isfinite(wave).all():
        raise InputError(f"sound {expr} contains NaN or infinite samples")
    if peak < SILENCE_PEAK:
        raise InputError(f"sound {expr} is silent (peak {peak:.1e}); an edit needs a sound to follow")
    return wave


def parse_strengths(text: str) -> list[float]:
    """'0,0.25,0.5' → [0.0, 0.25, 0.5] (finite numbers, 1 to 16 of them)."""
    import math

    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--sweep takes comma-separated numbers, got {text!r}") from None
    if not values or len(values) > 16 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--sweep takes 1 to 16 finite numbers, got {text!r}")
    return values


def parse_region(text: str | None):
    """``none`` / ``auto`` / ``X0,Y0,X1,Y1`` (fractions of the photo's width and height) → the
    same, the box as a tuple of floats."""
    import math

    text = "none" if text is None else str(text).strip().lower()
    if text in ("none", "auto"):
        return text
    try:
        box = tuple(float(p) for p in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) and 0 <= v <= 1 for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"--region takes none, auto or X0,Y0,X1,Y1 (fractions of the photo, 0-1, X0 < X1, "
                         f"Y0 < Y1), got {text!r}")
    return box


def region_in_model(region, photo_shape, box, size: int):
    """A photo-fraction box → model pixels of the edited square ``box``; ``none``/``auto`` pass."""
    if isinstance(region, str):
        return region
    h, w = photo_shape[:2]
    x0, y0, x1, y1 = box
    scale = size / (x1 - x0)
    m = [(region[0] * w - x0) * scale, (region[1] * h - y0) * scale,
         (region[2] * w - x0) * scale, (region[3] * h - y0) * scale]
    m = [min(max(v, 0.0), float(size)) for v in m]
    if m[2] - m[0] < 1 or m[3] - m[1] < 1:
        raise InputError(f"--region {','.join(f'{v:g}' for v in region)} lies outside the edited square of the photo "
                         f"(pixels {x0},{y0} to {x1},{y1}), or is less than a model pixel wide")
    return tuple(m)


def parse_gains(text: str) -> tuple[float, float]:
    import math

    parts = [p.strip() for p in str(text).split(",")]
    try:
        g = tuple(float(p) for p in parts)
    except ValueError:
        g = ()
    if len(g) != 2 or not all(math.isfinite(v) and v > 0 for v in g):
        raise InputError(f"--gains takes two positive numbers G1,G2, got {text!r}")
    if g[0] == g[1]:
        raise InputError(f"--gains {text}: the two gains must differ (the edit follows their difference)")
    return g  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# The edit


@dataclass
class EditResult:
    photo: np.ndarray  # uint8 (H, W, 3)
    box: tuple  # the square the model saw, (x0, y0, x1, y1)
    target: object  # (1, 3, S, S) photo at model size
    recon: object  # (1, 3, S, S)
    edits: object  # (B, 3, S, S) one per strength
    strengths: list
    composites: np.ndarray  # uint8 (B, H, W, 3)
    inversion: dict
    mode: str
    gains: tuple
    timings: dict = field(default_factory=dict)
    sound_level: dict = field(default_factory=dict)
    regions: list = field(default_factory=list)  # per edit: its region box in model pixels (regional edits)


def embed_sound(fa, wave: np.ndarray, gains, device) -> list:
    """Unit-norm f_A embeddings (1, D) of ``wave`` at each gain (level kept, as f_A hears it)."""
    import torch

    x = torch.from_numpy(np.stack([wave * np.float32(g) for g in gains]))
    with torch.no_grad():
        z = fa.embed(x.to(device.torch_device))
    return [z[i:i + 1] for i in range(len(gains))]


def sound_level(wave: np.ndarray, fa_folder) -> dict:
    """RMS of the sound and how it compares with the level f_A was trained on (gain 1 = the
    scenes dataset's reference RMS): above ~4x everything looks as close as it gets."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    out = {"rms": round(rms, 6), "rms_dbfs": round(20 * np.log10(max(rms, 1e-12)), 2),
           "peak": round(float(np.abs(wave).max()), 6)}
    ref = (fa_folder.card.get("data", {}).get("spec", {}) or {}).get("ref_rms")
    if ref:
        out["gain_vs_training_reference"] = round(rms / ref, 3)
    return out


def run_edit(photo: np.ndarray, wave: np.ndarray, models: dict, *, mode: str, strengths: list, gains=(1.0, 1.0),
             steps: int | None, refine: int, seed: int, device, composite_how: str = "masked",
             rule: str = "mix", region="none", inversion_overrides: dict | None = None) -> EditResult:
    """Invert ``photo`` and render the edits for ``strengths`` (the models are loaded); ``region``
    is ``none``, ``auto`` or a box in photo fractions (``parse_region``)."""
    import torch

    from .edits import EditPlan, composite, edit_conditions, feature_mean, render_edits
    from .invert import InversionConfig, invert, to_model_size

    G, fv, fa = models["generator"], models["image_encoder"], models["audio_encoder"]
    try:  # before the inversion: a rule the generator cannot serve fails in no time
        plan = EditPlan(mode=mode, strengths=list(strengths), gains=tuple(gains), rule=rule, mean=feature_mean(G))
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    t0 = time.perf_counter()
    target, box = to_model_size(photo, G.cfg.image_size)
    model_region = region_in_model(region, photo.shape, box, G.cfg.image_size)  # fails before the inversion
    cfg = InversionConfig(**(inversion_overrides or {}))
    if steps is not None:
        cfg.steps = steps
    cfg.refine_steps = refine
    inv = invert(G, fv, target.to(device.torch_device), cfg, seed=seed)
    t1 = time.perf_counter()
    if mode == "insert":
        (z,) = embed_sound(fa, wave, [1.0], device)
        z_a = {"sound": z}
    else:
        z1, z2 = embed_sound(fa, wave, gains, device)
        z_a = {"g1": z1, "g2": z2}
    conds = edit_conditions(plan, inv.z_v, z_a)
    edits, boxes = render_edits(inv.generator, inv.z_n, conds, inv.z_v, inv.recon, model_region)
    comps = composite(photo, box, inv.recon, edits, how=composite_how)
    t2 = time.perf_counter()
    return EditResult(photo=photo, box=box, target=inv.target.cpu(), recon=inv.recon.cpu(), edits=edits.cpu(),
                      strengths=list(strengths), composites=comps, inversion=inv.metrics, mode=mode,
                      gains=tuple(gains), timings={"invert_s": round(t1 - t0, 3), "edit_s": round(t2 - t1, 3)},
                      regions=[[round(float(v), 2) for v in b] for b in boxes])


def strip_image(result: EditResult, tile: int = 128):
    """One row: the photo (the square the model saw), the reconstruction, then each edit; model-size
    images are shown at ``tile`` px (bicubic), with the strengths under the edits."""
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw

    from soundsight.image import make_grid

    from .edits import to_uint8

    tile = max(tile, result.target.shape[-1])
    x0, y0, x1, y1 = result.box
    crop = torch.from_numpy(np.ascontiguousarray(result.photo[y0:y1, x0:x1])).permute(2, 0, 1)[None].float() / 255
    crop = F.interpolate(crop, size=(tile, tile), mode="bilinear", align_corners=False, antialias=crop.shape[-1] > tile)
    model = torch.cat([result.recon, result.edits], 0)
    model = F.interpolate(model, size=(tile, tile), mode="bicubic", align_corners=False)
    labels = ["photo", f"inverted {result.inversion['psnr']:.1f} dB"] + [f"strength {s:g}" for s in result.strengths]
    # where a regional edit acted (not at strength 0, which changes nothing anywhere)
    regions = [None, None] + [r if s else None for r, s in zip(result.regions or [None] * len(result.strengths),
                                                                 result.strengths)]
    scale = tile / result.target.shape[-1]
    tiles = []
    for arr, label, region in zip(np.concatenate([to_uint8(crop), to_uint8(model)]), labels, regions):
        im = Image.new("RGB", (tile, tile + 14), (255, 255, 255))
        im.paste(Image.fromarray(arr), (0, 0))
        draw = ImageDraw.Draw(im)
        draw.text((3, tile + 1), label, fill=(0, 0, 0))
        if region is not None:
            x0, y0, x1, y1 = (round(v * scale) for v in region)
            draw.rectangle((x0, y0, min(x1, tile) - 1, min(y1, tile) - 1), outline=(255, 220, 0))
        tiles.append(im)
    return make_grid(tiles, rows=1)
