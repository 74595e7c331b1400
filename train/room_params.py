"""Train the picture -> room acoustics regressor (``room_params_net.RoomParamsNet``) and write a
registry folder (``rematch --room IMAGE --mode params`` renders its predictions with the blind
reverberator's synthesis).

Data (``soundsight_train.rooms``): one picture per room. Targets are measured on each room's true
RIR with the functions the evaluation scores with (``acoustics.rt60_schroeder`` on the speech
band and per octave 250 Hz .. 4 kHz, ``acoustics.drr_db``; the same calls as ``rooms.measure``,
checked against the stored values). Seen rooms only: a seeded ``--val-rooms`` of them pick the
best step (model selection), the rest train; unseen rooms are only scored at the end (the card's
metrics), never looked at during training.

340 pictures are little, so each step sees augmented pictures whose acoustics are unchanged:

- extra views (``--views`` per training room, rendered once by ``rooms.render_room`` and cached
  in the run folder): the same microphone position (the RIR does not change) with the camera
  turned (yaw +-6 deg, pitch +-2 deg, field of view +-4 deg), new texture seeds and surface
  colours redrawn from the same material classes' palettes (the RIR depends on the material, not
  its colour);
- mirror image, a random crop of 80-100 % of the side resized back, mild brightness / contrast /
  per-channel gain jitter.

Loss: L1 on log RT60 (speech band + 5 octaves) + L1 on DRR / 10 dB. With ``--physics`` (the
network reads the room off the picture and applies Eyring's formula, ``room_params_net``), plus
``--aux-weight`` x (L1 on the log room dimensions and speaker distance + the mean cross-entropy
of the six surfaces' material classes), all from the dataset's true rooms; with ``--dense W``, plus W x
the per-pixel cross-entropy of each pixel's surface and its class (``rooms.surface_map``, moved
with the picture by the mirror and the crop). AdamW, warm-up then
cosine decay over whichever budget (steps or ``--max-minutes``) ends first. Checkpoints (``--resume``)
and ``curve.jsonl`` in the run folder.

    OMP_NUM_THREADS=1 python -m soundsight_train.room_params --physics --threads 1 --max-minutes 12 \\
        --out models/rooms-params-128 --run-dir runs/room-params-128   # the README has the shipped command
    python -m soundsight_train.room_params --evaluate --data D --extra-data E --out models/rooms-params-128  # card metrics
                                                  # again, with the datasets it trained on
    python -m soundsight_train.room_params --tiny --out /tmp/params-tiny              # smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from soundsight_plugins.acoustic_match import acoustics as ac
from soundsight_plugins.acoustic_match import room_params_net as net
from soundsight_plugins.acoustic_match.room_params_net import (ARCHITECTURE, BANDS, OUTPUTS, TASK, RoomParamsConfig,
                                                               RoomParamsNet, aux_loss, decode, encode, loss_fn)
from soundsight_train import rooms as rooms_mod
from soundsight_train.avitar import DATA_LICENCES, budget_cosine, find_rooms

# ---------------------------------------------------------------------------------------------
# data


def measure_targets(ds: rooms_mod.RoomsData, room: int) -> dict:
    """What the evaluation scores, measured on the room's true RIR (as ``rooms.measure`` does)."""
    h = ds.rir(room)
    sr = ds.sr
    return {"rt60_speech": ac.rt60_schroeder(h, sr, band=ac.SPEECH_BAND, noise_comp=False),
            "rt60_bands": ac.rt60_bands(h, sr, centers=BANDS, noise_comp=False),
            "drr": ac.drr_db(h, sr)}


def targets_for(ds, room_ids) -> tuple[torch.Tensor, list[dict]]:
    meas = [measure_targets(ds, r) for r in room_ids]
    for r, m in zip(room_ids, meas):  # the stored values were measured the same way
        stored = ds.rooms[r]["acoustics"]
        if abs(m["rt60_speech"] - stored["rt60_speech"]) > 2e-3 or abs(m["drr"] - stored["drr"]) > 2e-2:
            raise SystemExit(f"error: room {r}: measured targets {m} disagree with the dataset's {stored}")
    y = torch.tensor([encode(m["rt60_speech"], m["rt60_bands"], m["drr"]) for m in meas], dtype=torch.float32)
    return y, meas


def aux_targets_for(ds, room_ids, vocabulary: str = "class") -> torch.Tensor:
    """(N, 10): log width, depth, height, log speaker distance, then each surface's index in the
    head's vocabulary, its class or its material (``room_params_net.SURFACES`` order) -- what the
    physics head reads off the picture."""
    rows = []
    key = "classes" if vocabulary == "class" else "materials"
    for r in room_ids:
        m = ds.rooms[r]
        cls = [net.vocabulary_of(s, vocabulary).index(m[key][s]) for s in net.SURFACES]
        rows.append([math.log(v) for v in m["dims"]] + [math.log(max(float(m["distance"]), 0.1))] + cls)
    return torch.tensor(rows, dtype=torch.float32)


