"""Synthetic "rooms": impulse responses, pictures and dry speech for acoustic-match (AViTAR).

In the spirit of SoundSpaces-Speech, built with pyroomacoustics (``pip install pyroomacoustics``),
espeak-ng (``apt-get install espeak-ng``) and the Debian speech packages of DATA.md; nothing is
downloaded.

Rooms. A shoebox room (x = width, y = depth, z = height) of one of five kinds with weights
closet 0.1, small 0.25, medium 0.3, large 0.2, hall 0.15 (``ROOM_KINDS`` gives the size
ranges: from 1 x 1.2 x 2.1 m closets to 22 x 35 x 12 m halls; width and depth swap with
probability 0.3). Each of the six surfaces gets a visual class and one pyroomacoustics material
of that class (``FLOOR``, ``WALLS``, ``CEILING``: carpet, wood, concrete, tile for floors;
plaster, brick, concrete, wood, tile, glass, curtains, absorber panels for walls; plaster,
acoustic tiles, wood, concrete for ceilings); the wall behind the camera repeats a side wall's
class with probability 0.5. Materials are redrawn until the per-band Eyring RT60 of the room is
plausible (0.12 .. 2.0 s in the 250 Hz .. 4 kHz octaves, <= 3.0 s at 125 Hz; air absorption
included), which makes big rooms absorptive more often, as real halls are. Every surface of a
room shares one scattering coefficient, uniform in 0.25 .. 0.6 (furniture and surface relief;
with purely specular walls pyroomacoustics' ray tracer keeps sound bouncing between parallel
hard walls and the RT60 comes out 2-5x Eyring's even when the ceiling absorbs).

Microphone = camera. The camera stands 0.25..0.6 m in front of the back wall (y = 0), 1.2..1.7 m
high, looks along +y with a small yaw (+-12 deg) and pitch (-6..+4 deg), horizontal field of view
65..80 deg. The speaker's mouth is 1.45..1.75 m high, at a log-uniform distance 0.8 m .. the
far end of the room, inside the field of view and >= 0.35 m from the walls.

Impulse response. pyroomacoustics' hybrid simulator: image sources to order 3 plus ray tracing
(receiver radius 0.5 .. 1.5 m and 2000 .. 20000 rays growing with the room so that each 4 ms
histogram bin gets ~10 hits, ``ray_budget``), frequency-dependent materials,
air absorption, 16 kHz, seeded (``pra.seed``). The RIR is cut to start 2 ms (``DIRECT_INDEX``
samples) before its direct-path peak, ends where its energy decay curve falls 80 dB (at most
4 s), and is scaled to unit energy (``gain`` in the metadata is the scale removed; it carries the
1/r level). Measured and stored per room: ``rt60`` (Schroeder T30, broadband), ``rt60_speech``
(T30 on the 177 Hz .. 5.7 kHz band: the room acoustics metric this project reports, because a
speech-excited IR is only known there), ``rt60_bands`` (T30 per octave 125 Hz .. 4 kHz),
``rt60_pra`` (``pra.experimental.measure_rt60(h, fs)``, its default -5..-65 dB fit) and
``rt60_pra_t30`` (the same with ``decay_db=30``), ``edt``, ``drr`` (+-2.5 ms direct window).

Picture. A 128 x 128 software rendering (numpy ray casting, 2x2 supersampled) from the
microphone: floor, walls and ceiling as textured planes whose procedural textures are laid out
in metres (tile grids, planks, bricks, curtain folds, window mullions, panel grids, ceiling
tiles), a door (2.05 m) on a side or front wall when there is room for it, light fixtures, the
speaker as a figure (body cylinder, head, shadow) of real size, corner shading, edge lines and
distance fog: room size, materials and speaker distance are visible. Deterministic by seed.
``--textures material`` gives each material its own look within its class (a carpet's pile and
pattern, plank size, brick pointing, pane size, a curtain's folds and sheerness, panel and
ceiling-tile type); the default draws one look per class, which hides the absorption
differences inside a class (thin carpet vs 10 mm felt) from any picture model. The rooms and
RIRs a seed draws are the same with both.

Dry speech. espeak-ng (``apt-get install espeak-ng``): sentences from a small grammar, English
voices x variants, rate 130..200 wpm, pitch 25..75; plus the real recordings when installed:
asterisk-core-sounds-en-wav (8 kHz prompts, so band-limited to 4 kHz, flagged), alsa-utils
(``/usr/share/sounds/alsa``, channel announcements) and puredata-doc (``voice*.wav``). Silence
trimmed, 16 kHz, RMS 0.05 (-26 dBFS).

Splits. Rooms: ``unseen`` (a seeded 15 %) and ``seen``. Speech: ``test`` (a seeded 15 % of each
source) and ``train``. Train on seen rooms x train speech; evaluate on unseen rooms x test speech
(and seen rooms x test speech for the "seen" column).

Storage, under ``<data dir>/rooms-<N>r-s<seed>[-<spec hash>]`` (data dir: ``--data``,
``$SOUNDSIGHT_DATA``, else ``~/.cache/soundsight/data``):

- ``rirs.flac``: all RIRs end to end (unit energy each, so |h| < 1), 16 kHz, 24-bit FLAC;
  room i is ``[rir_start, rir_start + rir_length)`` (in its metadata);
- ``images.npz``: ``images`` uint8 (N, 128, 128, 3) (compressed);
- ``speech.flac``: all dry utterances end to end, 16 kHz, 16-bit FLAC; utterance j is
  ``[start, start + length)``;
- ``meta.json``: spec, seed, per room (kind, dims, materials and classes per surface, colours,
  scattering, camera, source, distance, split, acoustics, RIR position), per utterance (source,
  text/voice or file, licence, split, band limit, position), licences, timings and sizes.

Pairs are made on the fly: ``A_T = A_S * RIR`` (``RoomsData.pair``); nothing reverberant is
stored. ``RoomsData.altered`` is the paper's acoustics-alteration path for training without
paired audio: dereverberate the reverberant target with WPE (``pip install nara_wpe``),
convolve with another room's RIR, add Gaussian noise at 2..10 dB SNR.

Measured (the default build: 400 rooms, seed 0, 300 espeak-ng utterances + 199 installed
recordings, on the 2-core machine while both cores were busy with other jobs): 121 s of CPU
(8.5 min wall at 24 % of a core; ~0.3 s per room for simulation, render and measures), peak RSS
0.55 GB, 47 MB on disk. Speech-band RT60 mean 0.80 s (10-90 %: 0.32-1.42 s), DRR mean -6.5 dB
(10-90 %: -13.1 .. +1.7 dB). Schroeder T30 (``acoustics.rt60_schroeder``) against
``pra.experimental.measure_rt60(decay_db=30)``: mean |difference| 0.003 s over the seen rooms
(0.001 s unseen); against its default -5 .. -65 dB fit 0.10 s (10 %): a hybrid RIR's decay is
not a straight line all the way down.

API (training code)::

    from soundsight_train import rooms
    folder = rooms.build(rooms.RoomsSpec(rooms=400), seed=0)
    ds = rooms.RoomsData(folder)
    room, utt = ds.room_ids("seen")[0], ds.speech_ids("train")[0]
    dry, wet, image = ds.pair(room, utt, crop=40960, rng=np.random.default_rng(0))
    x, target, image = ds.altered(room, utt, other_room, rng)   # training without paired audio
    ds.rooms[room]["acoustics"]["rt60_speech"], ds.rir(room), ds.image(room)

CLI::

    python -m soundsight_train.rooms build --rooms 400 --seed 0 [--speech 300] [--workers 1]
    python -m soundsight_train.rooms show --n 8 --out /tmp/rooms   # grid.png + dry/wet wavs
    python -m soundsight_train.rooms stats                           # RT60 / DRR distributions
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2
FILES = ("rirs.flac", "images.npz", "speech.flac", "meta.json")
SR = 16000
IMAGE_SIZE = 128
DIRECT_INDEX = 32  # samples (2 ms at 16 kHz) kept before the direct-path peak
MAX_RIR_S = 4.0
N_RAYS = 2000  # at least; more in big rooms (ray_budget)
HITS = 10.0  # ray hits per 4 ms histogram bin that the builds ask for (ray_budget)
MAX_RAYS = 20000  # the cap at HITS; it scales with other densities
SPEECH_RMS = 0.05
TEXTURES = ("class", "material")  # the picture's looks: one per material class, or one per material
SURFACES = ("floor", "ceiling", "west", "east", "south", "north")  # pyroomacoustics names
# west = x = 0 (left of the camera), east = x = W (right), south = y = 0 (behind the camera),
# north = y = D (in front).

ROOM_KINDS = {
    # kind: (weight, width range, depth range, height range) in metres
    "closet": (0.10, (1.0, 2.0), (1.2, 2.5), (2.1, 2.6)),
    "small": (0.25, (1.8, 3.5), (2.2, 4.5), (2.3, 2.8)),
    "medium": (0.30, (3.0, 5.5), (3.5, 7.0), (2.4, 3.2)),
    "large": (0.20, (5.0, 10.0), (6.0, 14.0), (2.7, 4.5)),
    "hall": (0.15, (9.0, 22.0), (12.0, 35.0), (4.5, 12.0)),
}

# visual class -> (weight, pyroomacoustics materials)
FLOOR = {
    "carpet": (0.35, ["carpet_cotton", "carpet_tufted_9.5mm", "carpet_thin", "carpet_6mm_closed_cell_foam",
                      "carpet_6mm_open_cell_foam", "carpet_tufted_9m", "carpet_soft_10mm", "carpet_hairy",
                      "felt_5mm"]),
    "wood": (0.3, ["wood_16mm", "audience_floor", "stage_floor", "wood_1.6cm"]),
    "concrete": (0.15, ["concrete_floor", "rough_concrete", "unpainted_concrete"]),
    "tile": (0.2, ["ceramic_tiles", "marble_floor", "linoleum_on_concrete"]),
}
WALLS = {
    "plaster": (0.34, ["hard_surface", "plasterboard", "rough_lime_wash"]),
    "brick": (0.1, ["brickwork", "brick_wall_rough", "smooth_brickwork_flush_pointing",
                    "smooth_brickwork_10mm_pointing", "facing_brick"]),
    "concrete": (0.08, ["rough_concrete", "unpainted_concrete"]),
    "wood": (0.12, ["wooden_lining", "wood_1.6cm", "plywood_thin", "wood_16mm"]),
    "tile": (0.08, ["ceramic_tiles", "limestone_wall"]),
    "glass": (0.1, ["glass_3mm", "glass_window", "double_glazing_30mm", "double_glazing_10mm"]),
    "curtains": (0.1, ["curtains_cotton_0.5", "curtains_0.2", "curtains_densely_woven", "curtains_velvet",
                       "curtains_fabric", "curtains_fabric_folded", "studio_curtains"]),
    "panels": (0.08, ["panel_fabric_covered_6pcf", "panel_fabric_covered_8pcf", "rockwool_50mm_80kgm3",
                      "fibre_absorber_1", "mineral_wool_50mm_40kgm3"]),
}
CEILING = {
    "plaster": (0.45, ["ceiling_plasterboard", "hard_surface", "plasterboard"]),
    "acoustic_tile": (0.3, ["ceiling_fissured_tile", "ceiling_perforated_gypsum_board", "ceiling_fibre_absorber",
                            "ceiling_melamine_foam", "ceiling_metal_panel"]),
    "wood": (0.1, ["wooden_lining", "wood_16mm"]),
    "concrete": (0.15, ["rough_concrete", "unpainted_concrete"]),
}
CLASSES = {"floor": FLOOR, "ceiling": CEILING, "wall": WALLS}

# approximate energy attenuation of air (1/m), 20 C, 50 % RH, octave bands 125 .. 8 kHz
_AIR_M = {125: 0.0001, 250: 0.0003, 500: 0.0006, 1000: 0.001, 2000: 0.0024, 4000: 0.0068, 8000: 0.024}
_RT_LIMITS = (0.12, 2.0, 3.0)  # min, max over 250 Hz .. 4 kHz, max at 125 Hz

SPEECH_PACKAGES = {
    "espeak-ng": {"licence": "GPL-3.0-or-later", "what": "text-to-speech, dry by construction"},
    "asterisk-core-sounds-en-wav": {"path": "usr/share/asterisk/sounds/en", "licence": "CC-BY-SA-3.0",
                                    "what": "studio voice prompts, 8 kHz (band-limited to 4 kHz)"},
    "alsa-utils": {"path": "usr/share/sounds/alsa", "licence": "GPL-2.0-or-later",
                   "what": "speaker-test channel announcements"},
    "puredata-doc": {"path": "usr/share/puredata/doc/sound", "licence": "BSD-3-Clause",
                     "what": "voice.wav / voice2.wav"},
}
PYROOMACOUSTICS_LICENCE = "MIT"


# =============================================================================================
# spec


@dataclass(frozen=True)
class RoomsSpec:
    rooms: int = 400
    speech: int = 300  # espeak-ng utterances (real recordings come on top when installed)
    unseen_frac: float = 0.15
    test_speech_frac: float = 0.15
    image_size: int = IMAGE_SIZE
    n_rays: int = N_RAYS
    real_speech: int = 200  # at most this many installed recordings (0: none)
    textures: str = "class"  # TEXTURES: the pictures' looks (the rooms and RIRs are the same)

    def name(self, seed: int) -> str:
        base = f"rooms-{self.rooms}r-s{seed}"
        default = RoomsSpec(rooms=self.rooms)
        if self == default:
            return base
        fields = asdict(self)
        if self.textures == "class":  # the default: names from before the option stay valid
            del fields["textures"]
        digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
        return f"{base}-{digest}"


def textures_of(meta: dict) -> str:
    """The looks a dataset's pictures were drawn with (builds from before the option: "class")."""
    return (meta.get("spec") or {}).get("textures", "class")


