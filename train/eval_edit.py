"""Evaluation of latent-edit (issue 6): inversion quality, sound inserts, volume edits.

    python -m soundsight_train.eval_edit [--data DIR] [--n 100] [--real 24] [--photo FILE ...] \
        [--steps 150] [--refine] [--strengths 0.5,0.75,1] [--volume-strengths 0.5,1,2] [--topk 5] \
        [--generator scene-gan-64] [--image-encoder ...] [--audio-encoder ...] [--evaluator scene-evaluator-64] \
        [--out runs/eval-edit] [--threads 1]

Photos: ``--n`` composites of the scenes dataset's ``test`` split (held-out stamps and
recordings, at the generator's size) and real photos: the MATE nature photographs (the
backgrounds the composites were made on, here whole and without objects), scikit-image's and
scikit-learn's colour photos when installed (astronaut, coffee, chelsea, rocket, china,
flower: out of domain), and any ``--photo`` files. Each photo is inverted once (the command's
inversion, same steps and seed), then edited.

Measures (everything at the generator's size, judged by the scene-gen evaluator, a supervised
classifier + object-size regressor trained on real composites, never used for editing):

- inversion: PSNR / SSIM of G(z_N_inv, z_V_inv) against the photo (target ≥ 24 dB);
- insert: each photo gets the sound of a held-out test recording whose class it does not
  show; success = the evaluator ranks that class in its top k on the edit (target ≥ 70 %),
  with the rate on the reconstruction (before the edit) as the chance level; locality = SSIM
  between edit and reconstruction outside the inserted object's region (target ≥ 0.7). The
  region is a square of the side the evaluator estimates for the edit's loudest object,
  placed where the edit changed the reconstruction most;
- ceiling: the sound's own held-out object (its stamp, at the place and size its test scene has
  it, so as loud as the sound) pasted onto the photo, judged the same way: a perfect insert, so
  the most insert success this judge can report;
- oracle insert: the same edit with z_A replaced by f_V of the sound's own held-out picture
  (what a perfect audio encoder would give): separates the audio encoder from inversion +
  generator;
- ``--region`` (default ``auto``, as the command's inserts): the insert's edited condition only
  inside the square where the whole-image edit drew its change (``none``: the paper's whole
  picture); ``--volume-region`` the same for the volume edits (default ``none``, as the command's);
- volume: single-object test composites, their own sound; ``--louder`` (z_A(2x) - z_A(x/2))
  should make the evaluator's estimated object size larger than on the reconstruction,
  ``--quieter`` smaller (target ≥ 80 % of the edits in the right direction).

Writes ``results.json``, ``results.md`` (the tables) and ``examples.png`` (photo,
reconstruction, insert, louder, quieter for a few photos) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

EVALUATOR_TASK = "scene-evaluation"
EVALUATOR_COMMAND = "python -m soundsight_train.scene_evaluator --out models/scene-evaluator-64"
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def parse(argv=None):
    from soundsight_plugins.latent_edit.edits import INSERT_RULES
    from soundsight_plugins.latent_edit.plugin import DEFAULT_REGION

    ap = argparse.ArgumentParser(prog="python -m soundsight_train.eval_edit", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="scenes dataset folder or data root (default: scenes-5s-s0)")
    ap.add_argument("--n", type=int, default=100, help="test composites")
    ap.add_argument("--real", type=int, default=24, help="at most this many installed real photos (0: none)")
    ap.add_argument("--photo", action="append", default=[], help="another real photo (repeatable)")
    ap.add_argument("--steps", type=int, default=None, help="inversion steps (default: the command's)")
    ap.add_argument("--refine", type=int, default=0, help="per-image generator fine-tuning steps (0: off)")
    ap.add_argument("--strengths", default="0.5,0.75,1", help="insert strengths λ")
    ap.add_argument("--insert-rule", default="mix", choices=INSERT_RULES,
                    help="mix: (1 - λ) z_V + λ z_A (the paper's); add: z_V + λ (z_A - μ)")
    ap.add_argument("--region", default=DEFAULT_REGION["insert"], choices=("none", "auto"),
                    help="inserts (the command's --region, auto by default): the edited condition only inside the "
                         "square where the whole-image edit drew its change, the inverted z_V outside it; none: the "
                         "whole picture (the paper's)")
    ap.add_argument("--volume-region", default=DEFAULT_REGION["volume"], choices=("none", "auto"),
                    help="the same for the volume edits (none by default, as in the command)")
    ap.add_argument("--anchor", type=float, default=0.0,
                    help="pull each sound feature toward the nearest training instance's f_V by this weight "
                         "(imagine's --anchor; 0: the paper's z_A)")
    ap.add_argument("--instances", default=None, help="instance bank for --anchor (default scene-instances-64)")
    ap.add_argument("--volume-strengths", default="0.5,1,2", help="volume-edit strengths λ")
    ap.add_argument("--volume-gains", default="2,0.5", help="g1,g2 of --louder (--quieter swaps them)")
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--generator", default=None)
    ap.add_argument("--image-encoder", default=None)
    ap.add_argument("--audio-encoder", default=None)
    ap.add_argument("--evaluator", default="scene-evaluator-64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="runs/eval-edit")
    ap.add_argument("--examples", type=int, default=6, help="photos shown in examples.png")
    return ap.parse_args(argv)


def _floats(text: str) -> list[float]:
    return [float(v) for v in str(text).split(",") if v.strip()]


# --------------------------------------------------------------------------------------------
# Photos


def real_photos(limit: int, extra: list[str]) -> list[dict]:
    """Installed real photos (MATE nature photographs, skimage, sklearn) and ``extra`` files."""
    from soundsight.image import image_to_array, load_image

    out = []
    if limit > 0:
        from soundsight_train import scenes

        for item in scenes.find_backgrounds(extra=False):
            out.append({"name": item.name, "source": "mate-backgrounds", "path": item.path})
        try:
            from skimage import data as skdata

            for name in SKIMAGE_PHOTOS:
                out.append({"name": name, "source": "skimage", "array": np.asarray(getattr(skdata, name)())})
        except Exception:  # not installed, or an image missing from this version
            pass
        d = scenes._module_dir("sklearn")
        for name in SKLEARN_PHOTOS:
            if d is not None and (d / "datasets/images" / name).is_file():
                out.append({"name": Path(name).stem, "source": "sklearn", "path": str(d / "datasets/images" / name)})
        out = out[:limit]
    for p in extra:
        out.append({"name": Path(p).stem, "source": "file", "path": p})
    for item in out:
        if "array" not in item:
            item["array"] = image_to_array(load_image(item["path"]))
        a = item["array"]
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, -1)
        item["array"] = np.ascontiguousarray(a[..., :3]).astype(np.uint8)
    return out


def test_composites(split, n: int, seed: int) -> np.ndarray:
    """``n`` indices of the split in a seeded order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(len(split))[:min(n, len(split))])