def class_absorption_table(vocabulary: str = "class") -> torch.Tensor:
    """(rows, len(BANDS)): absorption per octave of each vocabulary entry, in
    ``room_params_net.table_rows`` order. A class absorbs its materials' mean (the room sampler
    draws them uniformly, as ``rooms._pick`` does); a material its own."""
    octaves = (125, 250, 500, 1000, 2000, 4000, 8000)
    cols = [octaves.index(b) for b in BANDS]
    rows = []
    for where, names in (("floor", net.FLOOR_CLASSES), ("ceiling", net.CEILING_CLASSES), ("wall", net.WALL_CLASSES)):
        table = rooms_mod.CLASSES[where]
        for c in names:
            if vocabulary == "class":
                rows.append(np.mean([rooms_mod._absorption(m) for m in table[c][1]], axis=0)[cols])
            else:
                rows += [rooms_mod._absorption(m)[cols] for m in table[c][1]]
    return torch.tensor(np.array(rows), dtype=torch.float32)


def split_seen(ds, val_rooms: int, seed: int) -> tuple[list[int], list[int]]:
    seen = ds.room_ids("seen")
    order = np.random.default_rng([seed, 11]).permutation(len(seen))
    n_val = min(val_rooms, max(1, len(seen) // 4))
    val = sorted(seen[k] for k in order[:n_val])
    train = sorted(seen[k] for k in order[n_val:])
    return train, val


def jittered_room(room: dict, rng) -> dict:
    """The same room (same microphone, speaker, geometry, materials: the same RIR) seen with the
    camera turned a little, other texture seeds and colours redrawn from the classes' palettes."""
    r = json.loads(json.dumps(room))
    cam = r["camera"]
    cam["yaw"] = float(cam["yaw"] + np.deg2rad(rng.uniform(-6, 6)))
    cam["pitch"] = float(cam["pitch"] + np.deg2rad(rng.uniform(-2, 2)))
    cam["hfov"] = float(np.clip(cam["hfov"] + np.deg2rad(rng.uniform(-4, 4)), np.deg2rad(60), np.deg2rad(85)))
    r["texture_seed"] = int(rng.integers(2 ** 31))
    r["colours"] = {s: rooms_mod._palette(rng, r["classes"][s], s) for s in rooms_mod.SURFACES}
    return r


def view_rooms(ds, room_ids: list[int], views: int, seed: int) -> list[list[dict]]:
    """The jittered room of each extra view (``jittered_room``), seeded per room: the same rooms
    whether the views are rendered now or read from the cache."""
    out = []
    for r in room_ids:
        rng = np.random.default_rng([seed, 13, r])
        out.append([jittered_room(ds.rooms[r], rng) for _ in range(views)])
    return out


def extra_views(ds, room_ids: list[int], views: int, run: Path, seed: int, log=print) -> np.ndarray:
    """uint8 (len(room_ids), views, S, S, 3), rendered once and cached in the run folder."""
    S = int(ds.meta.get("image_size", rooms_mod.IMAGE_SIZE))
    textures = rooms_mod.textures_of(ds.meta)  # the dataset's own looks
    if views <= 0:
        return np.zeros((len(room_ids), 0, S, S, 3), np.uint8)
    key = hashlib.sha256(json.dumps([ds.folder.name, room_ids, views, seed, S]).encode()).hexdigest()[:12]
    cache = run / f"views-{views}-{key}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return z["views"]
    t0 = time.time()
    out = np.zeros((len(room_ids), views, S, S, 3), np.uint8)
    for i, vr in enumerate(view_rooms(ds, room_ids, views, seed)):
        for v, room in enumerate(vr):
            out[i, v] = rooms_mod.render_room(room, size=S, textures=textures)
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / f".{cache.name}.tmp.npz"
    np.savez_compressed(tmp, views=out)
    tmp.rename(cache)
    log(f"rendered {len(room_ids) * views} extra views in {time.time() - t0:.0f} s (cached: {cache})")
    return out


def surface_maps(ds, room_ids: list[int], views: int, seed: int) -> np.ndarray:
    """uint8 (len(room_ids), 1 + views, S, S): ``rooms.surface_map`` of each room's picture, then of
    its extra views (geometry only: ~4 ms each, so not cached)."""
    S = int(ds.meta.get("image_size", rooms_mod.IMAGE_SIZE))
    out = np.zeros((len(room_ids), 1 + views, S, S), np.uint8)
    for i, (r, vr) in enumerate(zip(room_ids, view_rooms(ds, room_ids, views, seed))):
        for v, room in enumerate([ds.rooms[r]] + vr):
            out[i, v] = rooms_mod.surface_map(room, S)
    return out


def extra_dataset(folder: str, primary: rooms_mod.RoomsData) -> tuple[rooms_mod.RoomsData, list[int]]:
    """An ``--extra-data`` dataset and all its room ids, after the checks that keep it honest."""
    ds = rooms_mod.RoomsData(find_rooms(folder, False))
    if ds.meta.get("seed") == primary.meta.get("seed"):
        raise SystemExit(f"error: --extra-data {ds.folder} has the same seed as --data "
                         f"({ds.meta.get('seed')}): its rooms would repeat the evaluation's unseen rooms")
    looks = [rooms_mod.textures_of(d.meta) for d in (ds, primary)]
    if looks[0] != looks[1]:
        raise SystemExit(f"error: --extra-data {ds.folder} has {looks[0]} textures, --data has {looks[1]}")
    if ds.meta.get("image_size") != primary.meta.get("image_size"):
        raise SystemExit(f"error: --extra-data {ds.folder}: pictures of {ds.meta.get('image_size')} px, "
                         f"--data's are {primary.meta.get('image_size')} px")
    return ds, sorted(ds.room_ids("seen") + ds.room_ids("unseen"))


def extra_training_rooms(folders: list[str], primary: rooms_mod.RoomsData, args, run: Path, log=print):
    """Every room of each ``--extra-data`` dataset as training data: (pictures uint8 (M, H, W, 3),
    their extra views (M, V, H, W, 3), targets (M, 7), auxiliary targets (M, 10), with ``--dense`` their
    surface maps (M, 1 + V, H, W)), one entry per dataset. Rooms are sampled from the dataset's
    seed, so a dataset with another seed shares no room with the primary one and its unseen split
    may train too; the same seed would repeat the primary's (unseen) rooms, so it is refused."""
    pics, views, ys, auxs, maps = [], [], [], [], []
    for f in folders:
        ds, ids = extra_dataset(f, primary)
        y, _ = targets_for(ds, ids)
        pics.append(np.stack([ds.image(r) for r in ids]))
        views.append(extra_views(ds, ids, args.views, run, args.seed, log))
        ys.append(y)
        auxs.append(aux_targets_for(ds, ids, args.vocabulary))
        if args.dense:
            maps.append(surface_maps(ds, ids, args.views, args.seed))
        log(f"extra training rooms: {len(ids)} from {ds.folder}")
    return pics, views, ys, auxs, maps


def to_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> float (N, 3, size, size) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images.reshape(-1, *images.shape[-3:]))).permute(0, 3, 1, 2).float() / 255
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def augment(x: torch.Tensor, gen: torch.Generator, labels: torch.Tensor | None = None):
    """Mirror, random crop (80-100 % of the side, resized back), brightness/contrast/colour gain.
    Returns the pictures, which were mirrored (a mirror swaps the west and east walls) and, given
    ``labels`` (B, S, S: ``rooms.surface_map``), the labels moved with them (nearest, walls swapped)."""
    B, _, S, _ = x.shape
    out = torch.empty_like(x)
    lab_out = None if labels is None else torch.empty_like(labels)
    swap = torch.arange(len(net.REGIONS))
    w, e = net.SURFACES.index("west"), net.SURFACES.index("east")
    swap[w], swap[e] = e, w
    flip = torch.rand(B, generator=gen) < 0.5
    for i in range(B):
        img = x[i]
        lab = None if labels is None else labels[i]
        if flip[i]:
            img = torch.flip(img, dims=[-1])
            if lab is not None:
                lab = swap[torch.flip(lab, dims=[-1]).long()].to(labels.dtype)
        c = int(round(S * float(0.8 + 0.2 * torch.rand(1, generator=gen))))
        if c < S:
            top = int(torch.randint(0, S - c + 1, (1,), generator=gen))
            left = int(torch.randint(0, S - c + 1, (1,), generator=gen))
            img = F.interpolate(img[None, :, top: top + c, left: left + c], size=(S, S), mode="bilinear",
                                align_corners=False)[0]
            if lab is not None:  # nearest: the label at each resized pixel's centre
                lab = net.dense_targets(lab[None, top: top + c, left: left + c], (S, S))[0].to(labels.dtype)
        out[i] = img
        if lab is not None:
            lab_out[i] = lab
    bright = 1 + 0.15 * (2 * torch.rand(B, 1, 1, 1, generator=gen) - 1)
    contrast = 1 + 0.15 * (2 * torch.rand(B, 1, 1, 1, generator=gen) - 1)
    gain = 1 + 0.05 * (2 * torch.rand(B, 3, 1, 1, generator=gen) - 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean) * bright * gain
    return out.clamp(0.0, 1.0), flip, lab_out