def default_data_dir() -> Path:
    return Path(os.environ.get("SOUNDSIGHT_DATA") or Path.home() / ".cache" / "soundsight" / "data").expanduser()


# =============================================================================================
# sampling a room


def _pick(rng, table: dict) -> tuple[str, str]:
    names = list(table)
    w = np.array([table[k][0] for k in names], dtype=np.float64)
    cls = names[int(rng.choice(len(names), p=w / w.sum()))]
    mats = table[cls][1]
    return cls, mats[int(rng.integers(len(mats)))]


def _absorption(name: str) -> np.ndarray:
    """Absorption per octave 125 .. 8 kHz from pyroomacoustics' database (last value held)."""
    import pyroomacoustics as pra

    for cat in pra.materials_data["absorption"].values():
        if name in cat:
            c = list(cat[name]["coeffs"])
            return np.array((c + [c[-1]] * 7)[:7], dtype=np.float64)
    raise KeyError(name)


def eyring_rt60(dims, materials: dict) -> np.ndarray:
    """Eyring RT60 per octave band (125 .. 8 kHz) with air absorption: a quick plausibility check."""
    W, D, H = dims
    areas = {"floor": W * D, "ceiling": W * D, "west": D * H, "east": D * H, "south": W * H, "north": W * H}
    S = sum(areas.values())
    V = W * D * H
    A = sum(areas[s] * _absorption(materials[s]) for s in SURFACES)
    a = np.clip(A / S, 1e-4, 0.99)
    m = np.array(list(_AIR_M.values()))
    return 0.161 * V / (-S * np.log(1 - a) + 4 * m * V)


def _sample_materials(rng) -> tuple[dict, dict]:
    classes, mats = {}, {}
    classes["floor"], mats["floor"] = _pick(rng, FLOOR)
    classes["ceiling"], mats["ceiling"] = _pick(rng, CEILING)
    for s in ("west", "east", "north", "south"):
        classes[s], mats[s] = _pick(rng, WALLS)
    if rng.random() < 0.5:  # the unseen wall behind the camera often repeats a side wall
        src = "west" if rng.random() < 0.5 else "east"
        classes["south"] = classes[src]
        mats["south"] = WALLS[classes[src]][1][int(rng.integers(len(WALLS[classes[src]][1])))]
    return classes, mats


def _palette(rng, cls: str, where: str) -> list:
    """Base colour (and a second colour) of a surface class, RGB in [0, 1]."""
    def jitter(c, s=0.06):
        return list(np.clip(np.asarray(c) + rng.normal(0, s, 3), 0.02, 0.98))

    if cls == "carpet":
        base = [[0.55, 0.12, 0.14], [0.18, 0.25, 0.5], [0.2, 0.4, 0.25], [0.6, 0.52, 0.4], [0.4, 0.4, 0.42],
                [0.45, 0.3, 0.5], [0.25, 0.22, 0.2]][int(rng.integers(7))]
        return [jitter(base), jitter(np.asarray(base) * 0.6 + 0.25)]
    if cls == "wood":
        base = [[0.62, 0.44, 0.26], [0.45, 0.28, 0.15], [0.75, 0.6, 0.42], [0.35, 0.22, 0.12]][int(rng.integers(4))]
        return [jitter(base, 0.04)]
    if cls == "concrete":
        g = rng.uniform(0.45, 0.7)
        return [jitter([g, g * 0.99, g * 0.96], 0.02)]
    if cls == "tile":
        base = [[0.92, 0.92, 0.9], [0.9, 0.85, 0.75], [0.7, 0.82, 0.88], [0.3, 0.3, 0.32], [0.85, 0.8, 0.78],
                [0.55, 0.6, 0.55]][int(rng.integers(6))]
        return [jitter(base, 0.03), [0.6, 0.6, 0.58] if np.mean(base) > 0.5 else [0.8, 0.8, 0.78]]
    if cls == "plaster":
        base = [[0.93, 0.92, 0.88], [0.95, 0.9, 0.78], [0.8, 0.86, 0.9], [0.88, 0.8, 0.78], [0.82, 0.88, 0.8],
                [0.9, 0.9, 0.9]][int(rng.integers(6))]
        return [jitter(base, 0.025)]
    if cls == "brick":
        base = [[0.6, 0.28, 0.2], [0.7, 0.4, 0.28], [0.5, 0.25, 0.22], [0.78, 0.72, 0.62]][int(rng.integers(4))]
        return [jitter(base, 0.03), [0.75, 0.73, 0.68]]
    if cls == "glass":
        return [jitter([0.62, 0.78, 0.95], 0.03), jitter([0.3, 0.3, 0.32], 0.05)]
    if cls == "curtains":
        base = [[0.55, 0.08, 0.1], [0.15, 0.18, 0.42], [0.78, 0.7, 0.55], [0.35, 0.35, 0.38], [0.3, 0.42, 0.3],
                [0.45, 0.12, 0.35]][int(rng.integers(6))]
        return [jitter(base, 0.04)]
    if cls == "panels":
        base = [[0.2, 0.2, 0.22], [0.42, 0.42, 0.45], [0.2, 0.3, 0.5], [0.45, 0.2, 0.2], [0.5, 0.45, 0.35]][
            int(rng.integers(5))]
        return [jitter(base, 0.03), [float(rng.random() < 0.5)]]  # panels: foam (1) or fabric (0), class looks only
    if cls == "acoustic_tile":
        return [jitter([0.9, 0.9, 0.87], 0.02)]
    raise KeyError(cls)


def sample_room(rng) -> dict:
    """Geometry, materials, camera and speaker of one room (plain JSON-able dict)."""
    kinds = list(ROOM_KINDS)
    w = np.array([ROOM_KINDS[k][0] for k in kinds])
    for _ in range(200):
        kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
        _, wr, dr, hr = ROOM_KINDS[kind]
        W, D, H = rng.uniform(*wr), rng.uniform(*dr), rng.uniform(*hr)
        if rng.random() < 0.3:
            W, D = D, W
        dims = [round(float(W), 3), round(float(D), 3), round(float(H), 3)]
        ok = False
        for _ in range(40):
            classes, mats = _sample_materials(rng)
            rt = eyring_rt60(dims, mats)
            if _RT_LIMITS[0] <= rt[1:6].min() and rt[1:6].max() <= _RT_LIMITS[1] and rt[0] <= _RT_LIMITS[2]:
                ok = True
                break
        if not ok:
            continue
        cam = _sample_camera(rng, dims)
        src = _sample_speaker(rng, dims, cam)
        if src is None:
            continue
        colours = {s: _palette(rng, classes[s], s) for s in SURFACES}
        scattering = round(float(rng.uniform(0.25, 0.6)), 3)
        dist = float(np.linalg.norm(np.asarray(src["mouth"]) - np.asarray(cam["pos"])))
        return {
            "kind": kind, "dims": dims, "classes": classes, "materials": mats, "colours": colours,
            "scattering": scattering, "camera": cam, "speaker": src, "distance": round(dist, 3),
            "eyring_rt60": [round(float(v), 3) for v in rt],
            "door": _sample_door(rng, dims), "texture_seed": int(rng.integers(2 ** 31)),
        }
    raise RuntimeError("could not sample a plausible room in 200 tries")


def _sample_camera(rng, dims) -> dict:
    W, D, H = dims
    y = min(rng.uniform(0.25, 0.6), 0.3 * D)
    x = W * rng.uniform(0.3, 0.7)
    z = min(rng.uniform(1.2, 1.7), H - 0.3)
    return {"pos": [float(x), float(y), float(z)], "yaw": float(np.deg2rad(rng.uniform(-12, 12))),
            "pitch": float(np.deg2rad(rng.uniform(-6, 4))), "hfov": float(np.deg2rad(rng.uniform(65, 80)))}


def _sample_speaker(rng, dims, cam) -> dict | None:
    W, D, H = dims
    cx, cy, _ = cam["pos"]
    margin = 0.35
    half = cam["hfov"] / 2 - np.deg2rad(10)
    for _ in range(100):
        az = cam["yaw"] + rng.uniform(-half, half)
        dx, dy = math.sin(az), math.cos(az)
        # farthest distance along this azimuth that stays `margin` inside the room
        lim = []
        if dx > 1e-6:
            lim.append((W - margin - cx) / dx)
        elif dx < -1e-6:
            lim.append((margin - cx) / dx)
        lim.append((D - margin - cy) / dy)
        rmax = min(lim)
        rmin = 0.8
        if rmax <= rmin:
            continue
        r = math.exp(rng.uniform(math.log(rmin), math.log(rmax)))
        x, y = cx + r * dx, cy + r * dy
        if not (margin <= x <= W - margin and margin <= y <= D - margin):
            continue
        mouth = min(rng.uniform(1.45, 1.75), H - 0.25)
        return {"mouth": [float(x), float(y), float(mouth)], "body_radius": float(rng.uniform(0.16, 0.21)),
                "shirt": [float(v) for v in rng.uniform(0.1, 0.9, 3)],
                "trousers": [float(v) for v in rng.uniform(0.05, 0.45, 3)],
                "skin": [float(v) for v in np.array([0.85, 0.65, 0.5]) * rng.uniform(0.45, 1.05)]}
    return None