# --------------------------------------------------------------------------------------------
# Measures


def outside_ssim(edit: torch.Tensor, recon: torch.Tensor, log_size: torch.Tensor) -> tuple[torch.Tensor, list]:
    """SSIM (edit vs reconstruction) outside each edit's object square, and the squares.

    The square's side is the evaluator's estimate for the edit's loudest object (exp(log size)
    of the image side); it is placed where it covers the largest summed change |edit - recon|.
    """
    from soundsight_plugins.latent_edit.edits import best_square
    from soundsight_plugins.latent_edit.invert import ssim_map

    S = edit.shape[-1]
    smap = ssim_map(edit, recon, same=True)  # (B, S, S)
    change = (edit - recon).abs().sum(1, keepdim=True)  # (B, 1, S, S)
    vals, boxes = [], []
    for i in range(len(edit)):
        side = int(round(float(torch.exp(log_size[i])) * S))
        side = max(4, min(S - 1, side))  # never the whole frame: something stays outside
        (x0, y0, _, _), _ = best_square(change[i], side)
        mask = torch.ones(S, S, dtype=torch.bool)
        mask[y0:y0 + side, x0:x0 + side] = False
        vals.append(smap[i][mask].mean())
        boxes.append((x0, y0, x0 + side, y0 + side))
    return torch.stack(vals), boxes