def mirror_aux_targets(target: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """The west and east walls' classes swapped where the picture was mirrored."""
    g = len(net.GEOMETRY)
    w, e = g + net.SURFACES.index("west"), g + net.SURFACES.index("east")
    out = target.clone()
    out[flip, w], out[flip, e] = target[flip, e], target[flip, w]
    return out


# ---------------------------------------------------------------------------------------------
# metrics


def eyring_predictions(ds, room_ids, calib: dict | None = None, class_means: bool = False,
                       hidden_unknown: bool = False) -> list[dict]:
    """Physics reference from the dataset's *true* geometry and materials (not from the picture):
    Eyring RT60 per octave (stored in the metadata), the speech band as the geometric mean of the
    250 Hz .. 4 kHz octaves, DRR from the critical distance (r_c = 0.057 sqrt(V / T), DRR =
    20 log10(r_c / r)). ``class_means``: each surface absorbs its visual class's mean absorption
    instead of its material's (what a picture can show at best: the renderer draws a texture per
    class), computed by the physics head's own ``eyring_outputs``. ``calib`` (fitted on the
    training rooms with the same ``class_means``): the median log-ratio per RT60 and the median
    offset of DRR. ``hidden_unknown``: the wall behind the camera, which no picture shows, absorbs
    the mean of its vocabulary (its classes' or, without ``class_means``, its materials') instead:
    the best a perfect reader of what the picture shows can do."""
    if class_means or hidden_unknown:
        voc = "class" if class_means else "material"
        shown = net.VISIBLE_SURFACES if hidden_unknown else True
        aux = reading_from_targets(aux_targets_for(ds, room_ids, voc), voc, surfaces=shown)  # the true entries
        raw = [decode(row) for row in net.eyring_outputs(aux, class_absorption_table(voc), voc)]
    else:
        raw = []
        for r in room_ids:
            m = ds.rooms[r]
            ey = dict(zip((125, 250, 500, 1000, 2000, 4000, 8000), m["eyring_rt60"]))
            bands = {b: float(ey[b]) for b in BANDS}
            speech = float(np.exp(np.mean(np.log(list(bands.values())))))
            V = float(np.prod(m["dims"]))
            drr = 20 * math.log10(0.057 * math.sqrt(V / speech) / max(float(m["distance"]), 0.1))
            raw.append({"rt60": speech, "rt60_bands": bands, "drr_db": drr})
    if not calib:
        return raw
    return [{"rt60": p["rt60"] * math.exp(calib["log_rt60"]),
             "rt60_bands": {b: v * math.exp(calib[f"log_rt60_{b}"]) for b, v in p["rt60_bands"].items()},
             "drr_db": p["drr_db"] + calib["drr"]} for p in raw]


def fit_eyring_calibration(ds, room_ids, truths: list[dict], class_means: bool = False,
                           hidden_unknown: bool = False) -> dict:
    raw = eyring_predictions(ds, room_ids, class_means=class_means, hidden_unknown=hidden_unknown)
    cal = {"log_rt60": float(np.median([math.log(t["rt60_speech"] / p["rt60"]) for p, t in zip(raw, truths)])),
           "drr": float(np.median([t["drr"] - p["drr_db"] for p, t in zip(raw, truths)]))}
    for b in BANDS:
        cal[f"log_rt60_{b}"] = float(np.median([math.log(t["rt60_bands"][b] / p["rt60_bands"][b])
                                                for p, t in zip(raw, truths)]))
    return cal


def regression_metrics(preds: list[dict], truths: list[dict]) -> dict:
    ps = np.array([p["rt60"] for p in preds])
    ts = np.array([t["rt60_speech"] for t in truths])
    pb = np.array([[p["rt60_bands"][b] for b in BANDS] for p in preds])
    tb = np.array([[t["rt60_bands"][b] if b in t["rt60_bands"] else t["rt60_bands"][str(b)] for b in BANDS]
                   for t in truths])
    pd, td = np.array([p["drr_db"] for p in preds]), np.array([t["drr"] for t in truths])

    def corr(a, b):
        return round(float(np.corrcoef(a, b)[0, 1]), 4) if len(a) > 2 and np.std(a) > 0 else None

    return {"n": int(len(ts)),
            "rt60_speech_mae_s": round(float(np.mean(np.abs(ps - ts))), 4),
            "rt60_speech_median_ae_s": round(float(np.median(np.abs(ps - ts))), 4),
            "rt60_speech_rel_mae": round(float(np.mean(np.abs(ps - ts) / ts)), 4),
            "rt60_speech_corr": corr(ps, ts),
            "rt60_octave_mae_s": round(float(np.mean(np.abs(pb - tb))), 4),
            "rt60_band_mae_s": {str(b): round(float(np.mean(np.abs(pb[:, k] - tb[:, k]))), 4) for k, b in enumerate(BANDS)},
            "drr_mae_db": round(float(np.mean(np.abs(pd - td))), 3),
            "drr_corr": corr(pd, td),
            "true_rt60_speech_mean_s": round(float(ts.mean()), 4)}


@torch.no_grad()
def predict(model: RoomParamsNet, images: torch.Tensor, batch: int = 64) -> list[dict]:
    out = []
    for i in range(0, len(images), batch):
        out += model.estimate(images[i: i + batch])
    return out


def mean_predictor(y_train: torch.Tensor, n: int) -> list[dict]:
    return [decode(y_train.mean(dim=0))] * n


def reading_from_targets(target: torch.Tensor, vocabulary: str, aux: torch.Tensor | None = None, *,
                         geometry: bool = True, surfaces: bool | tuple = True) -> torch.Tensor:
    """A physics-head reading (B, n_aux) that states the truth: the true geometry and / or a one-hot
    of each surface's true entry (``surfaces``: all, none, or a tuple of surface names); the other
    columns from ``aux`` (default: nothing read)."""
    out = torch.full((len(target), net.n_aux(vocabulary)), -30.0) if aux is None else aux.clone()
    g = len(net.GEOMETRY)
    if geometry:
        out[:, :g] = target[:, :g]
    named = net.SURFACES if surfaces is True else surfaces or ()
    k = g
    for j, s in enumerate(net.SURFACES):
        n = len(net.vocabulary_of(s, vocabulary))
        if s in named:
            out[:, k: k + n] = -30.0
            out[torch.arange(len(target)), k + target[:, g + j].long()] = 30.0
        k += n
    return out


@torch.no_grad()
def room_reading_metrics(model: RoomParamsNet, images: torch.Tensor, target: torch.Tensor,
                         truth_rt60: np.ndarray | None = None) -> dict:
    """How well the physics head reads the room: relative errors of size and distance, class (and
    material) accuracy; with ``truth_rt60``, the speech-band RT60 MAE of the Eyring part alone
    (no correction, no mirror averaging) from its own reading and with the true geometry, the
    true surfaces or both put in: which part of the reading limits the model."""
    model.eval()
    aux = torch.cat([model.forward_parts(images[i: i + 64])[1] for i in range(0, len(images), 64)])
    voc = model.cfg.vocabulary
    geo, logits = net.split_aux(aux, voc)
    g = len(net.GEOMETRY)
    rel = (geo - target[:, :g]).exp().sub(1).abs().mean(0)  # |predicted / true - 1|
    out = {f"{g[4:]}_mean_rel_error": round(float(v), 4) for g, v in zip(net.GEOMETRY, rel)}
    vol = (geo[:, :3].sum(1) - target[:, :3].sum(1)).exp().sub(1).abs().mean()
    out["volume_mean_rel_error"] = round(float(vol), 4)
    out[f"{voc}_accuracy"] = {s: round(float((logits[s].argmax(-1) == target[:, g + k].long()).float().mean()), 4)
                              for k, s in enumerate(net.SURFACES)}
    if voc != "class":  # the class the materials' probabilities add up to
        out["class_accuracy"] = {}
        for k, s in enumerate(net.SURFACES):
            to_class = torch.tensor(net.class_of_entry(s, voc))
            hit = net.class_logits(logits[s], s, voc).argmax(-1) == to_class[target[:, g + k].long()]
            out["class_accuracy"][s] = round(float(hit.float().mean()), 4)
    if truth_rt60 is not None:
        out["eyring_rt60_speech_mae_s"] = {}
        visible = net.VISIBLE_SURFACES  # the wall behind the camera keeps the model's own reading
        for name, geometry, surfaces in (("own_reading", False, False), ("true_geometry", True, False),
                                         ("true_surfaces", False, True), ("true_both", True, True),
                                         ("true_visible_surfaces", False, visible),
                                         ("true_geometry_and_visible_surfaces", True, visible)):
            reading = reading_from_targets(target, voc, aux, geometry=geometry, surfaces=surfaces)
            rt = net.eyring_outputs(reading, model.class_absorption, voc)[:, 0].exp().numpy()
            out["eyring_rt60_speech_mae_s"][name] = round(float(np.abs(rt - truth_rt60).mean()), 4)
    return out


def all_metrics(model, ds, train_ids, y_train, train_truth, eval_sets: dict, size: int) -> dict:
    """Model and baselines on each named set of rooms ({name: (room ids, truths)})."""
    calib = fit_eyring_calibration(ds, train_ids, train_truth)
    calib_cls = fit_eyring_calibration(ds, train_ids, train_truth, class_means=True)
    # what the dataset's pictures show: one look per class, or per material (rooms build --textures)
    shown = {"class_means": rooms_mod.textures_of(ds.meta) != "material", "hidden_unknown": True}
    calib_vis = fit_eyring_calibration(ds, train_ids, train_truth, **shown)
    res = {}
    for name, (ids, truths) in eval_sets.items():
        imgs = to_tensor(np.stack([ds.image(r) for r in ids]), size)
        res[name] = {
            "model": regression_metrics(predict(model, imgs), truths),
            **({"model_room_reading": room_reading_metrics(model, imgs, aux_targets_for(ds, ids, model.cfg.vocabulary),
                                                           np.array([t["rt60_speech"] for t in truths]))}
               if model.cfg.physics else {}),
            "baseline_training_mean": regression_metrics(mean_predictor(y_train, len(ids)), truths),
            "reference_eyring_true_geometry": regression_metrics(eyring_predictions(ds, ids), truths),
            "reference_eyring_true_geometry_calibrated": regression_metrics(eyring_predictions(ds, ids, calib), truths),
            "reference_eyring_true_geometry_class_means_calibrated": regression_metrics(
                eyring_predictions(ds, ids, calib_cls, class_means=True), truths),
            "reference_eyring_true_geometry_visible_surfaces_calibrated": regression_metrics(
                eyring_predictions(ds, ids, calib_vis, **shown), truths),
        }
    res["eyring_calibration_on_training_rooms"] = calib
    res["notes"] = ("baseline_training_mean: the training rooms' mean (log RT60s, DRR); reference_eyring_*: Eyring "
                    "RT60 and critical-distance DRR from the dataset's true dimensions, materials and speaker distance "
                    "(an oracle-ish physics reference, not available from a picture); _calibrated: its median bias "
                    "on the training rooms removed; _class_means_: each surface's visual class's mean absorption instead of "
                    "its material's (the best a reader that tells only the class can do: the default rooms build draws one "
                    "look per class; on pictures from rooms build --textures material the bound is "
                    "reference_eyring_true_geometry_calibrated; _visible_surfaces_: the true entry (class or material, "
                    "whichever the pictures show) of every surface but the wall behind the camera, which absorbs its "
                    "vocabulary's mean: the best a perfect reader of the picture can do)")
    return res


# ---------------------------------------------------------------------------------------------
# checkpoints (weights as safetensors; optimiser state via torch.save, loaded weights_only)


def save_checkpoint(run: Path, model, best_state, opt, state: dict) -> None:
    """``<run>/ckpt``: model.safetensors, best.safetensors, optim.pt (written atomically by the
    shared trainer checkpoint code)."""
    from soundsight_train.checkpoints import save_checkpoint as save

    save(run, {"model": model, "best": best_state}, {"opt": opt}, state)


def load_checkpoint(ck: Path, model, opt) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    from soundsight_train.checkpoints import load_checkpoint as load

    state, _ = load(ck, {"model": model}, {"opt": opt}, "cpu")
    return state, load_file(str(ck / "best.safetensors"))


# ---------------------------------------------------------------------------------------------
# main


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.room_params", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="rooms dataset folder or data dir (default: the newest)")
    ap.add_argument("--preset", default="cpu", choices=["tiny", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="smoke run: tiny model, few steps, one extra view")
    ap.add_argument("--out", required=True, help="registry folder to write (with --evaluate: the folder to evaluate)")
    ap.add_argument("--run-dir", "--run", dest="run", default=None, help="checkpoints, curve, view cache "
                    "(default runs/<out name>)")
    ap.add_argument("--resume", action="store_true", help="continue from <run>/ckpt if it exists")
    ap.add_argument("--evaluate", action="store_true", help="no training: re-score --out and update its card")
    ap.add_argument("--name", default=None)
    ap.add_argument("--steps", type=int, default=None, help="default 4000 (--tiny: 6)")
    ap.add_argument("--max-minutes", type=float, default=None, help="training budget (view rendering not included)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=None, help="network input (default: the preset's, 128)")
    ap.add_argument("--width", type=int, default=None, help="network width (default: the preset's, 16)")
    ap.add_argument("--grid", type=int, default=None,
                    help="also feed the heads the last feature map pooled to G x G cells (where each surface "
                         "is in the picture); 0: global pooling only (default)")
    ap.add_argument("--stem-stride", type=int, default=None, choices=(2, 4), help="2 (default) or 4 (stem max-pool)")
    ap.add_argument("--physics", action="store_true",
                    help="read the room (size, distance, material classes) off the picture and apply Eyring's "
                         "formula; the direct head only corrects it (room_params_net)")
    ap.add_argument("--vocabulary", choices=net.VOCABULARIES, default="class",
                    help="what the physics head names per surface: its class (carpet, brick ...) or its material "
                         "(carpet_thin, curtains_velvet ...; useful on pictures from rooms build --textures material)")
    ap.add_argument("--aux-weight", type=float, default=1.0, help="weight of the room-reading loss (--physics)")
    ap.add_argument("--dense", type=float, default=0.0, metavar="W",
                    help="with --physics: a dense head that labels each pixel's surface and material, trained "
                         "with weight W on the renderer's surface maps, and pooled into the surface reading "
                         "(0: off)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--views", type=int, default=5, help="extra rendered views per training room (0: none)")
    ap.add_argument("--extra-data", action="append", default=[], metavar="FOLDER",
                    help="another rooms dataset (built with another --seed) whose rooms all train; repeatable. "
                         "Validation and the unseen rooms stay --data's")
    ap.add_argument("--val-rooms", type=int, default=40, help="seen rooms held out for model selection")
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=50)
    args = ap.parse_args(argv)
    if args.tiny:
        args.preset = "tiny"
        args.steps = args.steps or 6
        args.batch = min(args.batch, 4)
        args.views = min(args.views, 1)
        args.val_every = 3
        args.log_every = 3
    args.steps = args.steps or 4000
    return args


def write_registry(out: Path, model_state, cfg, args, state, metrics, folder, ds, command) -> None:
    from soundsight.registry import save_model

    save_model(
        out, name=args.name or out.name, task=TASK, architecture=ARCHITECTURE, config=cfg.to_dict(),
        tensors={"model.safetensors": model_state},
        training={"command": command, "steps": state["step"], "best_step": state["best_step"],
                  "best_val_loss": state["best_val"], "batch": args.batch, "seconds": round(state["elapsed"], 1),
                  "view_rendering_seconds": state.get("views_seconds"), "device": "cpu",
                  "threads": args.threads, "stopped_by": state.get("stopped_by"),
                  "rooms": {"train": state["n_train"], "val (model selection)": state["n_val"],
                            "extra views per training room": args.views,
                            "extra datasets (all rooms train)": [Path(f).name for f in args.extra_data]},
                  "optimizer": {"type": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay,
                                "schedule": "50-step warm-up, cosine to 5 % over the step or time budget"},
                  "augmentation": "extra rendered views (camera turned, textures and colours redrawn within the "
                                  "material classes: the RIR is unchanged), mirror, 80-100 % crops, brightness / "
                                  "contrast / colour-gain jitter",
                  "loss": "L1 on log RT60 (speech band + 250 Hz .. 4 kHz octaves) + L1 on DRR / 10 dB"
                          + (f" + {args.dense} x per-pixel cross-entropy of the surface and its "
                             f"{cfg.vocabulary} (rooms.surface_map)" if cfg.dense else "")
                          + (f" + {args.aux_weight} x (L1 on log room dimensions and speaker distance + mean "
                             f"cross-entropy of the six surfaces' {'material classes' if cfg.vocabulary == 'class' else 'materials and their classes'})"
                             if cfg.physics else ""),
                  "targets": "acoustics.rt60_schroeder (T30, speech band and octaves) and acoustics.drr_db of the "
                             "true RIR", "outputs": list(OUTPUTS)},
        metrics=metrics,
        data={"dataset": f"synthetic rooms ({folder.name}): pictures of seen rooms",
              "spec": ds.meta.get("spec"), "seed": ds.meta.get("seed"), "licences": DATA_LICENCES},
        license="Apache-2.0",
        description="A picture of a room -> its speech-band and octave RT60s (250 Hz .. 4 kHz) and DRR, the "
                    "parameters the blind reverberator's synthetic impulse response takes (rematch --mode params); "
                    "trained on synthetic rooms.",
    )


def main(argv=None) -> int:
    args = parse(argv)
    command = "python -m soundsight_train.room_params " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    folder = find_rooms(args.data, args.tiny)
    ds = rooms_mod.RoomsData(folder)
    out = Path(args.out)
    run = Path(args.run) if args.run else Path("runs") / out.name
    train_ids, val_ids = split_seen(ds, args.val_rooms, args.seed)
    unseen_ids = ds.room_ids("unseen")
    if args.tiny:  # a smoke run on whatever dataset is there: a handful of rooms
        train_ids, val_ids, unseen_ids = train_ids[:8], val_ids[:4], unseen_ids[:4]
    y_tr, truth_tr = targets_for(ds, train_ids)
    a_tr = aux_targets_for(ds, train_ids, args.vocabulary)
    y_val, truth_val = targets_for(ds, val_ids)
    truth_unseen = targets_for(ds, unseen_ids)[1] if unseen_ids else []
    eval_sets = {"val_seen_rooms": (val_ids, truth_val)}
    if unseen_ids:
        eval_sets["unseen_rooms"] = (unseen_ids, truth_unseen)

    if args.evaluate:
        from soundsight.outputs import write_bytes_atomic
        from soundsight.registry import resolve

        model = RoomParamsNet.from_registry(resolve(out))
        card = json.loads((out / "card.json").read_text())
        # the training-mean baseline is the mean over every training room, so the extra datasets
        # the model trained on have to be named again (their pictures are not needed)
        trained_on = card.get("training", {}).get("rooms", {}).get("extra datasets (all rooms train)", [])
        extras = [extra_dataset(f, ds) for f in args.extra_data]
        given = [e.folder.name for e, _ in extras]
        if sorted(trained_on) != sorted(given):
            raise SystemExit(f"error: {out} was trained with --extra-data {', '.join(trained_on) or '(none)'}; "
                             f"pass the same datasets to --evaluate (given: {', '.join(given) or 'none'})")
        y_all = torch.cat([y_tr, *(targets_for(e, ids)[0] for e, ids in extras)])
        metrics = all_metrics(model, ds, train_ids, y_all, truth_tr, eval_sets, model.cfg.image_size)
        log(json.dumps(metrics["unseen_rooms" if unseen_ids else "val_seen_rooms"], indent=1))
        card["metrics"] = metrics
        write_bytes_atomic(out / "card.json", (json.dumps(card, indent=2) + "\n").encode())
        return 0

    m_log = y_tr[:, :6].mean().item()
    sizes = {k: v for k, v in (("image_size", args.image_size), ("width", args.width),
                                ("stem_stride", args.stem_stride), ("grid", args.grid)) if v}
    if args.dense and not args.physics:
        raise SystemExit("error: --dense needs --physics")
    if args.dense:
        sizes.update(dense=True)
    if args.physics:
        sizes.update(physics=True, vocabulary=args.vocabulary, init_geometry=tuple(round(float(v), 4) for v in a_tr[:, :4].mean(0)))
    cfg = RoomParamsConfig.preset(args.preset, init_log_rt60=round(m_log, 4), init_drr=round(y_tr[:, 6].mean().item(), 4),
                                  **sizes)
    model = RoomParamsNet(cfg)
    if cfg.physics:
        model.class_absorption.copy_(class_absorption_table(cfg.vocabulary))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    S = cfg.image_size
    run.mkdir(parents=True, exist_ok=True)
    state = {"step": 0, "elapsed": 0.0, "best_val": None, "best_step": 0, "config": cfg.to_dict(),
             "dataset": str(folder), "n_train": len(train_ids), "n_val": len(val_ids)}
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    if args.resume and (run / "ckpt" / "state.json").is_file():
        saved = json.loads((run / "ckpt" / "state.json").read_text())
        if saved.get("config") != cfg.to_dict():
            raise SystemExit(f"error: checkpoint {run / 'ckpt'} was trained with a different config; use another --run-dir")
        state, best_state = load_checkpoint(run / "ckpt", model, opt)
        log(f"resumed from {run / 'ckpt'} at step {state['step']}")

    t0 = time.time()
    # pictures stay uint8 until a batch is drawn: thousands of rooms x views as floats would take GBs
    pics = [np.stack([ds.image(r) for r in train_ids])]
    views = [extra_views(ds, train_ids, args.views, run, args.seed, log)]
    more_pics, more_views, more_y, more_a, more_maps = extra_training_rooms(args.extra_data, ds, args, run, log)
    maps = np.concatenate([surface_maps(ds, train_ids, args.views, args.seed)] + more_maps) if args.dense else None
    state["views_seconds"] = state.get("views_seconds") or round(time.time() - t0, 1)
    pics, views = np.concatenate(pics + more_pics), np.concatenate(views + more_views)
    y_tr, a_tr = torch.cat([y_tr, *more_y]), torch.cat([a_tr, *more_a])
    state["n_train"] = len(pics)
    x_val = to_tensor(np.stack([ds.image(r) for r in val_ids]), S)
    log(f"data: {folder}: {len(train_ids)} training rooms (+{len(pics) - len(train_ids)} from --extra-data; "
        f"+{args.views} views each), {len(val_ids)} validation rooms (seen), {len(unseen_ids)} unseen rooms scored "
        f"at the end")
    log(f"model: {model.num_parameters()} parameters, {S} px; run folder {run}; registry folder {out}")

    gen = torch.Generator().manual_seed(args.seed * 7919 + state["step"])
    rng = np.random.default_rng([args.seed, state["step"]])
    curve = open(run / "curve.jsonl", "a")
    t_start = time.time() - state["elapsed"]
    t_session = time.time()
    last_ck = time.time()
    acc, n_acc, step = 0.0, 0, state["step"]
    stop = "steps"
    model.train()
    while step < args.steps:
        if args.max_minutes is not None and time.time() - t_session > args.max_minutes * 60:
            stop = "max-minutes"
            break
        scale = min(1.0, (step + 1) / 50) * budget_cosine(step, args.steps, t_session, args.max_minutes, 0.05)
        for g in opt.param_groups:
            g["lr"] = args.lr * scale
        idx = rng.integers(0, len(pics), size=args.batch)
        which = rng.integers(0, args.views + 1, size=args.batch)  # 0: the dataset's picture, k: extra view k
        x = to_tensor(np.stack([pics[i] if w == 0 else views[i, w - 1] for i, w in zip(idx, which)]), S)
        lab = None
        if maps is not None:
            lab = torch.from_numpy(maps[idx, which])
            if lab.shape[-1] != S:
                lab = net.dense_targets(lab, (S, S)).to(torch.uint8)
        x, flip, lab = augment(x, gen, lab)
        pred, aux, dense = model.forward_all(x)
        loss = loss_fn(pred, y_tr[idx])
        if aux is not None:
            a_t = mirror_aux_targets(a_tr[idx], flip)
            loss = loss + args.aux_weight * aux_loss(aux, a_t, cfg.vocabulary)
            if dense is not None:
                loss = loss + args.dense * net.dense_loss(dense, net.dense_targets(lab, dense.shape[-2:]), a_t,
                                                          cfg.vocabulary)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc += float(loss.detach())
        n_acc += 1
        if not math.isfinite(acc):
            log(f"error: non-finite loss at step {step}")
            return 1
        now = time.time()
        state.update(step=step, elapsed=now - t_start)
        if step % args.val_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                pv = 0.5 * (model(x_val) + model(torch.flip(x_val, dims=[-1])))
                val = float(loss_fn(pv, y_val))
            model.train()
            if state["best_val"] is None or val < state["best_val"]:
                state.update(best_val=round(val, 5), best_step=step)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            curve.write(json.dumps({"step": step, "val": round(val, 5), "elapsed": round(now - t_start, 1)}) + "\n")
            curve.flush()  # a checkpoint records the curve's length
        if step % args.log_every == 0:
            rec = {"step": step, "loss": round(acc / n_acc, 5), "lr": round(opt.param_groups[0]["lr"], 7),
                   "elapsed": round(now - t_start, 1)}
            curve.write(json.dumps(rec) + "\n")
            curve.flush()
            log(f"step {step}  loss {rec['loss']:.4f}  val best {state['best_val']} (step {state['best_step']})  "
                f"[{rec['elapsed'] / 60:.1f} min]")
            acc, n_acc = 0.0, 0
        if now - last_ck > args.ckpt_minutes * 60:
            save_checkpoint(run, model, best_state, opt, state)
            last_ck = time.time()
    curve.close()
    state["stopped_by"] = stop
    save_checkpoint(run, model, best_state, opt, state)
    log(f"stopped ({stop}) at step {step} after {state['elapsed'] / 60:.1f} min; best validation loss "
        f"{state['best_val']} at step {state['best_step']}")
    final = RoomParamsNet(cfg)
    final.load_state_dict(best_state)
    final.eval()
    # the Eyring calibration is fitted on --data's training rooms (the extra datasets' rooms add nothing to it)
    metrics = all_metrics(final, ds, train_ids, y_tr, truth_tr, eval_sets, S)
    for name in eval_sets:
        m = metrics[name]
        log(f"{name}: " + "; ".join(f"{k}: RT60 {v['rt60_speech_mae_s']:.3f} s, octaves {v['rt60_octave_mae_s']:.3f} s, "
                                    f"DRR {v['drr_mae_db']:.2f} dB" for k, v in m.items() if k != "model_room_reading"))
        if "model_room_reading" in m:
            log(f"{name}: room reading {json.dumps(m['model_room_reading'])}")
    write_registry(out, best_state, cfg, args, state, metrics, folder, ds, command)
    log(f"wrote registry model {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