def _sample_door(rng, dims) -> dict | None:
    """A 0.9 x 2.05 m door on the west, east or north wall, when it fits (an absolute scale cue)."""
    W, D, H = dims
    if H < 2.2:
        return None
    walls = [s for s, length in (("west", D), ("east", D), ("north", W)) if length > 1.6]
    if not walls or rng.random() < 0.25:
        return None
    wall = walls[int(rng.integers(len(walls)))]
    length = D if wall in ("west", "east") else W
    u0 = float(rng.uniform(0.3, length - 1.2))
    return {"wall": wall, "u0": u0, "width": 0.9, "height": 2.05,
            "colour": [float(v) for v in np.clip(rng.normal([0.45, 0.3, 0.18], 0.08), 0.05, 0.95)]}


# =============================================================================================
# simulation


def ray_budget(dims, min_rays: int = N_RAYS, hits: float = HITS, max_rays: int = MAX_RAYS) -> tuple[float, int]:
    """Receiver radius and ray count for a room: the radius grows with the room (0.5 m up to
    60 m^3, 1.5 m from ~1600 m^3) and the rays give about ``hits`` hits per 4 ms histogram bin
    (Vorlaender 2008, eq. 11.12, as pyroomacoustics' own default), at least ``min_rays``. With a
    fixed few thousand rays a hall's late tail is a sparse scatter of single hits."""
    V = float(np.prod(dims))
    radius = float(np.clip(0.5 * (V / 60.0) ** (1 / 3), 0.5, 1.5))
    k1 = V / (math.pi * radius ** 2 * 343.0 * 0.004)
    return radius, int(np.clip(hits * k1, min_rays, max_rays))


