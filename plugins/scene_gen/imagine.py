"""`soundsight imagine`: a sound (or a mix of sounds) → images of the scene that makes it.

Pipeline: the mix expression is loaded with the core's ``load_mix`` (per-source gains, then
``--gain`` / ``--gain-db`` on the whole mix) at the audio encoder's rate, mono, and fitted to its
length (shorter sounds are tiled, longer ones cropped from the start). The level is kept on
purpose: the audio encoder's front end does not normalise loudness away, so a louder sound is a
bigger / closer object. f_A(audio) → the feature z_A → the GAN generator G(z_N, z_A) or the
LDM's DDIM sampler → PNGs with provenance. With ``--anchor W`` (both shipped cards set 0.5) z_A
is first pulled toward the nearest training instance's f_V (``instances.anchor``). The noise
comes from the seed alone: the same seed and the same sound give the same images, and a gain
sweep uses the same noise at every gain.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundsight.errors import InputError, ModelError

BACKENDS = ("gan", "ldm")
SIZES = (32, 64, 128, 256)
DEFAULT_AUDIO_ENCODER = "scene-audio-encoder-64"
DEFAULT_INSTANCES = "scene-instances-64"
DEFAULT_STEPS = 25
# the GAN is the default back end: on the 500 held-out sounds, both anchored as shipped, it beats
# the LDM on FID (7.9 vs 13.6), scale (size corr. 0.63 vs 0.57) and level (volume monotonic 0.670
# vs 0.594), ties it on class (R@1 0.032 vs 0.034) and draws in one pass (README, imagine)
DEFAULT_BACKEND = "gan"
MAX_N = 64
SILENCE_DBFS = -90.0
TRAIN_HOME = "models"  # where the train/ commands below write (the repository's bundled models)


def default_generator(backend: str, size: int) -> str:
    return f"scene-{backend}-{size}"


def train_command(name: str) -> str | None:
    """The documented command that trains a default scene-gen model (None for other names)."""
    fv = f"--image-encoder {TRAIN_HOME}/scene-image-encoder-64"
    size = name.rsplit("-", 1)[-1]
    commands = {
        "scene-image-encoder-64": "python -m soundsight_train.scene_image_encoder",
        "scene-audio-encoder-64": f"python -m soundsight_train.scene_audio_encoder {fv}",
        f"scene-gan-{size}": f"python -m soundsight_train.scene_gan {fv}" + (f" --size {size}" if size != "64" else ""),
        f"scene-ldm-{size}": f"python -m soundsight_train.scene_ldm {fv}" + (f" --size {size}" if size != "64" else ""),
        "scene-evaluator-64": "python -m soundsight_train.scene_evaluator",
        DEFAULT_INSTANCES: f"python -m soundsight_train.scene_instances {fv}",
    }
    cmd = commands.get(name)
    return None if cmd is None else f"{cmd} --out {TRAIN_HOME}/{name}"


def missing_model_error(name: str, what: str) -> ModelError:
    cmd = train_command(name)
    how = (f"; train it with `{cmd}` (then `soundsight models import {TRAIN_HOME}/{name}` to install it for "
           "every folder)") if cmd else ""
    return ModelError(f"the {what} model {name} is not installed{how}")


def default_backend(model: str | None, steps: int | None, guidance: float | None = None) -> str:
    """The back end when none is named: the given --model's, else the LDM if an LDM-only option
    (--steps, --guidance) is given, else the GAN where it is installed, else the LDM where that is
    (else the GAN, whose missing model is then reported)."""
    if model is not None:
        from soundsight import registry

        arch = registry.resolve(model, task="scene-generation").card.get("architecture")
        return "ldm" if arch == "scene-ldm" else "gan"
    if steps is not None or guidance is not None:
        return "ldm"
    for backend in sorted(BACKENDS, key=lambda b: b != DEFAULT_BACKEND):  # the default first
        if is_installed(default_generator(backend, 64)):
            return backend
    return DEFAULT_BACKEND


def is_installed(name: str) -> bool:
    from soundsight import registry

    try:
        registry.locate(name)
        return True
    except ModelError:
        return False


def resolve_model(name: str, task: str, what: str, default: bool):
    """A verified ModelFolder; a missing default model says how to train it."""
    from soundsight import registry

    if default and not is_installed(name):
        raise missing_model_error(name, what)
    return registry.resolve(name, task=task)


def conditioned_on(folder) -> dict | None:
    """The image encoder's files a model's card says it was made with (None when it does not say)."""
    return ((folder.card.get("conditioning") or {}).get("image_encoder") or {}).get("files")


def resolve_anchor(g_folder, anchor: float | None, instances: str | None):
    """(weight, bank folder or None): ``--anchor`` / ``--instances``, else the generator card's
    ``inference`` defaults (none: no anchoring). The bank must come from the image encoder the
    generator was conditioned on."""
    from soundsight import registry

    inference = g_folder.card.get("inference") or {}
    if anchor is not None and not (math.isfinite(anchor) and 0 <= anchor <= 1):
        raise InputError(f"--anchor must be between 0 and 1, got {anchor}")
    weight = float(inference.get("anchor", 0.0) if anchor is None else anchor)
    if weight == 0:
        return 0.0, None
    name = instances or inference.get("instances") or DEFAULT_INSTANCES
    folder = resolve_model(name, "scene-instances", "instance bank", default=instances is None)
    want, have = conditioned_on(g_folder), conditioned_on(folder)
    if want and have and want != have:
        raise ModelError(f"the instance bank {folder.name} was made with another image encoder than {g_folder.name} "
                         "was conditioned on; rebuild it with `python -m soundsight_train.scene_instances "
                         "--image-encoder ...` or give --anchor 0")
    return weight, folder


def parse_gains(text: str) -> list[float]:
    """``"0.25,1,4"`` → [0.25, 1.0, 4.0]: positive finite linear gains."""
    values = []
    for part in str(text).split(","):
        try:
            v = float(part)
        except ValueError:
            raise InputError(f"--sweep-gain takes comma-separated positive numbers like 0.25,1,4; "
                             f"got {text!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"--sweep-gain values must be positive numbers, got {part.strip()!r}")
        values.append(v)
    if len(values) > 16:
        raise InputError(f"--sweep-gain takes at most 16 gains, got {len(values)}")
    return values


def _dbfs(v: float) -> float | None:
    return None if v <= 0 else round(20 * math.log10(v), 2)


@dataclass
class Plan:
    """Output paths of one imagine run, decided (and checked) before anything is loaded."""

    images: list[Path]
    grid: Path | None
    strip: Path | None


def default_stem(sources: list[str]) -> Path:
    first = Path(sources[0])
    stems = [Path(s).stem for s in sources]
    name = "+".join(stems) if len(stems) <= 3 else f"{stems[0]}+{len(stems) - 1}-more"
    return first.with_name(name)


def plan_outputs(sources: list[str], *, n: int, seed: int, out, grid, sweep: bool, write_images: bool,
                 force: bool) -> Plan:
    from soundsight.outputs import check_output

    base = default_stem(sources)
    images: list[Path] = []
    strip = None
    pattern = str(out) if out else None

    def fill(p: str, i) -> Path:
        try:
            return Path(p.format(i=i, seed=seed))
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(f"bad placeholder in --out {p!r} ({exc}); use {{i}} (image number) and {{seed}}") from None

    if sweep:
        strip = fill(pattern, "sweep") if pattern else Path(f"{base}.imagine-sweep.png")
    elif write_images:
        if pattern is None:
            pattern = f"{base}.imagine.png" if n == 1 else f"{base}.imagine-{{i}}.png"
        elif n > 1 and "{i}" not in pattern:
            p = Path(pattern)
            pattern = str(p.with_name(f"{p.stem}-{{i}}{p.suffix}"))
        images = [fill(pattern, i) for i in range(n)]
    grid = Path(grid) if grid else None
    every = [*images, *([grid] if grid else []), *([strip] if strip else [])]
    if len({p.resolve() for p in every}) != len(every):
        raise InputError("two outputs of this command would have the same path; check --out and --grid")
    for p in every:
        check_output(p, force=force, inputs=tuple(sources))
    return Plan(images, grid, strip)


# --------------------------------------------------------------------------------------------
# sound → feature → images


def load_sound(sources, cfg, gain: float, gain_db: float | None) -> tuple[np.ndarray, dict]:
    """The mix at f_A's rate, mono, fitted to its length (level untouched), and level facts."""
    from soundsight.audio import load_mix

    mix, sr = load_mix(sources, sr=cfg.sample_rate, channels=1, gain=gain, gain_db=gain_db)
    x = mix[0]
    n = cfg.n_samples
    used = np.tile(x, math.ceil(n / len(x)))[:n] if len(x) < n else x[:n]
    peak = float(np.abs(used).max()) if len(used) else 0.0
    rms = float(np.sqrt(np.mean(np.square(used, dtype=np.float64)))) if len(used) else 0.0
    if peak == 0.0 or 20 * math.log10(max(rms, 1e-30)) < SILENCE_DBFS:
        raise InputError(f"the sound is silent in the {min(len(x), n) / sr:g} s the model hears "
                         f"(RMS {_dbfs(rms) or '-inf'} dBFS); imagine pictures what it hears")
    info = {"input_seconds": round(len(x) / sr, 3), "model_seconds": round(n / sr, 3),
            "tiled": len(x) < n, "cropped": len(x) > n, "rms_dbfs": _dbfs(rms), "peak_dbfs": _dbfs(peak),
            "clipped": peak > cfg.clip}
    return used.astype(np.float32), info