def pasted_masks(split, size: int, log=print) -> np.ndarray:
    """uint8 (N, size, size) masks of each test scene's objects: the cut-outs' own pixels
    (``scenes.object_masks``), or their boxes when the dataset does not record its background
    photos (then the pasted square carries a little of its scene's background)."""
    from soundsight_train import scenes

    try:
        return scenes.object_masks(split, size)
    except (KeyError, FileNotFoundError, OSError):
        log("the dataset does not record its background photos: the ceiling pastes the objects' boxes")
    out = np.zeros((len(split), size, size), np.uint8)
    scale = size / split.spec.size
    for i in range(len(split)):
        for x0, y0, x1, y1 in split.boxes[i]:
            if x1 > x0:
                out[i, int(y0 * scale):int(np.ceil(y1 * scale)), int(x0 * scale):int(np.ceil(x1 * scale))] = 1
    return out


def class_in_topk(logits: torch.Tensor, cls: int, k: int) -> list[bool]:
    """Per image: is class ``cls`` among the evaluator's top ``k`` classes?"""
    return [bool(h) for h in (logits.topk(min(k, logits.shape[1]), dim=1).indices == cls).any(1)]


def rate(x) -> float | None:
    x = [bool(v) for v in x]
    return round(sum(x) / len(x), 4) if x else None


def mean(x) -> float | None:
    x = [float(v) for v in x]
    return round(float(np.mean(x)), 4) if x else None


# --------------------------------------------------------------------------------------------