def simulate_rir(room: dict, seed: int, n_rays: int = N_RAYS, hits: float = HITS) -> tuple[np.ndarray, float]:
    """pyroomacoustics hybrid RIR at 16 kHz: (rir float64 as simulated, seconds taken). ``hits``
    per histogram bin as ``ray_budget``; the ray cap scales with it (``HITS``: what the builds use)."""
    import warnings

    import pyroomacoustics as pra

    t0 = time.perf_counter()
    pra.seed(numpy=seed, libroom=seed)
    mats = {s: pra.Material(room["materials"][s], room["scattering"]) for s in SURFACES}
    rt_max = max(room["eyring_rt60"][:6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pra.ShoeBox(room["dims"], fs=SR, materials=mats, max_order=3, ray_tracing=True, air_absorption=True)
        radius, rays = ray_budget(room["dims"], n_rays, hits, max_rays=int(round(MAX_RAYS * hits / HITS)))
        r.set_ray_tracing(n_rays=rays, receiver_radius=radius, energy_thres=1e-7,
                          time_thres=float(min(6.0, 1.6 * rt_max + 0.3)), hist_bin_size=0.004)
        r.add_source(room["speaker"]["mouth"])
        r.add_microphone(room["camera"]["pos"])
        r.compute_rir()
    return np.asarray(r.rir[0][0], dtype=np.float64), time.perf_counter() - t0


def prepare_rir(h: np.ndarray) -> tuple[np.ndarray, float]:
    """Cut to DIRECT_INDEX samples before the peak, end at -80 dB EDC (<= MAX_RIR_S), unit energy."""
    k = int(np.argmax(np.abs(h)))
    start = k - DIRECT_INDEX
    h = np.pad(h, (max(0, -start), 0))[max(0, start):]
    e = np.cumsum((h * h)[::-1])[::-1]
    end = int(np.searchsorted(-e, -e[0] * 1e-8))  # first sample where the remaining energy < -80 dB
    end = min(max(end, DIRECT_INDEX + int(0.05 * SR)), len(h), int(MAX_RIR_S * SR))
    h = h[:end]
    g = float(np.sqrt(np.sum(h * h)))
    return h / g, g


def measure(h: np.ndarray, sr: int = SR) -> dict:
    """Every acoustic measure stored per room."""
    import warnings

    import pyroomacoustics as pra

    from soundsight_plugins.acoustic_match import acoustics as ac

    d = ac.decay_fit(h, sr, noise_comp=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p60 = float(pra.experimental.measure_rt60(h, sr))
        p30 = float(pra.experimental.measure_rt60(h, sr, decay_db=30))
    bands = ac.rt60_bands(h, sr, centers=(125, 250, 500, 1000, 2000, 4000), noise_comp=False)
    return {
        "rt60": round(d.rt60, 4), "rt60_fit": d.fit,
        "rt60_speech": round(ac.rt60_schroeder(h, sr, band=ac.SPEECH_BAND, noise_comp=False), 4),
        "rt60_bands": {str(k): round(v, 4) for k, v in bands.items()},
        "rt60_pra": round(p60, 4), "rt60_pra_t30": round(p30, 4),
        "edt": round(d.edt, 4), "drr": round(ac.drr_db(h, sr), 3),
    }


# =============================================================================================
# rendering


def _hash(ix, iy, seed: int) -> np.ndarray:
    """Deterministic per-cell random numbers in [0, 1) for integer lattice coordinates."""
    s = np.uint64(((seed & 0xFFFFFFFF) * 0x165667B19E3779F9) & 0xFFFFFFFFFFFFFFFF)
    h = (np.asarray(ix, dtype=np.int64).astype(np.uint64) * np.uint64(0x9E3779B185EBCA87)
         ^ np.asarray(iy, dtype=np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F) ^ s)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _noise(u, v, scale: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with feature size ``scale`` (metres)."""
    x, y = u / scale, v / scale
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    a = _hash(ix, iy, seed)
    b = _hash(ix + 1, iy, seed)
    c = _hash(ix, iy + 1, seed)
    d = _hash(ix + 1, iy + 1, seed)
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _fbm(u, v, scale: float, seed: int, octaves: int = 3) -> np.ndarray:
    out = np.zeros_like(u)
    amp, tot = 1.0, 0.0
    for k in range(octaves):
        out += amp * _noise(u, v, scale / 2 ** k, seed + 101 * k)
        tot += amp
        amp *= 0.5
    return out / tot


def _lines(coord, period: float, width, fp=None) -> np.ndarray:
    """1 within ``width`` of a multiple of ``period`` (grout, mortar, seams), else 0.

    ``fp``: the pixel footprint (metres) at each point; lines thinner than a pixel are drawn a
    pixel wide at reduced strength and fade to their mean coverage when a period gets smaller
    than two pixels (a cheap anti-aliasing that keeps far brick walls from turning to moire)."""
    if fp is None:
        r = np.mod(coord, period)
        return ((r < width / 2) | (r > period - width / 2)).astype(np.float64)
    w = np.maximum(width, fp)
    r = np.mod(coord, period)
    val = ((r < w / 2) | (r > period - w / 2)).astype(np.float64) * (width / w)
    return np.where(fp > period / 2, width / period, val)


def _fade(fp, feature: float) -> np.ndarray:
    """Weight of a detail of size ``feature`` at pixel footprint ``fp``: 1 when resolved, 0 when
    smaller than a pixel."""
    return np.clip(1.5 - fp / feature, 0.0, 1.0)


def _window(u, v, colours: list, seed: int, height: float, pane: float, bars: tuple, transom: float, sill: float,
            fp) -> tuple[np.ndarray, np.ndarray]:
    """A glazed wall: sky (colours[0]) through panes ``pane`` wide, frame bars (colours[1]) ``bars``
    thick (vertical, horizontal), transoms every ``transom`` m above a sill ``sill`` m high; the
    glass glows (emission), the frame does not."""
    sky, frame = np.asarray(colours[0]), np.asarray(colours[1])
    t = np.clip(v / max(height, 1.0), 0, 1)
    col = sky[None, :] * (0.8 + 0.3 * t)[:, None] + 0.08 * _fbm(u, v, 1.5, seed)[:, None]
    f = np.clip(_lines(u, pane, bars[0], fp) + _lines(v - sill, transom, bars[1], fp), 0, 1)
    f = np.maximum(f, (v < sill).astype(np.float64))
    col = col * (1 - f[:, None]) + frame * f[:, None]
    return np.clip(col, 0, 1), 0.75 * (1 - f)


def _skirting(col: np.ndarray, v) -> np.ndarray:
    """A plastered wall's skirting board: the lowest 10 cm."""
    sk = (v < 0.1).astype(np.float64)
    return col * (1 - sk[:, None]) + np.array([0.95, 0.95, 0.93]) * 0.8 * sk[:, None]


def _tie_holes(u, v, fp) -> np.ndarray:
    """The formwork tie holes of cast concrete walls: 5 cm dots on a 60 cm grid."""
    hu, hv = np.mod(u - 0.3, 0.6) - 0.3, np.mod(v - 0.3, 0.6) - 0.3
    return (hu * hu + hv * hv < 0.025 ** 2).astype(np.float64) * _fade(fp, 0.05)


def _carpet_pattern(u, v, kind: int, fp) -> np.ndarray:
    """Where a carpet shows its second colour: 0 plain, 1 a diamond repeat, 2 diagonal stripes."""
    if kind == 1:
        pu, pv = np.mod(u, 0.5) - 0.25, np.mod(v, 0.5) - 0.25
        pattern = ((np.abs(pu) + np.abs(pv)) < 0.12).astype(np.float64)
        return np.where(fp > 0.2, 0.115, pattern)
    if kind == 2:
        return _lines(u + 0.3 * v, 0.6, 0.12, fp)
    return np.zeros(len(u))


def _planks(u, v, width: float, length: float, seed: int, fp) -> np.ndarray:
    """Shade of wooden planks: staggered boards ``width`` x ``length`` with tint, grain and seams.
    Floor planks run away from the camera; wall boards stand upright."""
    along, across = v, u
    plank = np.floor(across / width)
    offset = _hash(plank, 0 * plank, seed) * length
    seg = np.floor((along + offset) / length)
    tint = 1 + 0.4 * (_hash(plank, seg, seed + 3) - 0.5) * _fade(fp, width)
    grain = 1 + 0.08 * np.sin(2 * np.pi * (across / 0.03 + 4 * _noise(along * 0.3, across, 0.4, seed + 5))) * _fade(fp, 0.015)
    seam = np.maximum(_lines(across, width, 0.006, fp), _lines(along + offset, length, 0.006, fp))
    return tint * grain * (1 - 0.45 * seam)


def _texture_by_class(cls: str, where: str, u, v, colours: list, seed: int, extent: tuple, fp) -> tuple[np.ndarray, np.ndarray]:
    """Colour (N, 3) and emission (N,) of a surface class at texture coordinates u, v (metres): one
    look per class (``textures="class"``, the default; the shipped models' pictures).

    For walls u runs along the wall and v is the height; floors and ceilings use (x, y).
    ``fp``: pixel footprint in metres at each point (fine detail fades out when unresolved)."""
    base = np.asarray(colours[0], dtype=np.float64)
    n = len(u)
    emit = np.zeros(n)
    one = np.ones(n)
    if cls == "carpet":
        second = np.asarray(colours[1])
        mottle = 0.85 + 0.3 * _fbm(u, v, 0.25, seed)
        grain = 1 + 0.24 * (_hash(np.floor(u / 0.012), np.floor(v / 0.012), seed + 7) - 0.5) * _fade(fp, 0.012)
        pattern = _carpet_pattern(u, v, seed % 3, fp)
        col = base * (1 - pattern[:, None]) + second * pattern[:, None]
        return col * (mottle * grain)[:, None], emit
    if cls == "wood":
        return base * _planks(u, v, 0.1 + 0.1 * ((seed >> 3) % 5) / 4, 1.6, seed, fp)[:, None], emit
    if cls == "concrete":
        mottle = 0.8 + 0.35 * _fbm(u, v, 0.6, seed)
        speck = 1 + 0.14 * (_hash(np.floor(u / 0.01), np.floor(v / 0.01), seed + 9) - 0.5) * _fade(fp, 0.01)
        if where == "floor":
            seam = _lines(u, 3.0, 0.015, fp) + _lines(v, 3.0, 0.015, fp)
            holes = 0
        else:
            seam = _lines(u, 2.4, 0.012, fp) + _lines(v, 1.2, 0.012, fp)
            holes = _tie_holes(u, v, fp)
        shade = mottle * speck * (1 - 0.3 * np.clip(seam, 0, 1)) * (1 - 0.5 * holes)
        return base * shade[:, None], emit
    if cls == "tile":
        size = [0.2, 0.3, 0.45, 0.6][(seed >> 2) % 4] if where == "floor" else [0.1, 0.15, 0.2][(seed >> 2) % 3]
        grout = np.asarray(colours[1])
        g = np.clip(_lines(u, size, size * 0.06, fp) + _lines(v, size, size * 0.06, fp), 0, 1)
        tint = 1 + 0.1 * (_hash(np.floor(u / size), np.floor(v / size), seed) - 0.5) * _fade(fp, size)
        col = base * tint[:, None]
        if (seed >> 5) % 3 == 0:  # marble veins
            vein = np.abs(np.sin(4 * u + 3 * v + 8 * _fbm(u, v, 0.5, seed + 11)))
            col = col * (0.75 + 0.25 * vein ** 0.3)[:, None]
        return col * (1 - g[:, None]) + grout * g[:, None], emit
    if cls == "plaster":
        shade = 0.96 + 0.06 * _fbm(u, v, 1.0, seed)
        col = base * shade[:, None]
        return (_skirting(col, v) if where == "wall" else col), emit
    if cls == "brick":
        bw, bh, m = 0.225, 0.075, 0.01
        row = np.floor(v / bh)
        uu = u + 0.5 * bw * np.mod(row, 2)
        col_i = np.floor(uu / bw)
        tint = 1 + 0.35 * (_hash(col_i, row, seed) - 0.5) * _fade(fp, bh)
        mortar = np.clip(_lines(v, bh, m, fp) + _lines(uu, bw, m, fp), 0, 1)
        col = base * (tint * (0.92 + 0.16 * _noise(u, v, 0.03, seed + 2)))[:, None]
        return col * (1 - mortar[:, None]) + np.asarray(colours[1]) * mortar[:, None], emit
    if cls == "glass":
        return _window(u, v, colours, seed, extent[1], 0.9 + 0.6 * ((seed >> 4) % 3) / 2, (0.07, 0.06), 1.5, 0.45, fp)
    if cls == "curtains":
        period = 0.12 + 0.12 * ((seed >> 3) % 4) / 3
        phase = 2 * np.pi * u / period + 1.2 * _noise(u, 0 * u, 0.5, seed)
        fold = 0.81 + 0.19 * np.cos(phase) * _fade(fp, period / 3)
        col = base * fold[:, None]
        top = extent[1]
        rod = _lines(v - (top - 0.095), 1e3, 0.05, fp)
        return col * (1 - rod[:, None]) + np.array([0.2, 0.2, 0.2]) * rod[:, None], emit
    if cls == "panels":
        foam = colours[1][0] > 0.5
        if foam:
            p = 0.1
            bump = np.abs(np.sin(np.pi * u / p) * np.sin(np.pi * v / p))
            shade = 0.55 + 0.45 * (0.405 + (bump - 0.405) * _fade(fp, p / 2))
            return base * shade[:, None], emit
        gap = np.clip(_lines(u, 1.2, 0.04, fp) + _lines(v - 0.3, 1.2, 0.04, fp), 0, 1)
        fabric = 1 + 0.16 * (_hash(np.floor(u / 0.006), np.floor(v / 0.006), seed) - 0.5) * _fade(fp, 0.006)
        col = base * fabric[:, None]
        return col * (1 - gap[:, None]) + np.array([0.15, 0.15, 0.15]) * gap[:, None], emit
    if cls == "acoustic_tile":
        grid = np.clip(_lines(u, 0.6, 0.025, fp) + _lines(v, 0.6, 0.025, fp), 0, 1)
        speck = 1 - 0.25 * (_hash(np.floor(u / 0.008), np.floor(v / 0.008), seed) > 0.8) * _fade(fp, 0.008) - 0.05 * (1 - _fade(fp, 0.008))
        col = base * speck[:, None]
        col = col * (1 - grid[:, None]) + np.array([0.75, 0.75, 0.75]) * grid[:, None]
        # light fixtures: every 4th tile in both directions
        lu, lv = np.floor(u / 0.6), np.floor(v / 0.6)
        light = ((np.mod(lu, 4) == 1) & (np.mod(lv, 4) == 1)).astype(np.float64)
        col = col * (1 - light[:, None]) + np.array([1.0, 1.0, 0.97]) * light[:, None]
        return col, np.maximum(emit, light)
    return base[None, :] * one[:, None], emit


def _texture_by_material(cls: str, material: str, where: str, u, v, colours: list, seed: int, extent: tuple,
                         fp) -> tuple[np.ndarray, np.ndarray]:
    """Colour (N, 3) and emission (N,) of a surface at texture coordinates u, v (metres), with a
    look per material (``textures="material"``).

    The class sets the kind of texture and ``material`` (one of the class's pyroomacoustics
    materials) its look: pile and pattern of a carpet, plank size, brick bond and pointing, pane
    size, fold depth and sheerness of a curtain, panel type. Why per material: the acoustics
    differ within a class (a thin carpet against 10 mm felt; a sheer against a velvet curtain)
    and a picture that shows only the class caps what any model can read from it (README). The
    look's scale is 5-40 cm, visible at 128 px. For walls u runs along the wall and v is the
    height; floors and ceilings use (x, y). ``fp``: pixel footprint in metres at each point
    (fine detail fades out when unresolved)."""
    base = np.asarray(colours[0], dtype=np.float64)
    k = CLASSES[where][cls][1].index(material)
    n = len(u)
    emit = np.zeros(n)
    if cls == "carpet":  # 9 materials: 3 piles (fine .. shaggy) x 3 patterns (plain, diamond, stripes)
        pile, kind = k // 3, k % 3
        second = np.asarray(colours[1])
        mottle = 1 + [0.15, 0.35, 0.6][pile] * (_fbm(u, v, [0.12, 0.3, 0.6][pile], seed) - 0.5)
        cell = [0.008, 0.015, 0.03][pile]
        grain = 1 + [0.12, 0.25, 0.45][pile] * (_hash(np.floor(u / cell), np.floor(v / cell), seed + 7) - 0.5) * _fade(fp, cell)
        pattern = _carpet_pattern(u, v, kind, fp)
        second = np.clip(base + 1.8 * (second - base), 0.02, 0.98)
        col = base * (1 - pattern[:, None]) + second * pattern[:, None]
        pile_shadow = [1.0, 0.87, 0.74][pile]  # a deep pile shades itself
        return col * (pile_shadow * mottle * grain)[:, None], emit
    if cls == "wood":  # plank width and length per material (wide boards .. short parquet)
        return base * _planks(u, v, [0.09, 0.14, 0.2, 0.3][k], [1.6, 0.6, 2.4, 1.2][k], seed, fp)[:, None], emit
    if cls == "concrete":
        rough = material == "rough_concrete"
        polished = material == "concrete_floor"
        mottle = 1 + (0.5 if rough else 0.12 if polished else 0.3) * (_fbm(u, v, 0.3 if rough else 0.6, seed) - 0.5)
        speck = 1 + (0.4 if rough else 0.05 if polished else 0.14) * (
            _hash(np.floor(u / 0.01), np.floor(v / 0.01), seed + 9) - 0.5) * _fade(fp, 0.01)
        holes = 0
        if where == "floor":
            period = 1.5 if polished else 3.0
            seam = _lines(u, period, 0.015, fp) + _lines(v, period, 0.015, fp)
            if polished:  # sealed: lighter, with a soft reflection of the room's light
                mottle = mottle * (1.1 + 0.15 * np.exp(-((u - extent[0] / 2) ** 2 + (v - extent[1] / 2) ** 2) / 4.0))
        elif rough:  # board-formed: horizontal board marks every 15 cm
            seam = 0.6 * _lines(v, 0.15, 0.012, fp) + _lines(u, 2.4, 0.012, fp)
        else:  # cast panels with tie holes
            seam = _lines(u, 2.4, 0.012, fp) + _lines(v, 1.2, 0.012, fp)
            holes = _tie_holes(u, v, fp)
        shade = mottle * speck * (1 - 0.3 * np.clip(seam, 0, 1)) * (1 - 0.5 * holes)
        return base * shade[:, None], emit
    if cls == "tile":
        grout = np.asarray(colours[1])
        if material == "linoleum_on_concrete":  # a sheet: no grout, flecks and seams every 2 m
            fleck = 1 + 0.2 * (_hash(np.floor(u / 0.02), np.floor(v / 0.02), seed) - 0.5) * _fade(fp, 0.02)
            seam = _lines(u, 2.0, 0.004, fp)
            return base * (fleck * (1 - 0.3 * seam))[:, None], emit
        if material == "limestone_wall":  # large coursed blocks, offset rows, thin joints
            bw, bh = 0.6, 0.3
            row = np.floor(v / bh)
            uu = u + 0.5 * bw * np.mod(row, 2)
            tint = 1 + 0.15 * (_hash(np.floor(uu / bw), row, seed) - 0.5) * _fade(fp, bh)
            col = base * (tint * (0.9 + 0.2 * _fbm(u, v, 0.2, seed + 3)))[:, None]
            g = np.clip(_lines(v, bh, 0.008, fp) + _lines(uu, bw, 0.008, fp), 0, 1)
            return col * (1 - 0.35 * g[:, None]), emit
        marble = material == "marble_floor"
        size = (0.6 if marble else 0.3) if where == "floor" else 0.15
        g = np.clip(_lines(u, size, size * (0.02 if marble else 0.06), fp)
                    + _lines(v, size, size * (0.02 if marble else 0.06), fp), 0, 1)
        tint = 1 + 0.1 * (_hash(np.floor(u / size), np.floor(v / size), seed) - 0.5) * _fade(fp, size)
        col = base * tint[:, None]
        if marble:
            vein = np.abs(np.sin(4 * u + 3 * v + 8 * _fbm(u, v, 0.5, seed + 11)))
            col = col * (0.75 + 0.25 * vein ** 0.3)[:, None]
        return col * (1 - g[:, None]) + grout * g[:, None], emit
    if cls == "plaster":
        if material == "rough_lime_wash":
            shade = 1 + 0.35 * (_fbm(u, v, 0.3, seed) - 0.5)
        elif material == "hard_surface":  # smooth and even
            shade = np.ones(n)
        else:
            shade = 0.96 + 0.06 * _fbm(u, v, 1.0, seed)
        if material in ("plasterboard", "ceiling_plasterboard"):  # taped board joints
            seam = _lines(u, 1.2, 0.04, fp)
            if material == "ceiling_plasterboard":  # a suspended board grid
                seam = np.clip(seam + _lines(v, 0.6, 0.04, fp), 0, 1)
            shade = shade * (1 - 0.25 * seam)
        if material == "hard_surface" and where not in ("floor", "ceiling"):  # a dado rail at 0.9 m
            shade = shade * (1 - 0.3 * _lines(v - 0.9, 1e3, 0.04, fp))
        col = base * shade[:, None]
        return (_skirting(col, v) if where == "wall" else col), emit
    if cls == "brick":
        # brickwork, rough, flush pointing, 10 mm pointing, facing brick
        bw, bh = (0.29, 0.065) if k == 4 else (0.225, 0.075)
        m = [0.01, 0.012, 0.004, 0.018, 0.008][k]
        tint_amp = [0.35, 0.6, 0.25, 0.3, 0.1][k]
        rough = [0.16, 0.45, 0.1, 0.16, 0.06][k]
        mortar_col = np.asarray(colours[1]) if k != 2 else base * 0.7
        row = np.floor(v / bh)
        uu = u + 0.5 * bw * np.mod(row, 2)
        col_i = np.floor(uu / bw)
        tint = 1 + tint_amp * (_hash(col_i, row, seed) - 0.5) * _fade(fp, bh)
        mortar = np.clip(_lines(v, bh, m, fp) + _lines(uu, bw, m, fp), 0, 1)
        col = base * (tint * (1 - rough / 2 + rough * _noise(u, v, 0.03, seed + 2)))[:, None]
        return col * (1 - mortar[:, None]) + mortar_col * mortar[:, None], emit
    if cls == "glass":  # glass_3mm, glass_window, double_glazing_30mm, double_glazing_10mm
        bar = [0.03, 0.05, 0.12, 0.08][k]
        return _window(u, v, colours, seed, extent[1], [2.0, 0.6, 1.2, 0.9][k], (bar, bar), 0.6 if k == 1 else 1.5,
                       [0.3, 0.9, 0.45, 0.6][k], fp)
    if cls == "curtains":
        # cotton 0.5, 0.2 (sheer), densely woven, velvet, fabric, fabric folded, studio
        period = [0.3, 0.4, 0.2, 0.25, 0.35, 0.12, 0.18][k]
        depth = [0.12, 0.08, 0.2, 0.3, 0.15, 0.3, 0.35][k]
        sheer = [0.3, 0.5, 0.0, 0.0, 0.1, 0.0, 0.0][k]
        phase = 2 * np.pi * u / period + 1.2 * _noise(u, 0 * u, 0.5, seed)
        fold = 1 - depth + depth * np.cos(phase) * _fade(fp, period / 3)  # deep folds: darker on average
        if material == "curtains_velvet":  # a sheen on the fold crests
            fold = fold + 0.25 * np.clip(np.cos(phase), 0, 1) ** 8 * _fade(fp, period / 3)
        col = base * fold[:, None]
        emit = np.full(n, sheer)  # daylight through a thin fabric
        top = extent[1]
        rod = _lines(v - (top - 0.095), 1e3, 0.05, fp)
        col = col * (1 - rod[:, None]) + np.array([0.2, 0.2, 0.2]) * rod[:, None]
        return col, emit * (1 - rod)
    if cls == "panels":
        # fabric 6 pcf (1.2 m panels), fabric 8 pcf (0.6 m), rockwool slabs, slatted fibre absorber, foam
        if k == 4:
            p = 0.1
            bump = np.abs(np.sin(np.pi * u / p) * np.sin(np.pi * v / p))
            shade = 0.55 + 0.45 * (0.405 + (bump - 0.405) * _fade(fp, p / 2))
            return base * shade[:, None], emit
        if k == 3:
            slat = _lines(u, 0.08, 0.025, fp)
            return base * (1 - 0.55 * slat)[:, None], emit
        if k == 2:
            fibre = 1 + 0.4 * (_hash(np.floor(u / 0.015), np.floor(v / 0.015), seed) - 0.5) * _fade(fp, 0.015)
            gap = np.clip(_lines(u, 0.6, 0.01, fp) + _lines(v, 1.2, 0.01, fp), 0, 1)
            return base * (fibre * (0.9 + 0.2 * _fbm(u, v, 0.15, seed + 1)) * (1 - 0.5 * gap))[:, None], emit
        size = 1.2 if k == 0 else 0.6
        gap = np.clip(_lines(u, size, 0.04 if k == 0 else 0.07, fp) + _lines(v - 0.3, size, 0.04 if k == 0 else 0.07, fp), 0, 1)
        fabric = 1 + 0.16 * (_hash(np.floor(u / 0.006), np.floor(v / 0.006), seed) - 0.5) * _fade(fp, 0.006)
        col = base * fabric[:, None]
        frame = np.array([0.15, 0.15, 0.15]) if k == 0 else np.array([0.8, 0.8, 0.78])  # dark gaps / metal frames
        return col * (1 - gap[:, None]) + frame * gap[:, None], emit
    if cls == "acoustic_tile":
        # fissured, perforated gypsum, fibre absorber, melamine foam, metal panel
        if k == 3:  # foam wedges
            p = 0.15
            wedge = np.abs(np.mod(u / p + 0.5 * np.floor(v / 0.6), 1.0) - 0.5) * 2
            return base * (0.6 + 0.4 * (0.5 + (wedge - 0.5) * _fade(fp, p / 2)))[:, None], emit
        if k == 4:  # linear metal strips with a sheen
            strip = _lines(u, 0.1, 0.012, fp)
            sheen = 0.9 + 0.15 * np.cos(2 * np.pi * u / 0.1) * _fade(fp, 0.05)
            return np.clip(base * 0.85 * (sheen * (1 - 0.6 * strip))[:, None], 0, 1), emit
        tu, tv = (1.2, 0.6) if k == 2 else (0.6, 0.6)
        grid = np.clip(_lines(u, tu, 0.025, fp) + _lines(v, tv, 0.025, fp), 0, 1)
        if k == 1:  # perforations: a dot grid, 5 cm
            du, dv = np.mod(u, 0.05) - 0.025, np.mod(v, 0.05) - 0.025
            dots = (du * du + dv * dv < 0.008 ** 2).astype(np.float64)
            speck = 1 - np.where(fp > 0.025, 0.08, 0.6 * dots)
        elif k == 2:
            speck = 0.9 + 0.2 * _fbm(u, v, 0.1, seed)
        else:
            speck = (1 - 0.25 * (_hash(np.floor(u / 0.008), np.floor(v / 0.008), seed) > 0.8) * _fade(fp, 0.008)
                     - 0.05 * (1 - _fade(fp, 0.008)))
        col = base * speck[:, None]
        col = col * (1 - grid[:, None]) + np.array([0.75, 0.75, 0.75]) * grid[:, None]
        # light fixtures: every 4th tile in both directions
        lu, lv = np.floor(u / tu), np.floor(v / tv)
        light = ((np.mod(lu, 4) == 1) & (np.mod(lv, 4) == 1)).astype(np.float64)
        col = col * (1 - light[:, None]) + np.array([1.0, 1.0, 0.97]) * light[:, None]
        return col, np.maximum(emit, light)
    raise KeyError(cls)


def _camera_basis(cam: dict):
    yaw, pitch = cam["yaw"], cam["pitch"]
    f = np.array([math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), math.sin(pitch)])
    r = np.array([math.cos(yaw), -math.sin(yaw), 0.0])
    u = np.cross(r, f)
    return f, r, u


def _cast(room: dict, S: int):
    """Rays through the centres of an S x S picture from the microphone, and where they hit the box:
    the camera origin, unit directions (N, 3), distance t, hit point p and face id (SURFACES order)."""
    W, D, H = room["dims"]
    cam = room["camera"]
    o = np.asarray(cam["pos"], dtype=np.float64)
    f, r, up = _camera_basis(cam)
    tan = math.tan(cam["hfov"] / 2)
    jj, ii = np.meshgrid((np.arange(S) + 0.5) / S * 2 - 1, 1 - (np.arange(S) + 0.5) / S * 2)
    d = f[None, :] + (jj.ravel() * tan)[:, None] * r[None, :] + (ii.ravel() * tan)[:, None] * up[None, :]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    N = len(d)
    lo = np.zeros(3)
    hi = np.array([W, D, H])
    with np.errstate(divide="ignore", invalid="ignore"):
        tb = np.where(d > 0, (hi - o) / d, np.where(d < 0, (lo - o) / d, np.inf))
    axis = np.argmin(tb, axis=1)
    t = tb[np.arange(N), axis]
    p = o + t[:, None] * d
    positive = d[np.arange(N), axis] > 0
    # face ids: floor, ceiling, west, east, south, north
    face = np.where(axis == 2, np.where(positive, 1, 0), np.where(axis == 0, np.where(positive, 3, 2),
                                                                      np.where(positive, 5, 4)))
    return o, d, t, p, face, tan


def _face_uv(surf: str, q: np.ndarray, dims) -> tuple:
    """A face's texture coordinates (metres) of hit points q and the face's extent."""
    W, D, H = dims
    if surf in ("floor", "ceiling"):
        return q[:, 0], q[:, 1], (W, D)
    if surf in ("west", "east"):
        return q[:, 1], q[:, 2], (D, H)
    return q[:, 0], q[:, 2], (W, H)


def _in_door(room: dict, surf: str, u, v) -> np.ndarray:
    door = room.get("door")
    if not door or door["wall"] != surf:
        return np.zeros(len(u), dtype=bool)
    return (u > door["u0"]) & (u < door["u0"] + door["width"]) & (v < door["height"])


def _speaker_hits(o, d, t, spk: dict):
    """Which rays hit the speaker's body cylinder (floor .. shoulders) or head sphere before the wall,
    and at which distances: (body, tc, head, th, head centre, head radius)."""
    rb = spk["body_radius"]
    sx, sy, mouth = spk["mouth"]
    shoulder = mouth - 0.13
    ox, oy = o[0] - sx, o[1] - sy
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (ox * d[:, 0] + oy * d[:, 1])
    c = ox * ox + oy * oy - rb * rb
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        tc = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    zc = o[2] + tc * d[:, 2]
    body = (disc > 0) & (tc > 0) & (zc >= 0) & (zc <= shoulder) & (tc < t)
    head_c = np.array([sx, sy, mouth + 0.04])
    rh = 0.115
    oc = o - head_c
    bh = np.sum(d * oc, axis=1)
    ch = np.sum(oc * oc) - rh * rh
    dh = bh * bh - ch
    th = -bh - np.sqrt(np.maximum(dh, 0))
    head = (dh > 0) & (th > 0) & (th < np.where(body, tc, t))
    body &= ~head
    return body, tc, head, th, head_c, rh


# labels of surface_map beyond the six faces (SURFACES order, 0..5)
SPEAKER_LABEL, DOOR_LABEL = 6, 7
N_SURFACE_LABELS = 8


def surface_map(room: dict, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 (size, size): what each pixel of ``render_room``'s picture shows at its centre: the face
    (index in SURFACES), SPEAKER_LABEL or DOOR_LABEL (a door is not its wall's material).
    Geometry only, so it costs a small fraction of a render; the dense supervision of
    ``room_params --dense``."""
    o, d, t, p, face, _ = _cast(room, size)
    lab = face.astype(np.uint8)
    for fi, surf in enumerate(SURFACES):
        sel = face == fi
        if sel.any():
            u, v, _ = _face_uv(surf, p[sel], room["dims"])
            idx = np.flatnonzero(sel)[_in_door(room, surf, u, v)]
            lab[idx] = DOOR_LABEL
    body, _, head, _, _, _ = _speaker_hits(o, d, t, room["speaker"])
    lab[body | head] = SPEAKER_LABEL
    return lab.reshape(size, size)


def render_room(room: dict, size: int = IMAGE_SIZE, supersample: int = 2, textures: str = "class") -> np.ndarray:
    """uint8 (size, size, 3) picture of the room from the microphone. Deterministic. ``textures``:
    "class" (one look per class) or "material" (one per material: ``_texture_by_material``)."""
    if textures not in TEXTURES:
        raise ValueError(f"textures must be one of {TEXTURES}, got {textures!r}")
    W, D, H = room["dims"]
    S = size * supersample
    o, d, t, p, face, tan = _cast(room, S)
    N = len(d)
    normals = np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float64)
    cos_in = np.abs(np.sum(normals[face] * d, axis=1))
    fp = t * (2 * tan / S) / np.maximum(cos_in, 0.1)  # metres per (supersampled) pixel
    col = np.zeros((N, 3))
    emit = np.zeros(N)
    seed = room["texture_seed"]
    for fi, surf in enumerate(SURFACES):
        sel = face == fi
        if not sel.any():
            continue
        u, v, ext = _face_uv(surf, p[sel], room["dims"])
        where = surf if surf in ("floor", "ceiling") else "wall"
        if textures == "material":
            c, e = _texture_by_material(room["classes"][surf], room["materials"][surf], where, u, v,
                                        room["colours"][surf], seed + 17 * fi, ext, fp[sel])
        else:
            c, e = _texture_by_class(room["classes"][surf], where, u, v, room["colours"][surf], seed + 17 * fi, ext,
                                     fp[sel])
        # ceiling lights for plain ceilings: round fixtures on a 2.4 m grid
        if surf == "ceiling" and room["classes"][surf] != "acoustic_tile":
            lu, lv = np.mod(u - 1.2, 2.4) - 1.2, np.mod(v - 1.2, 2.4) - 1.2
            lamp = (lu * lu + lv * lv) < 0.18 ** 2
            c[lamp] = [1.0, 1.0, 0.95]
            e = np.maximum(e, lamp.astype(np.float64))
        door = room.get("door")
        if door and door["wall"] == surf:
            inside = _in_door(room, surf, u, v)
            frame = inside & ((u < door["u0"] + 0.06) | (u > door["u0"] + door["width"] - 0.06) | (v > door["height"] - 0.06))
            c[inside] = np.asarray(door["colour"]) * (0.9 + 0.1 * _noise(u[inside], v[inside], 0.3, seed))[:, None]
            c[frame] = [0.85, 0.85, 0.82]
            knob = inside & (np.abs(u - (door["u0"] + door["width"] - 0.12)) < 0.03) & (np.abs(v - 1.0) < 0.03)
            c[knob] = [0.8, 0.7, 0.3]
            e[inside] = 0
        col[sel] = c
        emit[sel] = e
    # lighting: a light near the ceiling centre and a fill light at the camera
    light = np.array([W / 2, D / 2, H - 0.1])
    n_hit = normals[face]
    to_l = light - p
    dl = np.linalg.norm(to_l, axis=1) + 1e-9
    lam = np.clip(np.sum(n_hit * to_l, axis=1) / dl, 0, 1)
    fall = 1.0 / (1.0 + (dl / max(H, 3.0)) ** 2)
    fill = np.clip(-np.sum(n_hit * d, axis=1), 0, 1)
    shade = 0.3 + 0.5 * lam * fall * 2.0 + 0.25 * fill
    # corner darkening from the distance to the face's edges
    edge = np.full(N, np.inf)
    for fi in range(6):
        sel = face == fi
        q = p[sel]
        if fi in (0, 1):
            de = np.minimum.reduce([q[:, 0], W - q[:, 0], q[:, 1], D - q[:, 1]])
        elif fi in (2, 3):
            de = np.minimum.reduce([q[:, 1], D - q[:, 1], q[:, 2], H - q[:, 2]])
        else:
            de = np.minimum.reduce([q[:, 0], W - q[:, 0], q[:, 2], H - q[:, 2]])
        edge[sel] = de
    ao = 1 - 0.35 * np.exp(-edge / 0.25)
    pix = t * (2 * tan / S) * 1.2
    line = edge < pix
    fog = 0.5 + 0.5 * np.exp(-t / 14.0)
    lit = col * (shade * ao)[:, None]
    lit = lit * (1 - emit[:, None]) + col * emit[:, None]
    lit[line] *= 0.55
    # the speaker's shadow on the floor
    spk = room["speaker"]
    sx, sy, _ = spk["mouth"]
    rb = spk["body_radius"]
    fl = face == 0
    rr = ((p[:, 0] - sx) ** 2 + (p[:, 1] - sy) ** 2)
    lit[fl & (rr < (rb * 2.0) ** 2)] *= 0.65
    lit *= fog[:, None]
    # the speaker: body cylinder (floor .. shoulders) and head sphere
    body, tc, head, th, head_c, rh = _speaker_hits(o, d, t, spk)
    if body.any():
        pb = o + tc[body, None] * d[body]
        nb = np.stack([pb[:, 0] - sx, pb[:, 1] - sy, 0 * pb[:, 0]], axis=1) / rb
        lb = np.clip(-np.sum(nb * d[body], axis=1), 0, 1)
        cl = np.where((pb[:, 2] > 0.85)[:, None], np.asarray(spk["shirt"])[None, :], np.asarray(spk["trousers"])[None, :])
        shb = (0.35 + 0.65 * lb) * (0.5 + 0.5 * np.exp(-tc[body] / 14.0))
        lit[body] = cl * shb[:, None]
    if head.any():
        ph = o + th[head, None] * d[head]
        nh = (ph - head_c) / rh
        lh = np.clip(-np.sum(nh * d[head], axis=1), 0, 1)
        hair = (nh[:, 2] > 0.35)
        ch_col = np.where(hair[:, None], np.array([0.12, 0.09, 0.07])[None, :], np.asarray(spk["skin"])[None, :])
        lit[head] = ch_col * ((0.35 + 0.65 * lh) * (0.5 + 0.5 * np.exp(-th[head] / 14.0)))[:, None]
    img = np.clip(lit, 0, 1).reshape(S, S, 3)
    if supersample > 1:
        img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return (img * 255 + 0.5).astype(np.uint8)


# =============================================================================================
# dry speech

_SUBJECTS = ["the old man", "my sister", "a small dog", "the teacher", "our neighbour", "the driver", "a tall woman",
             "the children", "the captain", "his friend", "the baker", "a young boy", "the doctor", "the singer",
             "every student", "the farmer", "the pilot", "her cousin", "the waiter", "a quiet girl"]
_VERBS = ["painted", "carried", "found", "opened", "cleaned", "borrowed", "described", "dropped", "fixed", "watched",
          "followed", "counted", "ordered", "packed", "moved", "sold", "covered", "lifted", "tested", "measured"]
_OBJECTS = ["the red bicycle", "a heavy box", "the kitchen window", "seven green apples", "the broken clock",
            "a long letter", "the wooden chair", "two silver spoons", "the yellow kite", "a warm blanket",
            "the stone bridge", "an empty basket", "the black piano", "a bright lamp", "the leather bag",
            "three paper boats", "the garden gate", "a round table", "the blue curtain", "a cold drink"]
_PLACES = ["before breakfast", "near the station", "in the morning", "after the storm", "at the market",
           "behind the house", "on a rainy day", "by the river", "late last night", "during the concert",
           "under the old tree", "at the end of the hall", "next to the door", "in the small room", "on Sunday"]
_QUESTIONS = ["Did you see where", "Do you know why", "Can you tell me when", "I wonder if", "Nobody knows how"]
_VARIANT_SKIP = re.compile(r"(?i)(demonic|robo|robot|whisper|croak|announcer|^fast$|storm|tweaky|ricishay|^mr$)")
_ESPEAK_LANGS = ["en-us", "en", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan",
                 "en-gb-x-gbcwmd"]


def make_sentence(rng) -> str:
    s, v, o, p = (x[int(rng.integers(len(x)))] for x in (_SUBJECTS, _VERBS, _OBJECTS, _PLACES))
    form = int(rng.integers(4))
    if form == 0:
        return f"{s.capitalize()} {v} {o} {p}."
    if form == 1:
        q = _QUESTIONS[int(rng.integers(len(_QUESTIONS)))]
        return f"{q} {s} {v} {o}?"
    if form == 2:
        s2, v2, o2 = (x[int(rng.integers(len(x)))] for x in (_SUBJECTS, _VERBS, _OBJECTS))
        return f"{p.capitalize()}, {s} {v} {o}, and then {s2} {v2} {o2}."
    return f"{s.capitalize()} {v} {o}. It was {p}, or so they said."


def espeak_available() -> str | None:
    return shutil.which("espeak-ng")


def espeak_variants() -> list[str]:
    exe = espeak_available()
    if not exe:
        return []
    out = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, check=False).stdout
    names = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("!v/"):
            name = parts[4][3:]
            if not _VARIANT_SKIP.search(name):
                names.append(name)
    return sorted(set(names))


def espeak_utterance(text: str, voice: str, rate: int, pitch: int, gap: int = 0) -> tuple[np.ndarray, int]:
    """Synthesize ``text`` with espeak-ng (WAV on stdout); (float32 mono, rate)."""
    import soundfile as sf

    exe = espeak_available()
    if not exe:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    proc = subprocess.run([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-g", str(gap), "--stdout", text],
                          capture_output=True, check=True)
    data = bytearray(proc.stdout)
    # espeak writes placeholder sizes when streaming: fix RIFF and data sizes for libsndfile
    if data[:4] == b"RIFF":
        data[4:8] = (len(data) - 8).to_bytes(4, "little")
        k = data.find(b"data", 12)
        if k > 0:
            data[k + 4: k + 8] = (len(data) - k - 8).to_bytes(4, "little")
    x, sr = sf.read(io.BytesIO(bytes(data)), dtype="float32")
    return (x if x.ndim == 1 else x.mean(axis=1)), int(sr)


def trim_and_level(x: np.ndarray, sr: int, *, top_db: float = 45.0, margin_s: float = 0.05) -> np.ndarray | None:
    """Resample to 16 kHz, cut leading/trailing silence (20 ms frames more than ``top_db`` below
    the loudest), keep ``margin_s`` around, scale to RMS ``SPEECH_RMS`` (active frames)."""
    from soundsight.audio import resample

    a = resample(np.asarray(x, np.float32)[None, :], sr, SR)[0].astype(np.float64)
    fr = int(0.02 * SR)
    n = len(a) // fr
    if n < 5:
        return None
    e = (a[: n * fr].reshape(n, fr) ** 2).mean(axis=1)
    if e.max() <= 0:
        return None
    act = np.nonzero(10 * np.log10(e / e.max() + 1e-20) > -top_db)[0]
    m = int(margin_s * SR)
    a = a[max(0, act[0] * fr - m): min(len(a), (act[-1] + 1) * fr + m)]
    active = e[act[0]: act[-1] + 1]
    rms = math.sqrt(float(np.mean(active[active > e.max() * 10 ** (-top_db / 10)])))
    if rms <= 0:
        return None
    a = a * (SPEECH_RMS / rms)
    peak = np.max(np.abs(a))
    if peak > 0.99:
        a *= 0.99 / peak
    return a.astype(np.float32)


def real_speech_files(root: str | os.PathLike = "/") -> list[tuple[str, Path]]:
    """(package, path) of the speech recordings installed from DATA.md's packages."""
    root = Path(root)
    found = []
    ast = root / SPEECH_PACKAGES["asterisk-core-sounds-en-wav"]["path"]
    if ast.is_dir():
        found += [("asterisk-core-sounds-en-wav", p) for p in sorted(ast.rglob("*.wav"))]
    alsa = root / SPEECH_PACKAGES["alsa-utils"]["path"]
    if alsa.is_dir():
        found += [("alsa-utils", p) for p in sorted(alsa.glob("*.wav")) if p.stem != "Noise"]
    pd = root / SPEECH_PACKAGES["puredata-doc"]["path"]
    if pd.is_dir():
        found += [("puredata-doc", p) for p in sorted(pd.glob("voice*.wav"))]
    return found


def missing_speech_packages(root="/") -> list[str]:
    root = Path(root)
    missing = [] if espeak_available() else ["espeak-ng"]
    for pkg in ("asterisk-core-sounds-en-wav", "alsa-utils", "puredata-doc"):
        if not (root / SPEECH_PACKAGES[pkg]["path"]).is_dir():
            missing.append(pkg)
    return missing


def build_speech_bank(n_espeak: int, seed: int, *, real: int = 200, test_frac: float = 0.15,
                      log=print) -> tuple[np.ndarray, list[dict]]:
    """All dry utterances end to end (float32, 16 kHz) and their metadata (with ``start``,
    ``length``, ``split``)."""
    import soundfile as sf

    rng = np.random.default_rng([seed, 7])
    items, chunks, pos = [], [], 0

    def add(a, meta):
        nonlocal pos
        meta.update(start=pos, length=int(len(a)))
        items.append(meta)
        chunks.append(a)
        pos += len(a)

    if n_espeak:
        if not espeak_available():
            raise RuntimeError("espeak-ng is needed for the dry speech bank: apt-get install espeak-ng "
                               "(or build with --speech 0 to use only installed recordings)")
        variants = espeak_variants() or [""]
        t0 = time.perf_counter()
        for i in range(n_espeak):
            text = make_sentence(rng)
            lang = _ESPEAK_LANGS[int(rng.integers(len(_ESPEAK_LANGS)))]
            var = variants[int(rng.integers(len(variants)))]
            voice = f"{lang}+{var}" if var else lang
            rate, pitch, gap = int(rng.integers(130, 201)), int(rng.integers(25, 76)), int(rng.integers(0, 4))
            x, sr = espeak_utterance(text, voice, rate, pitch, gap)
            a = trim_and_level(x, sr)
            if a is None:
                continue
            add(a, {"source": "espeak-ng", "text": text, "voice": voice, "rate": rate, "pitch": pitch,
                    "licence": SPEECH_PACKAGES["espeak-ng"]["licence"], "band_hz": SR // 2})
        log(f"  espeak-ng: {n_espeak} utterances in {time.perf_counter() - t0:.1f} s")
    if real:
        files = real_speech_files()
        if len(files) > real:  # keep every short package, a seeded subset of asterisk's prompts
            few = [f for f in files if f[0] != "asterisk-core-sounds-en-wav"]
            many = [f for f in files if f[0] == "asterisk-core-sounds-en-wav"]
            keep = np.random.default_rng([seed, 13]).permutation(len(many))[: max(0, real - len(few))]
            files = few + [many[k] for k in sorted(keep)]
        for pkg, path in files:
            x, sr = sf.read(str(path), dtype="float32", always_2d=True)
            a = trim_and_level(x.mean(axis=1), sr)
            if a is None or len(a) < int(0.3 * SR):
                continue
            add(a, {"source": pkg, "file": str(path), "licence": SPEECH_PACKAGES[pkg]["licence"],
                    "band_hz": int(min(sr, 2 * SR) // 2)})
        if files:
            log(f"  real recordings: {sum(1 for it in items if it['source'] != 'espeak-ng')} from "
                f"{', '.join(sorted({p for p, _ in files}))}")
    if not items:
        raise RuntimeError("no dry speech: apt-get install espeak-ng (and optionally "
                           "asterisk-core-sounds-en-wav alsa-utils puredata-doc)")
    # per-source seeded test split
    srng = np.random.default_rng([seed, 11])
    for src in sorted({it["source"] for it in items}):
        idx = [i for i, it in enumerate(items) if it["source"] == src]
        k = int(round(test_frac * len(idx))) if len(idx) > 1 else 0
        test = set(srng.permutation(idx)[:k].tolist())
        for i in idx:
            items[i]["split"] = "test" if i in test else "train"
    return np.concatenate(chunks).astype(np.float32), items


# =============================================================================================
# build


def room_draw(seed: int, i: int) -> tuple[dict, int]:
    """Room ``i`` of a build with ``seed`` and the ray-tracing seed its RIR was simulated with."""
    rng = np.random.default_rng([seed, i])
    room = sample_room(rng)
    return room, int(rng.integers(2 ** 31))


def _room_job(args) -> dict:
    i, seed, n_rays, size, textures = args
    room, sim_seed = room_draw(seed, i)
    h, t_sim = simulate_rir(room, seed=sim_seed, n_rays=n_rays)
    h, g = prepare_rir(h)
    t0 = time.perf_counter()
    acoustics = measure(h)
    t_meas = time.perf_counter() - t0
    t0 = time.perf_counter()
    img = render_room(room, size=size, textures=textures)
    t_render = time.perf_counter() - t0
    room.update(index=i, gain=round(g, 6), acoustics=acoustics,
                timing={"simulate": round(t_sim, 3), "measure": round(t_meas, 3), "render": round(t_render, 3)})
    return {"room": room, "rir": h.astype(np.float32), "image": img}


def build(spec: RoomsSpec, seed: int = 0, *, data_dir=None, force: bool = False, workers: int = 1,
          log=print) -> Path:
    """Build (or reuse) the rooms dataset; returns its folder."""
    folder = Path(data_dir or default_data_dir()) / spec.name(seed)
    meta_path = folder / "meta.json"
    if meta_path.exists() and not force:
        log(f"rooms dataset (cached): {folder}")
        return folder
    try:
        import pyroomacoustics  # noqa: F401
    except ImportError:
        raise SystemExit("pyroomacoustics is needed to build the rooms dataset: pip install pyroomacoustics") from None
    folder.mkdir(parents=True, exist_ok=True)
    log(f"building {spec.rooms} rooms (seed {seed}) in {folder}")
    t_start = time.perf_counter()
    # the speech bank first: it takes seconds and is what fails on a machine without espeak-ng, so
    # that never happens after the rooms' minutes of simulation
    bank, speech = build_speech_bank(spec.speech, seed, real=spec.real_speech, test_frac=spec.test_speech_frac, log=log)
    t_speech = time.perf_counter() - t_start
    jobs = [(i, seed, spec.n_rays, spec.image_size, spec.textures) for i in range(spec.rooms)]
    results = []
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for k, res in enumerate(pool.imap(_room_job, jobs, chunksize=4)):
                results.append(res)
                if (k + 1) % 50 == 0:
                    log(f"  {k + 1}/{spec.rooms} rooms, {time.perf_counter() - t_start:.0f} s")
    else:
        for k, job in enumerate(jobs):
            results.append(_room_job(job))
            if (k + 1) % 50 == 0:
                log(f"  {k + 1}/{spec.rooms} rooms, {time.perf_counter() - t_start:.0f} s")
    t_rooms = time.perf_counter() - t_start - t_speech
    rooms = [r["room"] for r in results]
    perm = np.random.default_rng([seed, 3]).permutation(spec.rooms)
    n_unseen = int(round(spec.unseen_frac * spec.rooms))
    unseen = set(perm[:n_unseen].tolist())
    for r in rooms:
        r["split"] = "unseen" if r["index"] in unseen else "seen"
    rirs = [r["rir"] for r in results]
    pos = 0
    for r, h in zip(rooms, rirs):
        r["rir_start"], r["rir_length"] = pos, int(len(h))
        pos += len(h)
    import soundfile as sf

    tmp = folder / ".partial"
    tmp.mkdir(exist_ok=True)
    sf.write(str(tmp / "rirs.flac"), np.clip(np.concatenate(rirs), -0.9999, 0.9999), SR, format="FLAC", subtype="PCM_24")
    np.savez_compressed(tmp / "images.npz", images=np.stack([r["image"] for r in results]))
    sf.write(str(tmp / "speech.flac"), np.clip(bank, -1, 32767 / 32768), SR, format="FLAC", subtype="PCM_16")
    import pyroomacoustics as pra

    meta = {
        "format": FORMAT_VERSION, "spec": asdict(spec), "seed": seed, "sample_rate": SR,
        "direct_index": DIRECT_INDEX, "image_size": spec.image_size,
        "rooms": rooms, "speech": speech,
        "counts": {"seen": spec.rooms - n_unseen, "unseen": n_unseen,
                   "speech_train": sum(it["split"] == "train" for it in speech),
                   "speech_test": sum(it["split"] == "test" for it in speech)},
        "licences": {"pyroomacoustics": PYROOMACOUSTICS_LICENCE,
                     **{k: v["licence"] for k, v in SPEECH_PACKAGES.items()
                        if any(it["source"] == k for it in speech)}},
        "versions": {"pyroomacoustics": pra.__version__, "numpy": np.__version__},
        "timing_s": {"rooms": round(t_rooms, 1), "speech": round(t_speech, 1),
                     "total": round(time.perf_counter() - t_start, 1), "workers": workers},
        "command": "python -m soundsight_train.rooms " + " ".join(sys.argv[1:]) if sys.argv else "",
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    for name in FILES:  # meta.json last: marks completion
        os.replace(tmp / name, folder / name)
    tmp.rmdir()
    size = sum((folder / n).stat().st_size for n in FILES)
    log(f"done in {time.perf_counter() - t_start:.0f} s ({t_rooms:.0f} s rooms, {t_speech:.0f} s speech), "
        f"{size / 1e6:.1f} MB: {folder}")
    return folder


# =============================================================================================
# reading, pairs, alteration


class RoomsData:
    """A built rooms dataset. Pairs are rendered on the fly (numpy; wrap it in a torch Dataset)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.sr = int(self.meta["sample_rate"])
        import soundfile as sf

        if self.meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{self.folder} has format {self.meta.get('format')}, expected {FORMAT_VERSION}; rebuild it")
        self._rir_audio = sf.read(str(self.folder / "rirs.flac"), dtype="float32")[0]
        with np.load(self.folder / "images.npz") as z:
            self.images = z["images"]
        self._sp_audio = sf.read(str(self.folder / "speech.flac"), dtype="float32")[0]
        self.rooms = self.meta["rooms"]
        self.speech = self.meta["speech"]

    def room_ids(self, split: str) -> list[int]:
        if split not in ("seen", "unseen", "all"):
            raise ValueError("split must be seen, unseen or all")
        return [r["index"] for r in self.rooms if split == "all" or r["split"] == split]

    def speech_ids(self, split: str, *, full_band: bool = False) -> list[int]:
        return [i for i, it in enumerate(self.speech)
                if (split == "all" or it["split"] == split) and (not full_band or it["band_hz"] >= self.sr // 2)]

    def rir(self, i: int) -> np.ndarray:
        r = self.rooms[i]
        return self._rir_audio[r["rir_start"]: r["rir_start"] + r["rir_length"]].copy()

    def image(self, i: int) -> np.ndarray:
        return np.asarray(self.images[i])

    def utterance(self, j: int) -> np.ndarray:
        it = self.speech[j]
        return self._sp_audio[it["start"]: it["start"] + it["length"]].copy()

    def wet(self, room: int, dry: np.ndarray) -> np.ndarray:
        """``dry * RIR`` in full (tail kept)."""
        from scipy.signal import fftconvolve

        return fftconvolve(np.asarray(dry, np.float64), self.rir(room).astype(np.float64)).astype(np.float32)

    def pair(self, room: int, utt: int, *, crop: int | None = 40960, offset: int | None = None, rng=None):
        """(dry A_S, wet A_T, image I_T): aligned crops of ``crop`` samples (None: the whole
        utterance, wet with its tail). Short utterances are zero-padded."""
        dry = self.utterance(utt)
        wet = self.wet(room, dry)
        if crop is None:
            return np.pad(dry, (0, len(wet) - len(dry))), wet, self.image(room)
        n = len(dry)
        if offset is None:
            rng = rng if rng is not None else np.random.default_rng()
            offset = int(rng.integers(0, max(1, n - crop + 1)))
        d = np.zeros(crop, np.float32)
        w = np.zeros(crop, np.float32)
        seg = dry[offset: offset + crop]
        d[: len(seg)] = seg
        wseg = wet[offset: offset + crop]
        w[: len(wseg)] = wseg
        return d, w, self.image(room)

    def sample(self, rng, *, rooms: str = "seen", speech: str = "train", crop: int = 40960):
        room = int(rng.choice(self.room_ids(rooms)))
        utt = int(rng.choice(self.speech_ids(speech)))
        return self.pair(room, utt, crop=crop, rng=rng) + (room, utt)

    def altered(self, room: int, utt: int, other: int, rng, *, snr_db=(2.0, 10.0), crop: int | None = 40960):
        """The acoustics-alteration path: (input, target, image) where target = dry * RIR(room)
        and input = WPE(target) * RIR(other) + Gaussian noise at an SNR drawn from ``snr_db``
        (a (lo, hi) range, a number, or None for no noise)."""
        _, wet, img = self.pair(room, utt, crop=None)
        x = alter(wet, self.sr, self.rir(other), rng, snr_db=snr_db)[: len(wet)]
        if crop is not None:
            n = len(wet)
            off = int(rng.integers(0, max(1, n - crop + 1)))
            x = np.pad(x[off: off + crop], (0, max(0, crop - len(x[off: off + crop]))))
            wet = np.pad(wet[off: off + crop], (0, max(0, crop - len(wet[off: off + crop]))))
        return x.astype(np.float32), wet.astype(np.float32), img


def _one_blas_thread():
    """WPE runs hundreds of tiny batched complex matmuls; a multi-threaded OpenBLAS spends far
    longer handing them to threads than computing them (30x slower on a busy 2-core machine), so
    BLAS is held to one thread when threadpoolctl is there (a DataLoader worker per core is the
    way to use more cores)."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def dereverberate(x: np.ndarray, sr: int = SR, *, taps: int = 10, delay: int = 3, iterations: int = 3) -> np.ndarray:
    """Single-channel WPE (nara_wpe): STFT 512 / hop 128 at 16 kHz, prediction filter of
    ``taps`` frames after a ``delay`` of frames, ``iterations`` of the variance estimate."""
    try:
        from nara_wpe.utils import istft, stft
        from nara_wpe.wpe import wpe
    except ImportError:
        raise RuntimeError("the acoustics-alteration path needs nara_wpe: pip install nara_wpe") from None
    a = np.asarray(x, np.float64)
    size, shift = (512, 128) if sr <= 24000 else (1024, 256)
    Y = stft(a[None, :], size=size, shift=shift)  # (1, T, F)
    Y = Y.transpose(2, 0, 1)  # (F, D, T)
    with _one_blas_thread():
        Z = wpe(Y, taps=taps, delay=delay, iterations=iterations, statistics_mode="full")
    z = istft(Z.transpose(1, 2, 0), size=size, shift=shift)[0]
    out = np.zeros(len(a))
    out[: min(len(a), len(z))] = z[: len(a)]
    return out.astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, rng) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` relative to the signal's mean power."""
    p = float(np.mean(np.asarray(x, np.float64) ** 2))
    if p <= 0:
        return np.asarray(x, np.float32)
    n = rng.standard_normal(len(x)) * math.sqrt(p / 10 ** (snr_db / 10))
    return (x + n).astype(np.float32)


def alter(wet: np.ndarray, sr: int, other_rir: np.ndarray, rng, *, snr_db=(2.0, 10.0)) -> np.ndarray:
    """AViTAR's acoustics alteration: dereverberate (WPE), convolve with another room's RIR, add
    noise. Output keeps the convolution tail; level matched (RMS) to ``wet`` before the noise.

    WPE (taps 10, delay 3: it predicts reverberation from 24 .. 104 ms of the past) takes out a
    part of the late reverberation, not all of it: a signal from a long-RT60 room keeps some of
    its decay under the new room's, so the result is a mix of both rooms (the paper's learned
    dereverberation is stronger). Cost: about 0.1 s of CPU per second of 16 kHz audio."""
    from scipy.signal import fftconvolve

    d = dereverberate(wet, sr)
    y = fftconvolve(d.astype(np.float64), np.asarray(other_rir, np.float64))
    rw, ry = np.sqrt(np.mean(np.asarray(wet, np.float64) ** 2)), np.sqrt(np.mean(y ** 2))
    if ry > 0:
        y *= rw / ry
    if snr_db is not None:
        snr = float(rng.uniform(*snr_db)) if isinstance(snr_db, (tuple, list)) else float(snr_db)
        y = add_noise(y, snr, rng)
    return y.astype(np.float32)


# =============================================================================================
# CLI


def _describe(room: dict) -> str:
    a = room["acoustics"]
    W, D, H = room["dims"]
    return (f"#{room['index']} {room['kind']} {W:.1f}x{D:.1f}x{H:.1f} m, floor {room['classes']['floor']}, "
            f"walls {room['classes']['west']}/{room['classes']['north']}/{room['classes']['east']}, "
            f"ceiling {room['classes']['ceiling']}; speaker {room['distance']:.1f} m; "
            f"RT60 {a['rt60_speech']:.2f} s (broadband {a['rt60']:.2f}, pra {a['rt60_pra']:.2f}), DRR {a['drr']:.1f} dB "
            f"[{room['split']}]")


def show(folder, n: int, out, seed: int = 0, split: str = "all") -> list[Path]:
    from soundsight.audio import save_audio
    from soundsight.image import make_grid, save_image

    ds = RoomsData(folder)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = ds.room_ids(split)
    picks = sorted(rng.choice(ids, size=min(n, len(ids)), replace=False).tolist())
    utts = ds.speech_ids("test") or ds.speech_ids("all")
    written, lines = [], []
    for k, i in enumerate(picks):
        u = int(utts[int(rng.integers(len(utts)))])
        dry, wet, _ = ds.pair(i, u, crop=None)
        peak = max(np.max(np.abs(wet)), np.max(np.abs(dry)), 1e-9)
        g = min(1.0, 0.9 / peak)
        written.append(save_audio(out / f"room{i:04d}_dry.wav", dry * g, ds.sr))
        written.append(save_audio(out / f"room{i:04d}_wet.wav", wet * g, ds.sr))
        lines.append(f"{k}: {_describe(ds.rooms[i])}; utterance {u} ({ds.speech[u]['source']})")
    grid = make_grid([ds.image(i) for i in picks], cols=min(4, len(picks)))
    written.append(save_image(out / "grid.png", grid))
    (out / "rooms.txt").write_text("\n".join(lines) + "\n")
    written.append(out / "rooms.txt")
    print("\n".join(lines))
    return written


def stats(folder) -> dict:
    ds = RoomsData(folder)
    out = {}
    for split in ("seen", "unseen"):
        rs = [ds.rooms[i] for i in ds.room_ids(split)]
        a = np.array([[r["acoustics"][k] for k in ("rt60", "rt60_speech", "rt60_pra", "rt60_pra_t30", "drr")] for r in rs])
        out[split] = {
            "rooms": len(rs),
            "rt60_speech": {"mean": float(a[:, 1].mean()), "p10": float(np.percentile(a[:, 1], 10)),
                            "p90": float(np.percentile(a[:, 1], 90))},
            "rt60": {"mean": float(a[:, 0].mean())},
            "drr": {"mean": float(a[:, 4].mean()), "p10": float(np.percentile(a[:, 4], 10)),
                    "p90": float(np.percentile(a[:, 4], 90))},
            "schroeder_t30_vs_pra_t30": {"mae": float(np.mean(np.abs(a[:, 0] - a[:, 3]))),
                                         "max": float(np.max(np.abs(a[:, 0] - a[:, 3])))},
            "schroeder_t30_vs_pra_default": {"mae": float(np.mean(np.abs(a[:, 0] - a[:, 2]))),
                                             "rel_mae": float(np.mean(np.abs(a[:, 0] - a[:, 2]) / a[:, 2]))},
            "kinds": {k: sum(r["kind"] == k for r in rs) for k in ROOM_KINDS},
        }
    return out


def _find_folder(args) -> Path:
    if getattr(args, "folder", None):
        return Path(args.folder)
    base = Path(args.data or default_data_dir())
    if args.rooms is not None:
        cand = base / RoomsSpec(rooms=args.rooms).name(args.seed)
        if (cand / "meta.json").exists():
            return cand
    found = sorted(base.glob("rooms-*r-s*/meta.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no rooms dataset under {base}; run: python -m soundsight_train.rooms build")
    return found[-1].parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.rooms", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="simulate the rooms, render the pictures, make the speech bank")
    b.add_argument("--rooms", type=int, default=RoomsSpec.rooms)
    b.add_argument("--speech", type=int, default=RoomsSpec.speech, help="espeak-ng utterances")
    b.add_argument("--real-speech", type=int, default=RoomsSpec.real_speech,
                   help="at most this many installed recordings (asterisk prompts, alsa, puredata); 0: none")
    b.add_argument("--rays", type=int, default=N_RAYS)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--textures", choices=TEXTURES, default="class",
                   help="the pictures' looks: one per material class (default; the shipped models' data) or one per "
                        "pyroomacoustics material (pile, planks, pointing, panes, folds ...); the rooms are the same")
    b.add_argument("--data", default=None, help="data dir (default $SOUNDSIGHT_DATA or ~/.cache/soundsight/data)")
    b.add_argument("--force", action="store_true")
    for name, hlp in (("show", "write a grid of pictures and dry/wet wavs"), ("stats", "RT60 / DRR distributions")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--folder", default=None)
        p.add_argument("--data", default=None)
        p.add_argument("--rooms", type=int, default=None)
        p.add_argument("--seed", type=int, default=0)
        if name == "show":
            p.add_argument("--n", type=int, default=8)
            p.add_argument("--out", required=True)
            p.add_argument("--split", default="all", choices=("all", "seen", "unseen"))
    args = ap.parse_args(argv)
    if args.cmd == "build":
        spec = RoomsSpec(rooms=args.rooms, speech=args.speech, n_rays=args.rays, real_speech=args.real_speech,
                         textures=args.textures)
        missing = missing_speech_packages()
        if missing:
            print("note: not installed (apt-get install " + " ".join(missing) + ")", file=sys.stderr)
        build(spec, args.seed, data_dir=args.data, force=args.force, workers=args.workers)
        return 0
    folder = _find_folder(args)
    if args.cmd == "show":
        show(folder, args.n, args.out, seed=args.seed, split=args.split)
        print(f"wrote {args.out}/grid.png")
        return 0
    print(json.dumps(stats(folder), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