def scene_gain(rms_dbfs: float | None, folder) -> float | None:
    """The input's level as a gain of the training data (its clips are at ``ref_rms`` x gain)."""
    ref = (folder.card.get("data") or {}).get("spec", {}).get("ref_rms")
    if not ref or rms_dbfs is None:
        return None
    return round(10 ** (rms_dbfs / 20) / ref, 3)


def generate(gen_model, backend: str, features, noise, steps: int, device, guidance: float | None = None):
    """Images (B, 3, S, S) in [0, 1] on CPU, the same noise for the same row; ``guidance`` None:
    the LDM's own."""
    import torch

    with torch.inference_mode(), device.autocast():
        if backend == "gan":
            x = gen_model.generate(features, z=noise)
        else:
            x = gen_model.sample(features, steps=steps, latents=noise, guidance=guidance)
    return x.float().clamp(0, 1).cpu()


def draw_noise(gen_model, backend: str, n: int, seed: int, device):
    """z_N (GAN) or the initial latents (LDM) from the seed alone."""
    import torch

    g = device.generator(seed)
    if backend == "gan":
        return gen_model.sample_z(n, g)
    c = gen_model.cfg
    return torch.randn(n, c.latent_channels, c.latent_size, c.latent_size, generator=g, device=g.device)


def to_uint8(images, size: int | None) -> list[np.ndarray]:
    """[0, 1] NCHW tensor → HWC uint8 arrays, resized (Lanczos) when ``size`` differs."""
    from PIL import Image

    arr = (images.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    if size is None or size == arr.shape[1]:
        return list(arr)
    return [np.asarray(Image.fromarray(a).resize((size, size), Image.LANCZOS)) for a in arr]


def sweep_strip(rows: list[list[np.ndarray]], gains: list[float], pad: int = 2):
    """One row per sample, one column per gain, a header with the gains."""
    from PIL import Image, ImageDraw

    h, w = rows[0][0].shape[:2]
    head = 12
    W = len(gains) * (w + pad) + pad
    H = head + len(rows) * (h + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, g in enumerate(gains):
        draw.text((pad + j * (w + pad) + 2, 1), f"x{g:g}", fill=(0, 0, 0))
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (pad + j * (w + pad), head + pad + i * (h + pad)))
    return canvas


def run_imagine(sound: str, *, gain: float = 1.0, gain_db: float | None = None, n: int = 1, seed: int = 0,
                backend: str | None = None, steps: int | None = None, guidance: float | None = None,
                size: int | None = None, model: str | None = None, anchor: float | None = None,
                instances: str | None = None, audio_model: str | None = None, out=None, grid=None,
                sweep_gain: str | None = None,
                write_images: bool = True, force: bool = False, device=None, extra_provenance: dict | None = None,
                command: str | None = None) -> dict:
    """The whole command: validate, plan outputs, load, generate, write. Returns the JSON report."""
    from soundsight import console, registry
    from soundsight.audio import parse_mix
    from soundsight.image import make_grid, save_image
    from soundsight.outputs import make_provenance

    t0 = time.perf_counter()
    # --- arguments: every cheap check before anything is loaded or written
    if backend is None:
        backend = default_backend(model, steps, guidance)
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if not 1 <= n <= MAX_N:
        raise InputError(f"--n must be between 1 and {MAX_N}, got {n}")
    if size is not None and size not in SIZES:
        raise InputError(f"--size must be one of {', '.join(map(str, SIZES))}, got {size}")
    if steps is not None:
        if backend != "ldm":
            raise InputError("--steps sets the LDM's DDIM steps; add --backend ldm (the GAN draws in one pass)")
        if not 1 <= steps <= 1000:
            raise InputError(f"--steps must be between 1 and 1000, got {steps}")
    steps = steps or DEFAULT_STEPS
    if guidance is not None:
        if backend != "ldm":
            raise InputError("--guidance sets the LDM's classifier-free guidance; add --backend ldm")
        if not (math.isfinite(guidance) and 0 <= guidance <= 20):
            raise InputError(f"--guidance must be between 0 and 20, got {guidance}")
    if gain_db is not None and gain != 1.0:
        raise InputError("give either --gain or --gain-db, not both")
    if not (math.isfinite(gain) and gain > 0):
        raise InputError(f"--gain must be a positive number, got {gain}")
    if gain_db is not None and not math.isfinite(gain_db):
        raise InputError(f"--gain-db must be a finite number, got {gain_db}")
    gains = parse_gains(sweep_gain) if sweep_gain else None
    if gains is not None and grid:
        raise InputError("--grid and --sweep-gain cannot be combined: the sweep strip already holds every sample")
    sources = parse_mix(sound)  # a bad expression or a missing file → one line
    paths = [p for p, _ in sources]
    plan = plan_outputs(paths, n=n, seed=seed, out=out, grid=grid, sweep=gains is not None,
                        write_images=write_images, force=force)

    # --- models
    fa_folder = resolve_model(audio_model or DEFAULT_AUDIO_ENCODER, "scene-audio-embedding", "audio encoder",
                              default=audio_model is None)
    want = size or 64
    if model is None:
        name = default_generator(backend, want)
        if not is_installed(name) and want != 64:
            name = default_generator(backend, 64)  # its images are resized below, with a note
        g_folder = resolve_model(name, "scene-generation", backend.upper(), default=True)
    else:
        g_folder = registry.resolve(model, task="scene-generation")
    arch = g_folder.card.get("architecture")
    expected = {"gan": "scene-icgan", "ldm": "scene-ldm"}[backend]
    if arch != expected:
        raise InputError(f"{g_folder.name} is a {arch!r} model, not a {backend.upper()}; "
                         f"use --backend {'ldm' if arch == 'scene-ldm' else 'gan'} or another --model")
    weight, bank_folder = resolve_anchor(g_folder, anchor, instances)
    fa = registry.load(fa_folder, device)
    G = registry.load(g_folder, device)
    bank = registry.load(bank_folder, device) if bank_folder is not None else None
    if bank is not None and bank.cfg.feature_dim != G.cfg.feature_dim:
        raise ModelError(f"the instance bank {bank_folder.name} holds {bank.cfg.feature_dim}-d features, "
                         f"{g_folder.name} reads {G.cfg.feature_dim}-d ones")
    if G.cfg.feature_dim != fa.cfg.feature_dim:
        raise ModelError(f"{g_folder.name} is conditioned on {G.cfg.feature_dim}-d features but {fa_folder.name} "
                         f"gives {fa.cfg.feature_dim}-d ones; they were not trained together")
    f_ref = ((fa_folder.card.get("aligned_to") or {}).get("image_encoder") or {}).get("files")
    g_ref = conditioned_on(g_folder)
    if f_ref and g_ref and f_ref != g_ref:
        console.warn(f"{fa_folder.name} was aligned to a different image encoder than {g_folder.name} was "
                     "trained on; the images may not match the sound")
    model_size = G.cfg.image_size
    out_size = size or model_size
    note = None
    if out_size != model_size:
        note = (f"{g_folder.name} draws {model_size} px images; they are resized to {out_size} px (Lanczos), "
                f"not generated at {out_size} px")
        if out_size > model_size and model is None:
            note += f" (no {default_generator(backend, out_size)} model is installed)"
        console.warn(note)

    # --- sound → feature
    import torch

    wave, level = load_sound(sources, fa.cfg, gain if gain_db is None else 1.0, gain_db)
    level["scene_gain"] = scene_gain(level["rms_dbfs"], fa_folder)
    if level["clipped"]:
        console.warn(f"the sound peaks at {level['peak_dbfs']} dBFS: the audio encoder clips it to ±{fa.cfg.clip:g}")
    dev_t = device.torch_device

    nearest = []  # the training instance each feature was pulled toward

    def feature(w: np.ndarray):
        with torch.inference_mode():
            f = fa.embed(torch.from_numpy(w)[None].to(dev_t))
            if bank is not None:
                f, idx = bank.anchor(f, weight)
                nearest.append(int(idx[0]))
            return f

    noise = draw_noise(G, backend, n, seed, device)
    if backend == "ldm" and guidance is None:
        guidance = G.cfg.guidance  # the provenance and the report name what was used
    total_gain = float(10 ** (gain_db / 20)) if gain_db is not None else float(gain)
    params = {"sound": sound, "gain": total_gain, "n": n, "seed": seed, "backend": backend,
              "steps": steps if backend == "ldm" else None, "guidance": guidance, "size": out_size, "sweep_gain": gains,
              "anchor": weight}
    used = [fa_folder, g_folder] + ([bank_folder] if bank_folder is not None else [])
    prov = make_provenance(command=command, models={f.name: f.provenance() for f in used}, seed=seed, params=params)
    prov.update(extra_provenance or {})
    written: list[str] = []
    if gains is None:
        imgs = to_uint8(generate(G, backend, feature(wave).expand(n, -1), noise, steps, device, guidance), out_size)
        for i, path in enumerate(plan.images):
            save_image(path, imgs[i], provenance={**prov, "index": i})
            written.append(str(path))
        if plan.grid:
            save_image(plan.grid, make_grid(imgs), provenance=prov)
            written.append(str(plan.grid))
    else:
        columns = [to_uint8(generate(G, backend, feature(wave * np.float32(g)).expand(n, -1), noise, steps, device,
                                     guidance), out_size) for g in gains]
        rows = [[col[i] for col in columns] for i in range(n)]
        save_image(plan.strip, sweep_strip(rows, gains), provenance=prov)
        written.append(str(plan.strip))
    return {"sound": sound, "sources": [[p, g] for p, g in sources], "gain": total_gain, "backend": backend,
            "models": {"audio_encoder": fa_folder.name, "generator": g_folder.name,
                       **({"instances": bank_folder.name} if bank_folder is not None else {})}, "seed": seed, "n": n,
            "anchor": weight, "anchor_instances": nearest or None,
            "steps": steps if backend == "ldm" else None,
            "guidance": guidance,
            "size": out_size, "model_size": model_size, "note": note,
            "sweep_gain": gains, "level": level, "outputs": written, "device": str(device),
            "seconds": round(time.perf_counter() - t0, 3)}