def load_evaluator(name: str, dev):
    from soundsight import registry
    from soundsight.errors import ModelError

    try:
        folder = registry.resolve(name, task=EVALUATOR_TASK)
    except ModelError as exc:
        if str(exc).startswith("unknown model"):
            raise SystemExit(f"error: evaluator {name!r} is not installed; train it with `{EVALUATOR_COMMAND}`")
        raise
    return registry.load(folder, dev), folder


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from soundsight.device import resolve_device
    from soundsight.errors import UserError
    from soundsight_plugins.latent_edit import pipeline as P
    from soundsight_plugins.latent_edit.edits import (EditPlan, composite, edit_conditions, feature_mean,
                                                      render_edits)
    from soundsight_plugins.latent_edit.invert import InversionConfig, invert, psnr, ssim, to_model_size
    from soundsight_train import scene_common as sc
    from soundsight_train import scenes

    dev = resolve_device(args.device)
    try:
        folders = P.resolve_models({"generator": args.generator, "image_encoder": args.image_encoder,
                                    "audio_encoder": args.audio_encoder})
    except UserError as exc:
        raise SystemExit(f"error: {exc}")
    models = P.load_models(folders, dev)
    G, fa, fv = models["generator"], models["audio_encoder"], models["image_encoder"]
    ev, ev_folder = load_evaluator(args.evaluator, dev)
    from soundsight import registry
    from soundsight_plugins.scene_gen.imagine import resolve_anchor

    try:  # checks the bank against G's image encoder, as imagine does
        _, bank_folder = resolve_anchor(folders["generator"], args.anchor, args.instances)
    except UserError as exc:
        raise SystemExit(f"error: {exc}")
    bank = registry.load(bank_folder, dev) if bank_folder is not None else None

    def embed(wave, gains):
        zs = P.embed_sound(fa, wave, gains, dev)
        return zs if bank is None else [bank.anchor(z, args.anchor)[0] for z in zs]
    S = G.cfg.image_size
    data = sc.find_scenes(args.data)
    test = scenes.SceneSplit(data, "test")
    classes = list(test.classes)
    ev_classes = list(ev.cfg.classes) if ev.cfg.classes else classes
    if ev_classes != classes:
        raise SystemExit("error: the evaluator was trained on other classes than this dataset's")
    strengths, vstrengths = _floats(args.strengths), _floats(args.volume_strengths)
    g1, g2 = _floats(args.volume_gains)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda *a: print(*a, flush=True)  # noqa: E731

    # ---- photos: test composites at full size (128 px) and real photos
    idx = test_composites(test, args.n, args.seed)
    photos = [{"name": f"test-{int(i)}", "source": "test-composite", "array": test.images[int(i)], "index": int(i),
               "labels": [int(c) for c in test.labels[int(i)] if c >= 0]} for i in idx]
    photos += [dict(p, labels=[]) for p in real_photos(args.real, args.photo)]
    log(f"{len(idx)} test composites of {data.name} + {len(photos) - len(idx)} real photos; models "
        + ", ".join(f.name for f in folders.values()) + f"; evaluator {ev_folder.name}")

    # ---- sounds to insert: held-out test recordings of single-object composites, at their gain
    single = np.flatnonzero(test.n_objects == 1)
    if len(single) == 0:
        raise SystemExit("error: the test split has no single-object composite to take sounds from")
    rng = np.random.default_rng(args.seed + 1)
    sr = int(fa.cfg.sample_rate)
    if sr != test.sample_rate:
        raise SystemExit(f"error: the audio encoder wants {sr} Hz, the dataset is {test.sample_rate} Hz")

    try:
        insert_plan = EditPlan("insert", strengths, rule=args.insert_rule, mean=feature_mean(G))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    cfg = InversionConfig()
    if args.steps is not None:
        cfg.steps = args.steps
    cfg.refine_steps = args.refine
    masks_all = pasted_masks(test, S, log)  # the test objects' own masks, for the pasted ceiling

    def edit(inv, conds, region):
        return render_edits(inv.generator, inv.z_n, conds, inv.z_v, inv.recon, region)[0]

    rows, examples = [], []
    t_all = time.time()
    for k, ph in enumerate(photos):
        target, box = to_model_size(ph["array"], S)
        inv = invert(G, fv, target.to(dev.torch_device), cfg, seed=args.seed)
        recon = inv.recon
        # insert: a sound whose class the photo does not show
        cand = [int(j) for j in single if int(test.labels[j, 0]) not in ph["labels"]]
        j = cand[int(rng.integers(len(cand)))]
        cls = int(test.labels[j, 0])
        wave = test.audio([j])[0]
        (z_ins,) = embed(wave, [1.0])
        ins = edit(inv, edit_conditions(insert_plan, inv.z_v, {"sound": z_ins}), args.region)
        row = {"name": ph["name"], "source": ph["source"], "psnr": float(psnr(recon, inv.target)),
               "ssim": float(ssim(recon, inv.target)), "seconds": inv.metrics["seconds"],
               "insert_class": classes[cls], "insert_recording": int(test.recordings[j, 0])}
        pred = ev.predict(torch.cat([recon, ins]).cpu())
        hit = class_in_topk(pred["logits"], cls, args.topk)
        row["insert_hit_before"] = hit[0]
        row["insert_hit"] = hit[1:]
        loc, _ = outside_ssim(ins.cpu(), recon.cpu().expand_as(ins), pred["log_size"][1:])
        row["insert_outside_ssim"] = [float(v) for v in loc]
        # oracle: the sound's embedding replaced by f_V of the sound's own (held-out) picture, which
        # is what a perfect audio encoder would give; separates f_A from inversion + generator
        pic, _ = to_model_size(test.images[j], fv.cfg.image_size)
        with torch.no_grad():
            z_pic = F.normalize(fv(pic.to(dev.torch_device)).float(), dim=-1)
        orc = edit(inv, edit_conditions(insert_plan, inv.z_v, {"sound": z_pic}), args.region)
        row["oracle_hit"] = class_in_topk(ev.predict(orc.cpu())["logits"], cls, args.topk)
        row["audio_image_cosine"] = float((F.normalize(z_ins.float(), dim=-1) * z_pic).sum())
        # ceiling: the sound's own real object (its held-out stamp, where and how big its scene has
        # it) pasted onto the photo: a perfect insert; what this judge can find of one
        m = torch.from_numpy(masks_all[j]).float()[None, None]
        own, _ = to_model_size(test.images[j], S)
        pasted = inv.target.cpu() * (1 - m) + own * m
        row["paste_hit"] = class_in_topk(ev.predict(pasted)["logits"], cls, args.topk)[0]
        # the composite at the photo's size, judged again at model size
        comp = composite(ph["array"], box, recon.cpu(), ins.cpu())
        comp_t = torch.from_numpy(comp).permute(0, 3, 1, 2).float() / 255
        x0, y0, x1, y1 = box
        cpred = ev.predict(comp_t[:, :, y0:y1, x0:x1].contiguous())
        row["insert_hit_composite"] = class_in_topk(cpred["logits"], cls, args.topk)
        # volume: single-object composites, their own sound
        if ph["source"] == "test-composite" and int(test.n_objects[ph["index"]]) == 1:
            own = test.audio([ph["index"]])[0]
            za1, za2 = embed(own, [g1, g2])
            vplan = EditPlan("volume", vstrengths)
            loud = edit(inv, edit_conditions(vplan, inv.z_v, {"g1": za1, "g2": za2}), args.volume_region)
            quiet = edit(inv, edit_conditions(vplan, inv.z_v, {"g1": za2, "g2": za1}), args.volume_region)
            sz = ev.predict(torch.cat([recon, loud, quiet]).cpu())["log_size"]
            n = len(vstrengths)
            row["size_recon"] = float(sz[0])
            row["size_louder"] = [float(v) for v in sz[1:1 + n]]
            row["size_quieter"] = [float(v) for v in sz[1 + n:]]
            bx0, by0, bx1, by1 = (int(v) for v in test.boxes[ph["index"], 0])
            row["true_size"] = math.log(max(bx1 - bx0, by1 - by0) / test.spec.size)  # the evaluator's target
            if len(examples) < args.examples:
                mid = n // 2
                examples.append(torch.cat([inv.target.cpu(), recon.cpu(), ins[len(strengths) // 2:len(strengths) // 2 + 1].cpu(),
                                           loud[mid:mid + 1].cpu(), quiet[mid:mid + 1].cpu()]))
        rows.append(row)
        if (k + 1) % 10 == 0 or k + 1 == len(photos):
            log(f"{k + 1}/{len(photos)} photos ({time.time() - t_all:.0f} s): PSNR so far "
                f"{np.mean([r['psnr'] for r in rows]):.2f} dB")

    summary = summarise(rows, strengths, vstrengths, args.topk)
    result = {"summary": summary, "rows": rows,
              "setup": {"data": data.name, "n_composites": int(len(idx)), "n_real": len(photos) - int(len(idx)),
                        "inversion": cfg.to_dict(), "seed": args.seed, "topk": args.topk, "strengths": strengths,
                        "insert_rule": args.insert_rule, "region": args.region,
                        "volume_region": args.volume_region, "anchor": args.anchor,
                        "instances": bank_folder.name if bank_folder is not None else None,
                        "volume_strengths": vstrengths, "volume_gains": [g1, g2], "device": str(dev),
                        "threads": torch.get_num_threads(), "seconds": round(time.time() - t_all, 1),
                        "models": {r: {"name": f.name, "sha256": f.sha256()} for r, f in folders.items()},
                        "evaluator": {"name": ev_folder.name, "sha256": ev_folder.sha256()},
                        "command": "python -m soundsight_train.eval_edit " + " ".join(argv if argv is not None
                                                                                        else sys.argv[1:])}}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(summary, result["setup"])
    (out / "results.md").write_text(md)
    if examples:
        sc.save_grid(out / "examples.png", examples)
    print(md)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}" + (f", {out / 'examples.png'}" if examples else ""))
    return 0


