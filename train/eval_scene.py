"""Sound2Scene's Table 1 on held-out sounds, with the scene evaluator as the judge.

    python -m soundsight_train.eval_scene [--data DIR] [--split test] [--n 0] [--threads 1] \
        [--image-encoder scene-image-encoder-64] [--audio-encoder scene-audio-encoder-64] \
        [--gan scene-gan-64] [--ldm scene-ldm-64|none] [--evaluator scene-evaluator-64] \
        [--steps 25] [--mixes 200] [--seed 0] [--out-json runs/eval-scene.json] [--out-md runs/eval-scene.md]

Models are registry names or folders (``soundsight.registry.load``). The LDM rows are skipped
when the default LDM is not installed (``--ldm none`` skips them on purpose).

Rows (one image per test sound; the same noise z_N / initial latents for rows A and B):

- (A) the generator from the true image's features, G(z, f_V(image)) (and the LDM likewise);
- (B) ours: the generator from the sound, G(z, f_A(audio)) (GAN, and LDM with ``--steps`` DDIM steps);
- (C) retrieval: the training image whose f_V feature is nearest (L2 of unit-norm features) to f_A(audio);
- (D) the real test images.

Metrics: R@1 / R@5 = how often the sound's class (the loudest object's) is the evaluator's top
1 / top 5 class of the image (the paper uses CLIP against class names); ``r1_any``: the top
class is any object of the scene; FID (torchmetrics ``FrechetInceptionDistance`` with the
evaluator's pooled features as the feature extractor) against the real test images, so row D
has none; the FID of the real ``val`` images against them is printed as a floor.

Controls:

- volume: each sound is set to its reference level (the loudest object at gain 1, the mix's
  balance kept) and scaled by 0.25, 1 and 4 (the dataset's gain range); one z per sound for
  all three; a sound counts when the evaluator's estimate of the loudest object's size grows
  strictly at each step (``volume_monotonic``; ``volume_ends``: only 0.25x < 4x).
- mixing: pairs of single-object test sounds of different classes, each at gain 1, summed;
  a mix counts when both classes are in the evaluator's top 3 of the generated image
  (``mix_both_top3``). Also on the dataset's own two-object test scenes (``natural_mix_both_top3``),
  where the real images give the evaluator's ceiling.

Targets (issue 5): B at or above C on R@1; volume monotonic for >= 90 % of sounds; both sources
found in >= 60 % of mixes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULTS = {"image_encoder": "scene-image-encoder-64", "audio_encoder": "scene-audio-encoder-64",
            "gan": "scene-gan-64", "ldm": "scene-ldm-64", "evaluator": "scene-evaluator-64"}
TASKS = {"image_encoder": "scene-image-embedding", "audio_encoder": "scene-audio-embedding",
         "gan": "scene-generation", "ldm": "scene-generation", "evaluator": "scene-evaluation"}
VOLUME = (0.25, 1.0, 4.0)
TARGETS = {"volume_monotonic": 0.90, "mix_both_top3": 0.60}


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.eval_scene", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="scenes dataset folder or data root (default: scenes-5s-s0)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=0, help="test sounds to use (0: all)")
    for key, name in DEFAULTS.items():
        ap.add_argument("--" + key.replace("_", "-"), default=name, help=f"registry name or folder (default {name})")
    ap.add_argument("--anchor", type=float, default=None,
                    help="the GAN's --anchor (sound features pulled toward the nearest training instance's; "
                         "default: the GAN card's, 0 without one)")
    ap.add_argument("--ldm-anchor", type=float, default=None,
                    help="the same for the LDM's sound rows and controls (default: the LDM card's, 0 without one)")
    ap.add_argument("--instances", default=None, help="instance bank for the anchors (default: the cards')")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps of the LDM")
    ap.add_argument("--guidance", type=float, default=None, help="LDM guidance (default: the model's)")
    ap.add_argument("--ldm-n", type=int, default=0,
                    help="sounds (and at most as many mixes) for the LDM rows and controls (0: same as --n)")
    ap.add_argument("--mixes", type=int, default=200, help="two-sound mixes for the mixing control")
    ap.add_argument("--truncation", type=float, default=0.0,
                    help="GAN noise truncated to |z| < T by resampling (0: none; BigGAN's fidelity-vs-variety knob)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out-json", default="runs/eval-scene.json")
    ap.add_argument("--out-md", default="runs/eval-scene.md")
    return ap.parse_args(argv)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# models


def load_models(args, dev) -> tuple[dict, dict]:
    """The five models (the LDM may be None) and their provenance {role: {name, files}}."""
    from soundsight import registry
    from soundsight.errors import ModelError

    models, refs = {}, {}
    for key in DEFAULTS:
        name = getattr(args, key)
        if key == "ldm" and (name in ("", "none") or (name == DEFAULTS["ldm"] and not _installed(name))):
            log(f"LDM rows skipped ({'--ldm none' if name in ('', 'none') else f'{name} is not installed'})")
            models[key] = None
            continue
        try:
            folder = registry.resolve(name, task=TASKS[key])
        except ModelError as exc:
            raise SystemExit(f"error: {exc}") from None
        models[key] = registry.load(folder, dev)
        refs[key] = {"name": folder.name, "path": str(folder.path), "files": folder.provenance()}
    return models, refs


def backend_anchor(key: str, weight_arg, args, refs: dict, dev, loaded: dict):
    """(weight, bank or None, the bank's reference) of a back end's instance anchoring: the option,
    else the model card's ``inference`` defaults, as ``imagine`` resolves them. ``loaded`` keeps
    the banks by folder, so back ends sharing one load it once."""
    from soundsight import registry
    from soundsight.errors import UserError
    from soundsight_plugins.scene_gen.imagine import resolve_anchor

    if key not in refs:
        return 0.0, None, None
    try:
        weight, folder = resolve_anchor(registry.resolve(refs[key]["path"]), weight_arg, args.instances)
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None
    if folder is None:
        return 0.0, None, None
    log(f"{key.upper()} conditions anchored {weight:g} to the instances of {folder.name}")
    if str(folder.path) not in loaded:
        loaded[str(folder.path)] = registry.load(folder, dev)
    return weight, loaded[str(folder.path)], {"name": folder.name, "path": str(folder.path),
                                              "files": folder.provenance()}


def _installed(name: str) -> bool:
    from soundsight import registry
    from soundsight.errors import ModelError

    try:
        registry.locate(name)
        return True
    except ModelError:
        return False


def batched(fn, x, batch: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)], 0)


@torch.no_grad()
def embed_audio(fa, waves: np.ndarray, dev, batch: int) -> torch.Tensor:
    return batched(lambda w: fa.embed(torch.from_numpy(w).to(dev.torch_device)).float().cpu(), waves, batch)


@torch.no_grad()
def gan_images(G, feats: torch.Tensor, z: torch.Tensor, dev, batch: int) -> torch.Tensor:
    out = [G.generate(feats[i:i + batch].to(dev.torch_device), z=z[i:i + batch].to(dev.torch_device)).cpu()
           for i in range(0, len(feats), batch)]
    return torch.cat(out).clamp(0, 1)


@torch.no_grad()
def ldm_images(ldm, feats: torch.Tensor, latents: torch.Tensor, steps: int, guidance, dev, batch: int) -> torch.Tensor:
    out = [ldm.sample(feats[i:i + batch].to(dev.torch_device), steps=steps, guidance=guidance,
                      latents=latents[i:i + batch].to(dev.torch_device)).cpu()
           for i in range(0, len(feats), batch)]
    return torch.cat(out).clamp(0, 1)


def ldm_latents(ldm, n: int, gen: torch.Generator) -> torch.Tensor:
    c = ldm.cfg
    return torch.randn(n, c.latent_channels, c.latent_size, c.latent_size, generator=gen)


# --------------------------------------------------------------------------------------------
# metrics


def recall(out: dict, labels: torch.Tensor) -> dict:
    from soundsight_plugins.scene_gen.evaluator import topk_hits

    logits = out["logits"]
    return {"r1": round(float(topk_hits(logits, labels[:, 0], 1).float().mean()), 4),
            "r5": round(float(topk_hits(logits, labels[:, 0], 5).float().mean()), 4),
            "r1_any": round(float((logits.argmax(1)[:, None] == labels).any(1).float().mean()), 4)}


class FID:
    """torchmetrics FID in the evaluator's feature space against a fixed real set."""

    def __init__(self, evaluator, real: torch.Tensor, batch: int):
        from torchmetrics.image.fid import FrechetInceptionDistance

        from soundsight_plugins.scene_gen.evaluator import FIDFeatures

        self.batch = batch
        self.metric = FrechetInceptionDistance(feature=FIDFeatures(evaluator), normalize=True,
                                               reset_real_features=False)
        for i in range(0, len(real), batch):
            self.metric.update(real[i:i + batch], real=True)

    def __call__(self, fake: torch.Tensor) -> float:
        self.metric.reset()  # keeps the real statistics
        for i in range(0, len(fake), self.batch):
            self.metric.update(fake[i:i + self.batch], real=False)
        return round(float(self.metric.compute()), 3)


def both_top3(logits: torch.Tensor, labels: torch.Tensor) -> float | None:
    from soundsight_plugins.scene_gen.evaluator import all_in_topk

    return round(float(all_in_topk(logits, labels, 3).float().mean()), 4) if len(labels) else None


def correlation(a, b) -> float | None:
    """Pearson correlation (None when either side is constant)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 4)


def volume_stats(log_sizes: torch.Tensor) -> dict:
    """log_sizes (k, L): the estimated log size of each sound's image at L increasing levels.
    ``volume_monotonic``: strictly growing at every step; ``volume_ends``: last > first."""
    s = log_sizes.double()
    steps = (s[:, 1:] > s[:, :-1]).all(1)
    return {"volume_monotonic": round(float(steps.float().mean()), 4),
            "volume_ends": round(float((s[:, -1] > s[:, 0]).float().mean()), 4),
            "volume_mean_side": [round(float(torch.exp(s[:, j]).mean()), 4) for j in range(s.shape[1])],
            "volume_n": len(s)}


def mix_pairs(labels: np.ndarray, n_objects: np.ndarray, count: int, seed: int) -> np.ndarray:
    """(M, 2) indices of single-object samples with different classes, drawn without repeats."""
    single = np.flatnonzero(n_objects == 1)
    rng = np.random.default_rng(seed)
    pairs, seen = [], set()
    for _ in range(count * 20):
        if len(pairs) == count or len(single) < 2:
            break
        i, j = rng.choice(single, 2, replace=False)
        key = (min(i, j), max(i, j))
        if labels[i, 0] != labels[j, 0] and key not in seen:
            seen.add(key)
            pairs.append((i, j))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def other_class_partners(labels: np.ndarray, seed: int) -> np.ndarray:
    """For each sound, a seeded random sound of another class (its own index when there is none).
    A generator fed the partner's features and judged against the sound's own class scores only
    what it draws whatever the sound: its bias, together with the judge's."""
    rng = np.random.default_rng([seed, 17])
    out = np.arange(len(labels))
    for i in range(len(labels)):
        others = np.flatnonzero(labels != labels[i])
        if len(others):
            out[i] = rng.choice(others)
    return out


def constant_guess_r1(labels: np.ndarray) -> float:
    """R@1 of always naming the most frequent class: the floor a biased generator reaches with
    no information from the sound."""
    return round(float(np.bincount(labels).max() / len(labels)), 4) if len(labels) else 0.0


# --------------------------------------------------------------------------------------------
# the evaluation


def run(args) -> dict:
    from soundsight.device import resolve_device
    from soundsight_plugins.scene_gen.evaluator import labelled_metrics, size_target
    from soundsight_train import scene_common as sc
    from soundsight_train import scenes

    t_all = time.time()
    dev = resolve_device(args.device, threads=args.threads)
    folder = sc.find_scenes(args.data)
    split, train = scenes.SceneSplit(folder, args.split), scenes.SceneSplit(folder, "train")
    n = len(split) if args.n <= 0 else min(args.n, len(split))
    idx = np.arange(n)
    models, refs = load_models(args, dev)
    fv, fa, G, ldm, ev = (models[k] for k in ("image_encoder", "audio_encoder", "gan", "ldm", "evaluator"))
    for name, m in (("gan", G), ("ldm", ldm), ("audio_encoder", fa)):
        if m is not None and m.cfg.feature_dim != fv.cfg.feature_dim:
            raise SystemExit(f"error: {refs[name]['name']} works with {m.cfg.feature_dim}-d features, "
                             f"{refs['image_encoder']['name']} gives {fv.cfg.feature_dim}")
    banks: dict = {}
    weight, bank, bank_ref = backend_anchor("gan", args.anchor, args, refs, dev, banks)
    ldm_weight, ldm_bank, ldm_bank_ref = backend_anchor("ldm", args.ldm_anchor, args, refs, dev, banks)

    def anchored(f: torch.Tensor, backend: str = "gan") -> torch.Tensor:
        """A back end's condition for audio features, as `imagine` makes it."""
        w, b = (weight, bank) if backend == "gan" else (ldm_weight, ldm_bank)
        return f if b is None else b.anchor(f, w)[0].cpu()

    labels = torch.from_numpy(split.labels[idx].astype("int64"))
    n_ldm = n if args.ldm_n <= 0 else min(args.ldm_n, n)
    log(f"{folder.name}/{args.split}: {n} sounds ({n_ldm} for the LDM), {len(split.classes)} classes; device {dev}")

    ev_size = ev.cfg.image_size
    real = sc.to_unit(sc.images_nchw(split, ev_size)[idx], "cpu")
    fid = FID(ev, real, args.batch)
    judged = {}

    def judge(key: str, images: torch.Tensor) -> dict:
        out = ev.predict(images, batch=args.batch)
        judged[key] = out
        return out

    # features of the sounds and of the true images
    t0 = time.time()
    waves = split.audio(idx)
    z_a = embed_audio(fa, waves, dev, args.batch)
    z_v = sc.encode_images(fv, sc.images_nchw(split, fv.cfg.image_size)[idx], dev.torch_device, args.batch)
    log(f"f_A of {n} sounds, f_V of {n} images: {time.time() - t0:.0f}s")

    true_size = size_target(split.boxes[idx], split.spec.size)  # log side of the loudest object
    gen = torch.Generator().manual_seed(args.seed)
    z = G.sample_z(n, gen, truncation=args.truncation)
    rows = []

    def add_row(key, row, method, images, with_fid=True):
        t = time.time()
        out = judge(key, images)
        k = len(images)
        rec = {"key": key, "row": row, "method": method, "n": k, **recall(out, labels[:k]),
               "fid": fid(images) if with_fid else None,
               # does the picture keep the scene's scale? the evaluator's size estimate against the true size
               "size_corr": correlation(out["log_size"].numpy(), true_size[:k])}
        rows.append(rec)
        log(f"({row}) {method}: R@1 {rec['r1']} R@5 {rec['r5']} FID {rec['fid']} size corr {rec['size_corr']} "
            f"({time.time() - t:.0f}s)")

    t0 = time.time()
    add_row("A-gan", "A", "GAN from the true image's f_V features", gan_images(G, z_v, z, dev, args.batch))
    how = f" anchored {weight:g}" if weight else ""
    add_row("B-gan", "B", f"ours: GAN from the sound (f_A{how})", gan_images(G, anchored(z_a), z, dev, args.batch))
    partner = torch.from_numpy(other_class_partners(labels[:, 0].numpy(), args.seed))
    add_row("B0-gan", "B0", "GAN from another class's sound (bias floor)",
            gan_images(G, anchored(z_a[partner]), z, dev, args.batch), with_fid=False)
    log(f"GAN rows: {time.time() - t0:.0f}s")
    lat = None
    if ldm is not None:
        t0 = time.time()
        lat = ldm_latents(ldm, n_ldm, torch.Generator().manual_seed(args.seed + 1))
        add_row("A-ldm", "A", f"LDM from the true image's f_V features ({args.steps} DDIM steps)",
                ldm_images(ldm, z_v[:n_ldm], lat, args.steps, args.guidance, dev, args.batch))
        how_ldm = f", anchored {ldm_weight:g}" if ldm_weight else ""
        add_row("B-ldm", "B", f"ours: LDM from the sound ({args.steps} DDIM steps{how_ldm})",
                ldm_images(ldm, anchored(z_a[:n_ldm], "ldm"), lat, args.steps, args.guidance, dev, args.batch))
        add_row("B0-ldm", "B0", "LDM from another class's sound (bias floor)",
                ldm_images(ldm, anchored(z_a[partner[:n_ldm]], "ldm"), lat, args.steps, args.guidance, dev, args.batch),
                with_fid=False)
        log(f"LDM rows: {time.time() - t0:.0f}s")

    # (C) nearest training image by audio feature
    t0 = time.time()
    train_f = sc.encode_images(fv, sc.images_nchw(train, fv.cfg.image_size), dev.torch_device, args.batch)
    # unit-norm features: the largest cosine is the smallest L2 distance
    train_ev = sc.images_nchw(train, ev_size)

    def nearest(feats: torch.Tensor) -> torch.Tensor:
        return torch.cat([(feats[i:i + 256] @ train_f.t()).argmax(1) for i in range(0, len(feats), 256)])

    def retrieve(feats: torch.Tensor) -> torch.Tensor:
        return sc.to_unit(train_ev[nearest(feats)], "cpu")

    near_a = nearest(z_a)
    add_row("C", "C", "retrieval: nearest training image by f_A -> f_V", sc.to_unit(train_ev[near_a], "cpu"))
    # the retrieved image's own feature is a condition G trained on: what G loses against (C)
    # on it is the generator's loss alone, with no audio-to-image gap left
    add_row("C-gan", "C'", "GAN from the retrieved training image's f_V", gan_images(G, train_f[near_a], z, dev,
                                                                                     args.batch))
    log(f"retrieval over {len(train_f)} training images: {time.time() - t0:.0f}s")
    add_row("D", "D", f"real {args.split} images", real, with_fid=False)
    val = scenes.SceneSplit(folder, "val")
    fid_floor = fid(sc.to_unit(sc.images_nchw(val, ev_size), "cpu"))

    # the evaluator itself on the real images of this split
    ev_real = labelled_metrics(judged["D"], labels, torch.from_numpy(true_size))

    # controls
    controls = {}
    rel = split.gains[idx] / split.gains[idx, :1]  # the loudest object at gain 1, the balance kept
    pairs = mix_pairs(split.labels[idx], split.n_objects[idx], args.mixes, args.seed)
    mix_waves = (split.audio(pairs[:, 0], gains=[[1.0, 0.0]]) + split.audio(pairs[:, 1], gains=[[1.0, 0.0]])
                 if len(pairs) else np.zeros((0, split.spec.n_samples), np.float32))
    mix_labels = torch.from_numpy(np.stack([split.labels[pairs[:, 0], 0], split.labels[pairs[:, 1], 0]], 1)
                                  .astype("int64")) if len(pairs) else torch.zeros(0, 2, dtype=torch.long)
    z_mix = embed_audio(fa, mix_waves, dev, args.batch) if len(pairs) else None
    two = labels[:, 1] >= 0
    # retrieval answers the same controls: does f_A carry the level and both sources of a mix
    # at all, whatever a generator then draws from it?
    backends = [("gan", n)] + ([("ldm", n_ldm)] if ldm is not None else []) + [("retrieval", n)]

    def draw(backend: str, feats: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if backend == "gan":
            return gan_images(G, anchored(feats), noise, dev, args.batch)
        if backend == "ldm":
            return ldm_images(ldm, anchored(feats, "ldm"), noise, args.steps, args.guidance, dev, args.batch)
        return retrieve(feats)

    for backend, k in backends:
        t0 = time.time()
        sizes = []
        noise = z[:k] if backend == "gan" else lat[:k] if backend == "ldm" else None
        for m in VOLUME:
            z_m = embed_audio(fa, split.audio(idx[:k], gains=rel[:k] * m), dev, args.batch)
            sizes.append(ev.predict(draw(backend, z_m, noise), batch=args.batch)["log_size"])
        c = volume_stats(torch.stack(sizes, 1))
        m_n = min(len(pairs), n_ldm) if backend == "ldm" else len(pairs)  # the LDM's mixes: at most --ldm-n
        if m_n:
            zm = torch.Generator().manual_seed(args.seed + 2)
            noise = (G.sample_z(m_n, zm, truncation=args.truncation) if backend == "gan"
                     else ldm_latents(ldm, m_n, zm) if backend == "ldm" else None)
            imgs = draw(backend, z_mix[:m_n], noise)
            c["mix_both_top3"] = both_top3(ev.predict(imgs, batch=args.batch)["logits"], mix_labels[:m_n])
            c["mixes_n"] = m_n
        b_out = judged["C" if backend == "retrieval" else f"B-{backend}"]["logits"]
        c["natural_mix_both_top3"] = both_top3(b_out[two[:k]], labels[:k][two[:k]])
        c["natural_mix_n"] = int(two[:k].sum())
        controls[backend] = c
        log(f"controls ({backend}): volume monotonic {c['volume_monotonic']} (ends {c['volume_ends']}, mean side "
            f"{c['volume_mean_side']}); mixes both in top 3 {c.get('mix_both_top3')} of {c.get('mixes_n', 0)}; "
            f"natural two-object scenes {c['natural_mix_both_top3']} ({time.time() - t0:.0f}s)")
    controls["real"] = {"natural_mix_both_top3": both_top3(judged["D"]["logits"][two], labels[two]),
                        "natural_mix_n": int(two.sum())}

    by = {r["key"]: r for r in rows}
    targets = {"B_gan_r1_at_least_C": by["B-gan"]["r1"] >= by["C"]["r1"],
               "gan_volume_monotonic_90": controls["gan"]["volume_monotonic"] >= TARGETS["volume_monotonic"],
               "gan_mixes_60": (controls["gan"].get("mix_both_top3") or 0) >= TARGETS["mix_both_top3"]}
    if ldm is not None:
        targets.update({"B_ldm_r1_at_least_C": by["B-ldm"]["r1"] >= by["C"]["r1"],
                        "ldm_volume_monotonic_90": controls["ldm"]["volume_monotonic"] >= TARGETS["volume_monotonic"],
                        "ldm_mixes_60": (controls["ldm"].get("mix_both_top3") or 0) >= TARGETS["mix_both_top3"]})
    n_classes = len(split.classes)
    return {"dataset": folder.name, "split": args.split, "n": n, "n_ldm": n_ldm if ldm is not None else 0,
            "classes": n_classes, "classes_in_split": int(len(np.unique(split.labels[idx, 0]))),
            "seed": args.seed, "gan_truncation": args.truncation, "gan_anchor": weight, "gan_instances": bank_ref,
            "ldm_anchor": ldm_weight, "ldm_instances": ldm_bank_ref,
            "ldm_steps": args.steps if ldm is not None else None,
            "models": refs, "rows": rows, "fid_floor_val_vs_test": fid_floor,
            "random_ranking": {"r1": round(1 / n_classes, 4), "r5": round(min(5, n_classes) / n_classes, 4)},
            "constant_guess_r1": constant_guess_r1(labels[:, 0].numpy()),
            # the controls' chance levels: a random order of the three sizes; a random class ranking
            "chance": {"volume_monotonic": round(1 / math.factorial(len(VOLUME)), 4), "volume_ends": 0.5,
                       "both_top3": round(6 / (n_classes * (n_classes - 1)), 4) if n_classes > 2 else 1.0},
            "evaluator_on_real": ev_real, "controls": controls, "targets": targets,
            "device": str(dev), "seconds": round(time.time() - t_all, 1),
            "command": "python -m soundsight_train.eval_scene " + " ".join(sys.argv[1:])}


def _f(v, nd=3):
    return "—" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


NAMES = {"gan": "GAN", "ldm": "LDM", "retrieval": "retrieval (C)"}
SPLIT_NATURE = {"test": "held-out stamps and recordings",
                "val": "the training stamps and recordings in new compositions"}


def markdown(res: dict) -> str:
    split = res["split"]
    what = SPLIT_NATURE.get(split, "")
    lines = [f"{'Held-out sounds' if split == 'test' else 'Sounds'}: {res['dataset']} `{split}` split, {res['n']} sounds "
             f"({res['classes_in_split']} of {res['classes']} classes{'; ' + what if what else ''}). "
             f"Judge: {res['models']['evaluator']['name']}; one image per sound, seed {res['seed']}"
             + (f"; the GAN's sound features anchored {res['gan_anchor']:g} to {res['gan_instances']['name']}"
                if res.get("gan_anchor") else "")
             + (f"; the LDM's anchored {res['ldm_anchor']:g} to {res['ldm_instances']['name']}"
                if res.get("ldm_anchor") else "") + ".", "",
             "| row | method | R@1 | R@5 | FID (evaluator features) | size corr. |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| ({r['row']}) | {r['method']} | {r['r1']:.3f} | {r['r5']:.3f} | {_f(r['fid'], 2)} | "
                     f"{_f(r['size_corr'], 2)} |")
    rr = res["random_ranking"]
    lines += ["", f"R@k: the sound's (loudest object's) class among the evaluator's top k classes of the image; "
              f"a random ranking gives R@1 {rr['r1']:.3f}, R@5 {rr['r5']:.3f}; always naming the most frequent "
              f"class gives R@1 {res.get('constant_guess_r1', float('nan')):.3f}. (B0): the same generator, noise and "
              "judge, fed a sound of another class: what it scores with no class information from the sound. "
              f"FID against the real {split} images"
              + (f"; real val images (training stamps, new compositions) score {res['fid_floor_val_vs_test']:.2f}. "
                 if split != "val" else ". ")
              + "Size corr.: correlation of the evaluator's size estimate of the loudest object in the image with "
              f"its true size in the {split} scene (does the picture keep the sound's scale?).", ""]
    backs = [b for b in ("gan", "ldm", "retrieval") if b in res["controls"]]
    ch = res["chance"]
    lines += ["| control | " + " | ".join(NAMES[b] for b in backs) + " | real images | chance | target |",
              "|---|" + "---|" * len(backs) + "---|---|---|"]
    c = res["controls"]
    lines.append("| volume: estimated size grows 0.25x → 1x → 4x | "
                 + " | ".join(f"{c[b]['volume_monotonic']:.3f}" for b in backs)
                 + f" | | {ch['volume_monotonic']:.3f} | ≥ 0.90 |")
    lines.append("| volume: size at 4x > size at 0.25x | "
                 + " | ".join(f"{c[b]['volume_ends']:.3f}" for b in backs) + f" | | {ch['volume_ends']:.3f} | |")
    lines.append("| two-sound mixes: both classes in top 3 | "
                 + " | ".join(_f(c[b].get('mix_both_top3')) for b in backs) + f" | | {ch['both_top3']:.4f} | ≥ 0.60 |")
    lines.append("| dataset's two-object scenes: both classes in top 3 | "
                 + " | ".join(_f(c[b]['natural_mix_both_top3']) for b in backs)
                 + f" | {_f(c['real']['natural_mix_both_top3'])} | {ch['both_top3']:.4f} | |")
    e = res["evaluator_on_real"]

    def counts(key):
        return " / ".join(f"{c[b].get(key, 0)} ({NAMES[b]})" for b in backs)

    def sides(b):
        return " / ".join(f"{v:.3f}" for v in c[b]["volume_mean_side"])

    lines += ["", f"Mixes: {counts('mixes_n')} pairs of single-object sounds of different classes, each at gain 1. "
              f"Volume: {counts('volume_n')} sounds at their reference level x0.25 / x1 / x4, one noise draw per "
              f"sound; mean estimated side of the loudest object (fraction of the image side) "
              + "; ".join(f"{NAMES[b]} {sides(b)}" for b in backs) + f". The evaluator on the real {res['split']} "
              f"images: top1 {e['top1']:.3f}, top5 {e['top5']:.3f}, size R^2 {e['size_r2']:.3f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    import torch as _torch

    if args.threads:
        _torch.set_num_threads(args.threads)
    res = run(args)
    md = markdown(res)
    from soundsight.outputs import write_bytes_atomic, write_json_atomic

    for p in (args.out_json, args.out_md):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out_json, res)
    write_bytes_atomic(args.out_md, md.encode())
    print(md)
    log(f"wrote {args.out_json} and {args.out_md} ({res['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