def summarise(rows: list[dict], strengths: list, vstrengths: list, topk: int) -> dict:
    groups = {"test composites": [r for r in rows if r["source"] == "test-composite"],
              "real photos": [r for r in rows if r["source"] != "test-composite"]}
    groups["all"] = rows
    out = {}
    for name, rs in groups.items():
        if not rs:
            continue
        g = {"n": len(rs), "psnr": mean(r["psnr"] for r in rs), "psnr_median": round(float(np.median([r["psnr"] for r in rs])), 3),
             "ssim": mean(r["ssim"] for r in rs), "psnr_ge_24": rate(r["psnr"] >= 24 for r in rs),
             "seconds_per_inversion": mean(r["seconds"] for r in rs),
             "insert_hit_before": rate(r["insert_hit_before"] for r in rs),
             "paste_hit": rate(r["paste_hit"] for r in rs), "insert": {}}
        for i, lam in enumerate(strengths):
            g["insert"][str(lam)] = {"hit": rate(r["insert_hit"][i] for r in rs),
                                     "hit_composite": rate(r["insert_hit_composite"][i] for r in rs),
                                     "outside_ssim": mean(r["insert_outside_ssim"][i] for r in rs),
                                     "oracle_hit": rate(r["oracle_hit"][i] for r in rs)}
        g["audio_image_cosine"] = mean(r["audio_image_cosine"] for r in rs)
        vol = [r for r in rs if "size_recon" in r]
        if vol:
            g["volume"] = {"n": len(vol)}
            # photos whose reconstructed object the judge sizes below the median: can they shrink further?
            median = float(np.median([r["size_recon"] for r in vol]))
            small = [r["size_recon"] < median for r in vol]
            for i, lam in enumerate(vstrengths):
                up = [r["size_louder"][i] > r["size_recon"] for r in vol]
                down = [r["size_quieter"][i] < r["size_recon"] for r in vol]
                g["volume"][str(lam)] = {"louder_bigger": rate(up), "quieter_smaller": rate(down),
                                         "right_direction": rate(up + down),
                                         "quieter_smaller_small_half": rate(d for d, s_ in zip(down, small) if s_),
                                         "quieter_smaller_large_half": rate(d for d, s_ in zip(down, small) if not s_),
                                         "mean_log_size_change_louder": mean(r["size_louder"][i] - r["size_recon"] for r in vol),
                                         "mean_log_size_change_quieter": mean(r["size_quieter"][i] - r["size_recon"] for r in vol)}
            g["volume"]["evaluator_size_error_on_recon"] = mean(abs(r["size_recon"] - r["true_size"]) for r in vol)
        out[name] = g
    return out


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.0f} %"


def markdown(summary: dict, setup: dict) -> str:
    k = setup["topk"]
    lines = [f"Inversion ({setup['inversion']['steps']} steps"
             + (f" + {setup['inversion']['refine_steps']} refine" if setup['inversion']['refine_steps'] else "")
             + f", seed {setup['seed']}), at the generator's size:", "",
             "| photos | n | PSNR (dB) | median | ≥ 24 dB | SSIM | s / photo |", "|---|---|---|---|---|---|---|"]
    for name, g in summary.items():
        lines.append(f"| {name} | {g['n']} | {g['psnr']:.2f} | {g['psnr_median']:.2f} | {100 * g['psnr_ge_24']:.0f} % | "
                     f"{g['ssim']:.3f} | {g['seconds_per_inversion']:.1f} |")
    rule = setup.get("insert_rule", "mix")
    region = setup.get("region", "none")
    anchored = f", sound features anchored {setup['anchor']:g}" if setup.get("anchor") else ""
    lines += ["", f"Insert a held-out sound, {rule} rule" + (f", region {region}" if region != "none" else "") + anchored
              + f" (evaluator top-{k} has its class; before = on the reconstruction; ceiling = the sound's real "
              "object pasted in):", "",
              "| photos | λ | success (edit) | success (composite) | before | ceiling | SSIM outside object | "
              "oracle: f_V of the sound's picture |",
              "|---|---|---|---|---|---|---|---|"]
    for name, g in summary.items():
        for lam, v in g["insert"].items():
            lines.append(f"| {name} | {lam} | {100 * v['hit']:.0f} % | {100 * v['hit_composite']:.0f} % | "
                         f"{100 * g['insert_hit_before']:.0f} % | {_pct(g.get('paste_hit'))} | {v['outside_ssim']:.3f} | "
                         f"{100 * v['oracle_hit']:.0f} % |")
    vol = summary.get("test composites", {}).get("volume")
    if vol:
        vreg = setup.get("volume_region", "none")
        lines += ["", f"Volume edits on {vol['n']} single-object test composites (gains {setup['volume_gains']}"
                  + (f", region {vreg}" if vreg != "none" else "") + anchored + "; "
                  "evaluator's estimated size vs on the reconstruction; small / large half: photos whose reconstructed object "
                  "the evaluator sizes below / above the median):", "",
                  "| λ | louder → bigger | quieter → smaller | quieter → smaller: small / large half | right direction "
                  "| mean Δ log size (louder / quieter) |",
                  "|---|---|---|---|---|---|"]
        for lam in setup["volume_strengths"]:
            v = vol[str(lam)]
            lines.append(f"| {lam} | {100 * v['louder_bigger']:.0f} % | {100 * v['quieter_smaller']:.0f} % | "
                         f"{_pct(v['quieter_smaller_small_half'])} / {_pct(v['quieter_smaller_large_half'])} | "
                         f"{100 * v['right_direction']:.0f} % | {v['mean_log_size_change_louder']:+.3f} / "
                         f"{v['mean_log_size_change_quieter']:+.3f} |")
    lines += ["", f"`{setup['command']}` ({setup['seconds']:.0f} s, {setup['device']}, {setup['threads']} thread(s))", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
