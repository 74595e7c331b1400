"""Audio-visual scenes: photo cut-outs of sounding objects on real photos, with their sounds.

The dataset behind scene-gen (Sound2Scene / Sound2Vision, issue 5), built from Debian packages
(see ../shared/DATA.md; nothing is downloaded):

- ``tuxpaint-stamps-default`` (GPL-2.0-or-later): PNG photo cut-outs with alpha, a ``.txt``
  description, and for ~110 of them an ``.ogg`` recording of the object (dog, crow, kettle …);
- ``openttd-opensfx`` (CC-BY-SA-3.0 as a set; per file CC0-1.0 / CC-BY-3.0 / CC-BY-SA-3.0,
  stated in each file's label): 73 labelled WAVs in ``opensfx.cat`` (trains, planes, cow …);
- ``sonic-pi-samples`` (CC0-1.0): drum hits and loops, guitar, a crow;
- backgrounds: ``mate-backgrounds`` nature photos (GPL-2.0-or-later), plus scikit-learn's
  china.jpg / flower.jpg (CC-BY-2.0) and scikit-image's grass / gravel / brick (CC0-1.0)
  when those wheels are installed.

Classes come from ``CLASS_RULES`` (stamp paths, opensfx titles, sonic-pi names); a class is kept
when it has at least one stamp image and one recording (``python -m soundsight_train.scenes
classes`` prints the table).

Splits. Per class, a seeded fraction (``test_frac``) of the recordings and of the stamps is held
out for ``test``; held-out items never appear in ``train`` or ``val``. A class with a single
recording has none to hold out and is left out of ``test``; a class with a single stamp shows
that stamp in ``test`` too (marked ``shared`` in the metadata). ``val`` draws new compositions
from the training items. Backgrounds are shared by all splits (different random crops).

Composition. Each sample has 1 or 2 objects of different classes (``two_object_frac``), each
with a gain g, log-uniform in [gain_min, gain_max] (0.25 … 4). Louder means bigger and closer:
with t = log(g / gain_min) / log(gain_max / gain_min) in [0, 1], the object's longer side is
``size * (obj_min + (obj_max - obj_min) * t)`` (strictly increasing in g for a given stamp) and
its bottom edge sits at ``size * (horizon + (1 - horizon) * t)`` (lower in the frame = closer),
up to a small jitter. The quieter object is drawn first, so the louder one occludes it. The
picture is a random crop of a background photo, 128 px (64 px is derived by 2x2 averaging).

Audio: 16 kHz mono, ``seconds`` long (default 5 s; the paper uses 10 s). Each object's
recording (silence trimmed, short fades, a short pause appended) is tiled from a random offset
to the clip length, scaled to the reference loudness (clip RMS = ``ref_rms`` = 0.02, -34 dBFS) and
multiplied by its gain; the objects are summed. The mix is not clipped (peaks may pass 1.0 at
high gains): a front end that wants ±1 must say so.

Storage, under ``<data dir>/scenes-<seconds>s-s<seed>[-<spec hash>]`` (data dir: ``--data``,
``$SOUNDSIGHT_DATA``, else ``~/.cache/soundsight/data``):

- ``{split}.npz``: ``images`` uint8 (N, 128, 128, 3); per object slot (2 slots, object 0 is the
  loudest, unused slots -1 / 0): ``labels`` int16 (N, 2), ``boxes`` int16 (N, 2, 4) as
  (x0, y0, x1, y1) at 128 px, x1/y1 exclusive, ``gains`` float32 (N, 2), ``stamps`` int16
  (N, 2), ``recordings`` int16 (N, 2), ``offsets`` int32 (N, 2), ``scales`` float32 (N, 2);
  ``n_objects`` int8 (N,), ``background`` int16 (N,), ``crop`` int16 (N, 4) (x0, y0, side,
  flip) in background pixels;
- ``bank.npz``: the recordings at 16 kHz, ``audio`` float32 (total,), ``starts``, ``lengths``
  int64 (R,); a sample's audio is rebuilt exactly from it (``SceneSplit.audio``), so the stored
  dataset stays small; ``--store-audio`` also writes ``{split}_audio.npy`` float16 (N, n);
- ``meta.json``: spec, seed, classes, the stamp / recording / background tables (source,
  licence, split), licences per source, counts and sizes.

API (training code)::

    from soundsight_train import scenes
    folder = scenes.build(scenes.SceneSpec(seconds=5), {"train": 5000, "val": 500, "test": 500})
    ds = scenes.SceneSplit(folder, "train")
    x = ds.images_at(64)          # uint8 (N, 64, 64, 3); ds.images is the 128 px array
    a = ds.audio([0, 1, 2])       # float32 (3, seconds * 16000)
    a4 = ds.audio([0], gains=[[4.0, 0.0]])   # same sample with other gains
    ds.labels, ds.boxes, ds.gains, ds.n_objects, ds.classes

CLI::

    python -m soundsight_train.scenes classes
    python -m soundsight_train.scenes build --train 5000 --val 500 --test 500 --seconds 5 --seed 0
    python -m soundsight_train.scenes show --n 8 --out /tmp/scenes
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
SLOTS = 2  # objects per sample at most

# Where the Debian packages put their files, relative to a root ("/" normally; tests use a
# fake tree with the same layout).
STAMPS_DIR = "usr/share/tuxpaint/stamps"
OPENSFX_CAT = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
SONICPI_DIR = "usr/share/sonic-pi/samples"
MATE_DIR = "usr/share/backgrounds/mate/nature"

PACKAGES = {
    "tuxpaint-stamps-default": {"path": STAMPS_DIR, "licence": "GPL-2.0-or-later",
                                "what": "photo cut-out stamps (PNG + alpha) and their sounds (OGG)"},
    "openttd-opensfx": {"path": OPENSFX_CAT, "licence": "CC-BY-SA-3.0",
                        "what": "OpenSFX sound effects; per-file licence (CC0-1.0, CC-BY-3.0 or "
                                "CC-BY-SA-3.0) stated in each file's label"},
    "sonic-pi-samples": {"path": SONICPI_DIR, "licence": "CC0-1.0", "what": "Sonic Pi samples (freesound.org)"},
    "mate-backgrounds": {"path": MATE_DIR, "licence": "GPL-2.0-or-later", "what": "nature photographs"},
}
OPTIONAL_BACKGROUNDS = {
    # package -> (module, folder inside it, files, licence)
    "scikit-learn": ("sklearn", "datasets/images", ("china.jpg", "flower.jpg"), "CC-BY-2.0"),
    "scikit-image": ("skimage", "data", ("grass.png", "gravel.png", "brick.png"), "CC0-1.0"),
}

STAMP_EXT = ".png"  # SVG stamps are skipped (no rasterizer among the dependencies)
SOUND_EXTS = (".ogg", ".wav", ".flac")
SKIP_STEM = re.compile(r"(_desc(_|$)|_mirror$)")


# --------------------------------------------------------------------------------------------
# Classes
#
# class -> stamps: patterns on the stamp's path below the stamps folder, without extension
#                  (fnmatch); a stamp's own sound (same stem, .ogg) is one of the class's
#                  recordings; a stamp without an image (only a sound) adds the recording;
#          sfx:    regular expressions on the opensfx title (the quoted part of the label);
#          sonicpi: patterns on the sample file name without extension.
# Grouping follows folder, file name and description (e.g. fox/dingo with the dog; drake
# and gander with the duck; bull, bison, yak, zebu with the cow). Order matters: the first
# class whose pattern matches takes the item.

CLASS_RULES: dict[str, dict[str, list[str]]] = {
    # animals
    "dog": {"stamps": ["animals/mammals/dogs/dog", "animals/mammals/dogs/dingo", "animals/mammals/dogs/fox"]},
    "cat": {"stamps": ["seasonal/halloween/blackcat"]},
    "lion": {"stamps": ["animals/mammals/cats/lion", "animals/mammals/cats/lion-2"], "sfx": [r"^Tropical: Lion roar$"]},
    "tiger": {"stamps": ["animals/mammals/cats/tiger", "animals/mammals/cats/tiger_sumatran"]},
    "cow": {"stamps": ["animals/mammals/bovines/cow", "animals/mammals/bovines/cow_white",
                       "animals/mammals/bovines/bull", "animals/mammals/bovines/bison",
                       "animals/mammals/bovines/yak", "animals/mammals/bovines/zebu"],
            "sfx": [r"^Cow$"]},
    "sheep": {"stamps": ["animals/mammals/bovines/sheep", "animals/mammals/bovines/sheep_lamb",
                         "animals/mammals/bovines/ram"], "sfx": [r"^Sheep$"]},
    "goat": {"stamps": ["animals/mammals/bovines/goat", "animals/mammals/bovines/mountaingoat"]},
    "horse": {"stamps": ["animals/mammals/equines/horse"], "sfx": [r"^Horse$"]},
    "donkey": {"stamps": ["animals/mammals/equines/donkey", "animals/mammals/equines/donkey_eating"]},
    "zebra": {"stamps": ["animals/mammals/equines/zebra"]},
    "pig": {"stamps": ["animals/mammals/pig", "animals/mammals/pig_golden", "animals/mammals/pig_golden2",
                       "animals/mammals/wildboar"]},
    "deer": {"stamps": ["animals/mammals/deer/*"]},
    "camel": {"stamps": ["animals/mammals/camel/*"]},
    "elephant": {"stamps": ["animals/mammals/elephant"]},
    "giraffe": {"stamps": ["animals/mammals/giraffe"]},
    "hippopotamus": {"stamps": ["animals/mammals/hippopotamus"]},
    "bear": {"stamps": ["animals/mammals/bears/bear", "animals/mammals/bears/european-bear"]},
    "monkey": {"stamps": ["animals/mammals/apes/*"], "sfx": [r"^Tropical: Monkeys$"]},
    "whale": {"stamps": ["animals/mammals/aquatic/whale", "animals/mammals/aquatic/orca",
                         "animals/mammals/aquatic/dolphin"]},
    "sea_lion": {"stamps": ["animals/mammals/aquatic/sea_lion"]},
    "mouse": {"stamps": ["animals/mammals/rodents/mouse", "animals/mammals/rodents/rat"]},
    "rabbit": {"stamps": ["animals/mammals/rodents/rabbit", "animals/mammals/rodents/rabbit-2",
                          "animals/mammals/rabbit_little"]},
    "squirrel": {"stamps": ["animals/mammals/rodents/squirrel"]},
    "beaver": {"stamps": ["animals/mammals/rodents/beaver"]},
    "badger": {"stamps": ["animals/mammals/badger"]},
    "ferret": {"stamps": ["animals/mammals/ferret"]},
    "koala": {"stamps": ["animals/marsupials/koala"]},
    "wombat": {"stamps": ["animals/marsupials/wombat"]},
    "frog": {"stamps": ["animals/amphibians/frog", "animals/amphibians/frog-1"]},
    "iguana": {"stamps": ["animals/lizards/iguana"]},
    "bee": {"stamps": ["animals/insects/bee", "animals/insects/hornet", "animals/insects/mosquito",
                       "animals/insects/fly", "animals/insects/hoverfly"]},
    "grasshopper": {"stamps": ["animals/insects/grasshopper"]},
    "crow": {"stamps": ["animals/birds/crow"], "sonicpi": ["misc_crow"]},
    "owl": {"stamps": ["animals/birds/owl"]},
    "chicken": {"stamps": ["animals/birds/hen", "animals/birds/rooster", "animals/birds/chicken_profile"]},
    "duck": {"stamps": ["animals/birds/duck", "animals/birds/drake", "animals/birds/gander"]},
    "turkey": {"stamps": ["animals/birds/turkey"]},
    "seagull": {"stamps": ["animals/birds/seagull", "animals/birds/silver-gull"]},
    "penguin": {"stamps": ["animals/birds/penguin", "animals/birds/little-penguin",
                           "animals/birds/magellanic_penguin"]},
    "bird": {"stamps": ["animals/birds/blackbird", "animals/birds/cuckoo", "animals/birds/lark",
                        "animals/birds/quetzal", "animals/birds/tucan", "animals/birds/adelaide-rosella",
                        "animals/birds/rainbow-lorikeet", "animals/birds/magpie", "animals/birds/pigeon",
                        "seasonal/easter/bluebird"],
             "sfx": [r"^Tropical: Bird"]},
    # instruments
    "drum": {"stamps": ["hobbies/music/percussion/drumkit", "hobbies/music/percussion/drum_tomtom_floor"],
             "sonicpi": ["drum_tom_*", "drum_snare_*", "drum_bass_*", "drum_heavy_kick", "drum_roll",
                         "loop_amen", "loop_breakbeat"]},
    "cymbal": {"stamps": ["hobbies/music/percussion/cymbal_crash"], "sonicpi": ["drum_cymbal_*", "drum_splash_*"]},
    "guitar": {"stamps": ["hobbies/music/string/guitar*"], "sonicpi": ["guit_*"]},
    "violin": {"stamps": ["hobbies/music/string/violin"]},
    "cello": {"stamps": ["hobbies/music/string/cello"]},
    "bassoon": {"stamps": ["hobbies/music/wind/bassoon"]},
    # household and tools
    "hammer": {"stamps": ["household/tools/hammer", "household/tools/mallet_metal"]},
    "saw": {"stamps": ["household/tools/saw"], "sfx": [r"^Sawmill$"]},
    "scissors": {"stamps": ["household/arttools/scissors_small_*"]},
    "kettle": {"stamps": ["household/kettle"]},
    "glass": {"stamps": ["household/dishes/glass"]},
    "toilet": {"stamps": ["household/toilet"]},
    "rubber_duck": {"stamps": ["household/rubberduck"]},
    "camera": {"stamps": ["hobbies/camera_35mm"]},
    # nature
    "thunder": {"stamps": ["naturalforces/lightningbolt"]},
    "fireworks": {"stamps": ["seasonal/newyears/fireworks", "seasonal/newyears/fireworks2"]},
    "explosion": {"stamps": ["naturalforces/explosion"], "sfx": [r"^Explosion$"]},
    # vehicles
    "car": {"stamps": ["vehicles/auto/beetle", "vehicles/auto/sedan", "vehicles/auto/sportscar2",
                       "vehicles/emergency/sedan_police"], "sfx": [r"^Modern car horn$"]},
    "truck": {"stamps": ["vehicles/auto/truck", "vehicles/garbagetruck", "vehicles/construction/dumper"],
              "sfx": [r"^Truck/old bus start, pull away"]},
    "bus": {"stamps": ["vehicles/masstransit/green_korean_bus", "vehicles/masstransit/cartoon/double_decker_bus"],
            "sfx": [r"^Modern bus start$", r"^Old bus start$"]},
    "fire_engine": {"stamps": ["vehicles/emergency/firetruck"]},
    "train": {"stamps": ["vehicles/locomotive/cartoon/toy_train", "vehicles/locomotive/cartoon/carriage",
                         "vehicles/locomotive/cartoon/boxcar"],
              "sfx": [r"train station departure$", r"^Steam engine going in tunnel$"]},
    "plane": {"stamps": ["vehicles/flight/planes/747", "military/vehicles/f22_raptor",
                         "vehicles/flight/planes/cartoon/plane"],
              "sfx": [r"^Propeller plane start$", r"(?i)jet take off$"]},
    "helicopter": {"stamps": ["vehicles/flight/cartoon/eddieCopter"], "sfx": [r"^Helicopter$"]},
    "ship": {"stamps": ["vehicles/ship/chineseJunk", "vehicles/ship/cartoon/tugboat"],
             "sfx": [r"^Ship horn$", r"^Ferry horn$"]},
}
SFX_EXCLUDE = re.compile(r"^Toyland:")  # the comedy variants of the same sounds


class MissingSource(RuntimeError):
    """A data package is not installed; the message names the install command."""


# --------------------------------------------------------------------------------------------
# opensfx.cat reader
#
# Layout (little endian), read from the bytes of the installed file:
#   table: count x (uint32 offset, uint32 size); count = first offset / 8. Bit 31 of the
#          offset set means the entry carries names (all entries in OpenSFX do).
#   entry at offset: uint8 n, n bytes title (NUL-terminated, "\"Title\". By … License: …"),
#          then `size` bytes of a RIFF/WAVE file, then (optional) uint8 0, uint8 m, m bytes
#          the source file name (NUL-terminated).


@dataclass
class CatEntry:
    index: int
    label: str  # the full label, e.g. '"Cow". Original … License: Creative Commons Zero 1.0.'
    title: str  # the quoted part: 'Cow'
    wav: bytes
    filename: str = ""

    @property
    def licence(self) -> str:
        return sfx_licence(self.label)


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def read_cat(path) -> list[CatEntry]:
    """Entries of an OpenTTD sound container (``opensfx.cat``)."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a sound container")
    first = struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF
    if first % 8 or first == 0 or first > len(data):
        raise ValueError(f"{path}: not a sound container (bad table size {first})")
    count = first // 8
    out = []
    for i in range(count):
        raw_off, size = struct.unpack_from("<II", data, 8 * i)
        named, off = bool(raw_off >> 31), raw_off & 0x7FFFFFFF
        label, filename = "", ""
        if named:
            n = data[off]
            label = _cstr(data[off + 1: off + 1 + n])
            off += 1 + n
        wav = data[off: off + size]
        if len(wav) != size or wav[:4] != b"RIFF":
            raise ValueError(f"{path}: entry {i} is not a RIFF/WAVE block")
        tail = off + size
        if named and tail + 2 <= len(data) and data[tail] == 0:
            m = data[tail + 1]
            if tail + 2 + m <= len(data):
                filename = _cstr(data[tail + 2: tail + 2 + m])
        m = re.match(r'\s*"([^"]*)"', label)
        title = m.group(1) if m else (label.split(".")[0] if label else f"sound {i}")
        out.append(CatEntry(i, label, title, wav, filename))
    return out


def write_cat(path, entries: list[tuple[str, bytes, str]]) -> Path:
    """Write a container in the same format: entries of (label, wav bytes, file name)."""
    count = len(entries)
    head = bytearray(8 * count)
    body = bytearray()
    pos = 8 * count
    for i, (label, wav, fname) in enumerate(entries):
        lab = label.encode() + b"\0"
        fn = fname.encode() + b"\0"
        struct.pack_into("<II", head, 8 * i, pos | 0x80000000, len(wav))
        chunk = bytes([len(lab)]) + lab + wav + b"\0" + bytes([len(fn)]) + fn
        body += chunk
        pos += len(chunk)
    Path(path).write_bytes(bytes(head) + bytes(body))
    return Path(path)


def sfx_licence(label: str) -> str:
    text = label.lower()
    if "zero" in text or "cc0" in text:
        return "CC0-1.0"
    if "sharealike" in text or "share-alike" in text or "share alike" in text:
        return "CC-BY-SA-3.0"
    if "attribution" in text:
        return "CC-BY-3.0"
    return "CC-BY-SA-3.0"  # the set's licence


# --------------------------------------------------------------------------------------------
# Catalog: what the packages hold, grouped into classes (metadata only, no decoding)


@dataclass
class StampItem:
    stem: str  # path below the stamps folder, no extension
    cls: str
    image: str | None  # file name (relative to the stamps folder) or None
    sound: str | None
    description: str = ""
    mirror: bool = True


@dataclass
class RecordingItem:
    cls: str
    source: str  # package
    name: str  # stamp stem, opensfx title, or sonic-pi name
    ref: str  # how to find it: path below the package folder, or "opensfx.cat#<index>"
    licence: str


@dataclass
class BackgroundItem:
    name: str
    path: str
    source: str
    licence: str


@dataclass
class Catalog:
    root: str
    classes: list[str]
    stamps: list[StampItem]  # with an image, kept classes only
    recordings: list[RecordingItem]
    backgrounds: list[BackgroundItem]
    dropped: dict[str, str] = field(default_factory=dict)  # class -> reason
    unassigned_sounds: list[str] = field(default_factory=list)  # stamps with a sound, no class

    def fingerprint(self) -> str:
        """Changes when the class lists or the files behind them (names, sizes) change."""
        r = Path(self.root)

        def size(p: Path) -> int:
            try:
                return p.stat().st_size
            except OSError:
                return -1

        h = hashlib.sha256()
        for s in self.stamps:
            h.update(f"S{s.cls}|{s.image}|{s.mirror}|{size(r / STAMPS_DIR / s.image)}\n".encode())
        for x in self.recordings:
            p = (r / OPENSFX_CAT if x.source == "openttd-opensfx"
                 else r / (STAMPS_DIR if x.source == "tuxpaint-stamps-default" else SONICPI_DIR) / x.ref)
            h.update(f"R{x.cls}|{x.source}|{x.ref}|{size(p)}\n".encode())
        for b in self.backgrounds:
            h.update(f"B{b.path}|{size(Path(b.path))}\n".encode())
        return h.hexdigest()[:16]

    def table(self) -> list[dict]:
        rows = []
        for c in self.classes:
            st = [s for s in self.stamps if s.cls == c]
            rec = [r for r in self.recordings if r.cls == c]
            by = {p: sum(r.source == p for r in rec) for p in ("tuxpaint-stamps-default", "openttd-opensfx",
                                                               "sonic-pi-samples")}
            rows.append({"class": c, "stamps": len(st), "stamps_with_sound": sum(s.sound is not None for s in st),
                         "recordings": len(rec), "rec_tuxpaint": by["tuxpaint-stamps-default"],
                         "rec_opensfx": by["openttd-opensfx"], "rec_sonicpi": by["sonic-pi-samples"]})
        return rows


def _root(root) -> Path:
    return Path(root if root is not None else os.environ.get("SOUNDSIGHT_SCENES_ROOT", "/"))


def check_packages(root=None) -> None:
    r = _root(root)
    missing = [name for name, p in PACKAGES.items() if not (r / p["path"]).exists()]
    if missing:
        raise MissingSource(
            f"scene data needs {', '.join(missing)} (not found under {r}): run "
            f"`apt-get install -y {' '.join(missing)}`"
        )


def _match(stem: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(stem, p) for p in patterns)


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().strip()
    except OSError:
        return ""


def _module_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_backgrounds(root=None, extra: bool = True) -> list[BackgroundItem]:
    r = _root(root)
    out = [BackgroundItem(p.stem, str(p), "mate-backgrounds", PACKAGES["mate-backgrounds"]["licence"])
           for p in sorted((r / MATE_DIR).glob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if extra:
        for pkg, (module, sub, names, lic) in OPTIONAL_BACKGROUNDS.items():
            d = _module_dir(module)
            if d is None:
                continue
            for n in names:
                p = d / sub / n
                if p.is_file():
                    out.append(BackgroundItem(Path(n).stem, str(p), pkg, lic))
    return out


def scan(root=None, rules: dict | None = None, extra_backgrounds: bool = True, min_recordings: int = 1) -> Catalog:
    """Find the stamps, recordings and backgrounds of every class (metadata only).

    A class is kept with at least one stamp image and ``min_recordings`` recordings.
    """
    check_packages(root)
    r = _root(root)
    rules = CLASS_RULES if rules is None else rules
    sdir = r / STAMPS_DIR

    def class_of(stem: str, key: str) -> str | None:
        for c, rule in rules.items():
            if _match(stem, rule.get(key, ())):
                return c
        return None

    # stamps: one entry per stem with an image and/or a sound
    files: dict[str, dict[str, Path]] = {}
    for p in sdir.rglob("*"):
        if not p.is_file():
            continue
        ext = p.suffix.lower()
        if ext not in (STAMP_EXT, *SOUND_EXTS, ".txt", ".dat"):
            continue
        stem = p.relative_to(sdir).with_suffix("").as_posix()
        if SKIP_STEM.search(stem.rsplit("/", 1)[-1]):
            continue
        files.setdefault(stem, {})[ext] = p
    stamps: list[StampItem] = []
    recordings: list[RecordingItem] = []
    unassigned = []
    for stem in sorted(files):
        f = files[stem]
        image = f.get(STAMP_EXT)
        sound = next((f[e] for e in SOUND_EXTS if e in f), None)
        if image is None and sound is None:
            continue
        c = class_of(stem, "stamps")
        if c is None:
            if sound is not None and not stem.startswith("symbols/"):
                unassigned.append(stem)
            continue
        dat = f[".dat"].read_text(errors="replace") if ".dat" in f else ""
        item = StampItem(stem, c, image.relative_to(sdir).as_posix() if image else None,
                         sound.relative_to(sdir).as_posix() if sound else None,
                         _first_line(f[".txt"]) if ".txt" in f else "", "nomirror" not in dat.split())
        if image is not None:
            stamps.append(item)
        if sound is not None:
            recordings.append(RecordingItem(c, "tuxpaint-stamps-default", stem, item.sound,
                                            PACKAGES["tuxpaint-stamps-default"]["licence"]))
    # opensfx
    for e in read_cat(r / OPENSFX_CAT):
        if SFX_EXCLUDE.search(e.title):
            continue
        for c, rule in rules.items():
            if any(re.search(rx, e.title) for rx in rule.get("sfx", ())):
                recordings.append(RecordingItem(c, "openttd-opensfx", e.title, f"opensfx.cat#{e.index}", e.licence))
                break
    # sonic-pi
    for p in sorted((r / SONICPI_DIR).glob("*")):
        if p.suffix.lower() not in SOUND_EXTS:
            continue
        c = class_of(p.stem, "sonicpi")
        if c is not None:
            recordings.append(RecordingItem(c, "sonic-pi-samples", p.stem, p.name,
                                            PACKAGES["sonic-pi-samples"]["licence"]))
    # keep classes with >= 1 image and >= 1 recording
    classes, dropped = [], {}
    for c in rules:
        ns = sum(s.cls == c for s in stamps)
        nr = sum(x.cls == c for x in recordings)
        if ns and nr >= max(1, min_recordings):
            classes.append(c)
        else:
            dropped[c] = f"{ns} stamp images, {nr} recordings"
    keep = set(classes)
    backgrounds = find_backgrounds(root, extra_backgrounds)
    if not backgrounds:
        raise MissingSource(f"no background photos under {r / MATE_DIR}: run `apt-get install -y mate-backgrounds`")
    return Catalog(str(r), classes, [s for s in stamps if s.cls in keep],
                   [x for x in recordings if x.cls in keep], backgrounds, dropped, unassigned)


# --------------------------------------------------------------------------------------------
# Splits


def _class_rng(seed: int, cls: str, what: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(f"{cls}/{what}".encode())]))


def _n_test(n: int, frac: float) -> int:
    if n < 2:
        return 0
    return int(min(n - 1, max(1, round(n * frac))))


def assign_splits(catalog: Catalog, seed: int = 0, test_frac: float = 0.25):
    """Per class, hold out whole stamps and recordings for test (seeded).

    Returns (stamp_split, recording_split): lists of "train", "test" or, for a class with a
    single stamp, "shared" (used by every split).
    """
    st_split = ["train"] * len(catalog.stamps)
    rec_split = ["train"] * len(catalog.recordings)
    for c in catalog.classes:
        for items, split, what in ((catalog.stamps, st_split, "stamps"), (catalog.recordings, rec_split, "recordings")):
            idx = [i for i, it in enumerate(items) if it.cls == c]
            k = _n_test(len(idx), test_frac)
            if what == "stamps" and len(idx) == 1:
                split[idx[0]] = "shared"
                continue
            for j in _class_rng(seed, c, what).permutation(len(idx))[:k]:
                split[idx[j]] = "test"
    return st_split, rec_split


# --------------------------------------------------------------------------------------------
# Media: decoded stamps, recordings (audio bank) and backgrounds


@dataclass
class SceneSpec:
    seconds: float = 5.0
    sample_rate: int = 16000
    size: int = 128
    gain_min: float = 0.25
    gain_max: float = 4.0
    ref_rms: float = 0.02  # clip RMS at gain 1 (-34 dBFS): peaks stay under 1.0 for ~99 % of clips at gain 4
    two_object_frac: float = 0.4
    obj_min: float = 0.22  # longer side / image side at gain_min
    obj_max: float = 0.72  # … at gain_max
    horizon: float = 0.45  # bottom edge / image side at gain_min (1.0 at gain_max)
    jitter: float = 0.04  # vertical jitter, fraction of the image side
    crop_min: float = 0.45  # background crop side / the photo's shorter side
    test_frac: float = 0.25
    min_recordings: int = 1  # keep classes with at least this many recordings (2: every class in test)

    def __post_init__(self):
        if not 0 < self.gain_min < self.gain_max:
            raise ValueError("need 0 < gain_min < gain_max")
        if self.seconds <= 0:
            raise ValueError("seconds must be > 0")
        if not 0 < self.obj_min < self.obj_max <= 1:
            raise ValueError("need 0 < obj_min < obj_max <= 1")

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    def name(self, seed: int) -> str:
        base = f"scenes-{self.seconds:g}s-s{seed}"
        diff = {k: v for k, v in asdict(self).items() if k != "seconds" and v != _DEFAULT_SPEC[k]}
        if diff:
            base += "-" + hashlib.sha256(json.dumps(diff, sort_keys=True).encode()).hexdigest()[:8]
        return base

    # the gain -> geometry mapping (monotonic)
    def closeness(self, gain) -> np.ndarray:
        g = np.clip(np.asarray(gain, dtype=np.float64), self.gain_min, self.gain_max)
        return np.log(g / self.gain_min) / math.log(self.gain_max / self.gain_min)

    def object_side(self, gain) -> np.ndarray:
        """Longer side of an object in px at ``size`` for a gain (strictly increasing)."""
        t = self.closeness(gain)
        return np.round(self.size * (self.obj_min + (self.obj_max - self.obj_min) * t)).astype(np.int64)

    def ground(self, gain) -> np.ndarray:
        """Bottom edge (px, before jitter) of an object for a gain: lower = closer."""
        t = self.closeness(gain)
        return self.size * (self.horizon + (1.0 - self.horizon) * t)


_DEFAULT_SPEC = {f.name: f.default for f in fields(SceneSpec)}


def _alpha_crop(rgba: np.ndarray, thresh: int = 16) -> np.ndarray:
    a = rgba[..., 3] > thresh
    if not a.any():
        return rgba
    ys, xs = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    return rgba[ys[0]: ys[-1] + 1, xs[0]: xs[-1] + 1]


def load_stamp(path, max_side: int = 256) -> np.ndarray:
    """RGBA uint8 (h, w, 4), cropped to its visible pixels, longer side at most ``max_side``."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA")
    arr = _alpha_crop(np.asarray(im))
    h, w = arr.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        im = Image.fromarray(arr).convert("RGBa")
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
        arr = np.asarray(im.convert("RGBA"))
    return np.ascontiguousarray(arr)


def load_background(path, short_side: int = 320) -> np.ndarray:
    """RGB uint8 (H, W, 3) with its shorter side resized to ``short_side``."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        s = short_side / min(im.size)
        im = im.resize((max(short_side, round(im.width * s)), max(short_side, round(im.height * s))),
                       Image.LANCZOS, reducing_gap=3.0)
    return np.asarray(im)


def prepare_recording(x: np.ndarray, sr: int, top_db: float = 45.0) -> np.ndarray:
    """Trim leading/trailing silence, fade 5 ms in/out and append a short pause (for tiling)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    hop = max(1, sr // 100)
    n = len(x) // hop
    if n >= 2:
        e = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-20)
        on = np.flatnonzero(20 * np.log10(e / e.max()) > -top_db)
        a, b = max(0, (on[0] - 1) * hop), min(len(x), (on[-1] + 2) * hop)
        x = x[a:b]
    f = min(len(x) // 4, int(0.005 * sr))
    if f > 0:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, f))).astype(np.float32)
        x = x.copy()
        x[:f] *= ramp
        x[-f:] *= ramp[::-1]
    pause = int(np.clip(0.2 * len(x), 0.05 * sr, 0.3 * sr))
    return np.concatenate([x, np.zeros(pause, np.float32)])


class AudioBank:
    """Recordings at one rate, concatenated; clips are tiled from an offset."""

    def __init__(self, audio: np.ndarray, starts: np.ndarray, lengths: np.ndarray, sample_rate: int):
        self.audio = np.asarray(audio, dtype=np.float32)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.sample_rate = int(sample_rate)

    @classmethod
    def from_list(cls, recs: list[np.ndarray], sample_rate: int) -> "AudioBank":
        lengths = np.array([len(r) for r in recs], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        audio = np.concatenate(recs).astype(np.float32) if recs else np.zeros(0, np.float32)
        return cls(audio, starts, lengths, sample_rate)

    def __len__(self) -> int:
        return len(self.lengths)

    def clip(self, rec: int, offset: int, n: int) -> np.ndarray:
        idx = self.starts[rec] + (int(offset) + np.arange(n, dtype=np.int64)) % self.lengths[rec]
        return self.audio[idx]

    def clips(self, recs, offsets, n: int) -> np.ndarray:
        """(B, n) clips for arrays of recording ids and offsets (ids < 0 give silence)."""
        recs = np.asarray(recs, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        safe = np.maximum(recs, 0)
        pos = (offsets[:, None] + np.arange(n, dtype=np.int64)) % self.lengths[safe][:, None]
        idx = self.starts[safe][:, None] + pos
        out = self.audio[idx]
        out[recs < 0] = 0.0
        return out

    def save(self, path) -> None:
        np.savez(path, audio=self.audio, starts=self.starts, lengths=self.lengths,
                 sample_rate=np.int64(self.sample_rate))

    @classmethod
    def load(cls, path) -> "AudioBank":
        with np.load(path) as z:
            return cls(z["audio"], z["starts"], z["lengths"], int(z["sample_rate"]))


def _decode_recording(catalog: Catalog, rec: RecordingItem, sr: int, cat_cache: dict) -> np.ndarray:
    from soundsight.audio import convert_channels, load_audio, resample

    r = Path(catalog.root)
    if rec.source == "openttd-opensfx":
        import soundfile as sf

        if "entries" not in cat_cache:
            cat_cache["entries"] = read_cat(r / OPENSFX_CAT)
        e = cat_cache["entries"][int(rec.ref.split("#", 1)[1])]
        x, native = sf.read(io.BytesIO(e.wav), dtype="float32", always_2d=True)
        x = resample(convert_channels(np.ascontiguousarray(x.T), 1), native, sr)
    else:
        folder = r / (STAMPS_DIR if rec.source == "tuxpaint-stamps-default" else SONICPI_DIR)
        x, _ = load_audio(folder / rec.ref, sr=sr, channels=1)
    return x[0]


@dataclass
class Media:
    catalog: Catalog
    stamps: list[np.ndarray]  # RGBA
    bank: AudioBank
    backgrounds: list[np.ndarray]  # RGB
    stamp_split: list[str]
    rec_split: list[str]
    seed: int
    spec: SceneSpec

    @property
    def classes(self) -> list[str]:
        return self.catalog.classes

    def pools(self, split: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """class -> (stamp ids, recording ids) usable in ``split``; classes without both are absent.

        train/val: the items not held out (and "shared" single stamps); test: the held-out
        items (a class with a single stamp uses it, marked "shared").
        """
        want = "test" if split == "test" else "train"
        out = {}
        for c in self.classes:
            st = [i for i, s in enumerate(self.catalog.stamps)
                  if s.cls == c and self.stamp_split[i] in (want, "shared")]
            rec = [i for i, x in enumerate(self.catalog.recordings) if x.cls == c and self.rec_split[i] == want]
            if st and rec:
                out[c] = (np.array(st, np.int64), np.array(rec, np.int64))
        return out


def load_media(catalog: Catalog, spec: SceneSpec, seed: int = 0, log=None) -> Media:
    """Decode every stamp, recording and background of the catalog (a few seconds)."""
    t0 = time.time()
    sdir = Path(catalog.root) / STAMPS_DIR
    stamps = [load_stamp(sdir / s.image) for s in catalog.stamps]
    cache: dict = {}
    recs = [prepare_recording(_decode_recording(catalog, r, spec.sample_rate, cache), spec.sample_rate)
            for r in catalog.recordings]
    bank = AudioBank.from_list(recs, spec.sample_rate)
    bgs = [load_background(b.path) for b in catalog.backgrounds]
    st_split, rec_split = assign_splits(catalog, seed, spec.test_frac)
    if log:
        log(f"  loaded {len(stamps)} stamps, {len(recs)} recordings ({len(bank.audio) / spec.sample_rate:.0f} s), "
            f"{len(bgs)} backgrounds in {time.time() - t0:.1f}s")
    return Media(catalog, stamps, bank, bgs, st_split, rec_split, seed, spec)


# --------------------------------------------------------------------------------------------
# Composition


def _resize_rgba(rgba: np.ndarray, w: int, h: int, mirror: bool):
    from PIL import Image

    im = Image.fromarray(rgba).convert("RGBa")  # premultiplied: no dark fringes
    if mirror:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return im.resize((w, h), Image.LANCZOS, reducing_gap=2.0).convert("RGBA")


def object_size(rgba_shape, gain, spec: SceneSpec) -> tuple[int, int]:
    """(w, h) in px of a stamp drawn at ``gain``: its longer side is ``spec.object_side``."""
    h0, w0 = rgba_shape[:2]
    side = int(spec.object_side(gain))
    s = side / max(h0, w0)
    return max(1, int(round(w0 * s))), max(1, int(round(h0 * s)))


def _place(w: int, h: int, gain: float, spec: SceneSpec, rng) -> tuple[int, int]:
    S = spec.size
    yb = spec.ground(gain) + rng.uniform(-spec.jitter, spec.jitter) * S
    y0 = int(round(min(S, max(h, yb)))) - h
    x0 = int(rng.integers(0, S - w + 1))
    return x0, y0


def _occluded(far, near) -> float:
    ix = max(0, min(far[2], near[2]) - max(far[0], near[0]))
    iy = max(0, min(far[3], near[3]) - max(far[1], near[1]))
    return ix * iy / max(1, (far[2] - far[0]) * (far[3] - far[1]))


def crop_background(bg: np.ndarray, crop, size: int) -> np.ndarray:
    """The square ``crop`` = (x0, y0, side, flip) of a background, resized to ``size``."""
    from PIL import Image

    x0, y0, side, flip = (int(v) for v in crop)
    im = Image.fromarray(bg[y0: y0 + side, x0: x0 + side]).resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(im)


def background_crop(bg: np.ndarray, spec: SceneSpec, rng) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A random square crop (side >= ``crop_min`` of the shorter side, random flip) at ``spec.size``."""
    H, W = bg.shape[:2]
    short = min(H, W)
    side = int(rng.integers(int(spec.crop_min * short), short + 1))
    x0 = int(rng.integers(0, W - side + 1))
    y0 = int(rng.integers(0, H - side + 1))
    crop = (x0, y0, side, int(rng.integers(2)))
    return crop_background(bg, crop, spec.size), crop


def compose_image(background: np.ndarray, objects: list[dict], spec: SceneSpec, rng, tries: int = 12):
    """Paste objects (dicts with ``rgba``, ``gain``, ``mirror``) onto an RGB image.

    Returns (image uint8 (S, S, 3), boxes [(x0, y0, x1, y1)] in the order of ``objects``).
    Objects are drawn from quiet (far) to loud (near); positions of two objects are chosen
    among ``tries`` draws to keep the far one visible.
    """
    from PIL import Image

    sizes = [object_size(o["rgba"].shape, o["gain"], spec) for o in objects]
    best, best_score = None, None
    for _ in range(tries if len(objects) > 1 else 1):
        pos = [_place(w, h, o["gain"], spec, rng) for (w, h), o in zip(sizes, objects)]
        boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(pos, sizes)]
        if len(objects) < 2:
            best = boxes
            break
        far, near = (0, 1) if objects[0]["gain"] <= objects[1]["gain"] else (1, 0)
        score = _occluded(boxes[far], boxes[near])
        if best_score is None or score < best_score:
            best, best_score = boxes, score
        if score < 0.1:
            break
    canvas = Image.fromarray(background).convert("RGBA")
    for k in sorted(range(len(objects)), key=lambda k: objects[k]["gain"]):
        x0, y0, x1, y1 = best[k]
        sprite = _resize_rgba(objects[k]["rgba"], x1 - x0, y1 - y0, objects[k].get("mirror", False))
        canvas.alpha_composite(sprite, (x0, y0))
    return np.asarray(canvas.convert("RGB")), best


def clip_scale(clip: np.ndarray, ref_rms: float) -> float:
    rms = float(np.sqrt(np.mean(np.square(clip, dtype=np.float64))))
    return ref_rms / rms if rms > 1e-8 else 0.0


def mix_audio(bank: AudioBank, recs, offsets, scales, gains, n: int) -> np.ndarray:
    """(B, n) mixes: sum over slots of gain * scale * tiled clip (recordings < 0 are empty).

    ``recs``, ``offsets``, ``scales``, ``gains``: (B, K) arrays.
    """
    recs = np.atleast_2d(np.asarray(recs))
    offsets = np.atleast_2d(np.asarray(offsets))
    w = np.atleast_2d(np.asarray(scales, np.float32)) * np.atleast_2d(np.asarray(gains, np.float32))
    out = np.zeros((recs.shape[0], n), np.float32)
    for k in range(recs.shape[1]):
        if (recs[:, k] >= 0).any():
            out += w[:, k: k + 1] * bank.clips(recs[:, k], offsets[:, k], n)
    return out


def sample_gain(spec: SceneSpec, rng) -> float:
    return float(np.exp(rng.uniform(math.log(spec.gain_min), math.log(spec.gain_max))))


def make_scene(media: Media, pools: dict, rng, gains=None, classes=None, n_objects: int | None = None,
               stamps=None, recordings=None, background: int | None = None, crop_rng=None) -> dict:
    """One sample: draw (or take) classes, stamps, recordings, gains, a background crop.

    Returns a dict with ``image`` uint8 (S, S, 3) and per-object lists ``labels``, ``boxes``,
    ``gains``, ``stamps``, ``recordings``, ``offsets``, ``scales`` (loudest first), plus
    ``background`` and ``crop``. Overrides fix parts of the draw (used by ``show --sweep``).
    """
    spec = media.spec
    names = list(pools)
    if classes is None:
        k = n_objects or (2 if rng.random() < spec.two_object_frac and len(names) > 1 else 1)
        classes = [names[i] for i in rng.choice(len(names), size=k, replace=False)]
    k = len(classes)
    objs = []
    for j, c in enumerate(classes):
        st_pool, rec_pool = pools[c]
        sid = int(stamps[j]) if stamps is not None else int(rng.choice(st_pool))
        rid = int(recordings[j]) if recordings is not None else int(rng.choice(rec_pool))
        g = float(gains[j]) if gains is not None else sample_gain(spec, rng)
        mirror = bool(media.catalog.stamps[sid].mirror and rng.random() < 0.5)
        off = int(rng.integers(0, media.bank.lengths[rid]))
        objs.append({"cls": c, "stamp": sid, "rec": rid, "gain": g, "mirror": mirror, "offset": off,
                     "rgba": media.stamps[sid]})
    bi = int(background) if background is not None else int(rng.integers(len(media.backgrounds)))
    bg, crop = background_crop(media.backgrounds[bi], spec, crop_rng if crop_rng is not None else rng)
    image, boxes = compose_image(bg, objs, spec, rng)
    order = sorted(range(k), key=lambda j: -objs[j]["gain"])
    n = spec.n_samples
    scales = [clip_scale(media.bank.clip(o["rec"], o["offset"], n), spec.ref_rms) for o in objs]
    cidx = {c: i for i, c in enumerate(media.classes)}
    return {
        "image": image,
        "labels": [cidx[objs[j]["cls"]] for j in order],
        "boxes": [boxes[j] for j in order],
        "gains": [objs[j]["gain"] for j in order],
        "stamps": [objs[j]["stamp"] for j in order],
        "recordings": [objs[j]["rec"] for j in order],
        "offsets": [objs[j]["offset"] for j in order],
        "scales": [scales[j] for j in order],
        "background": bi,
        "crop": crop,
    }


def sample_rng(seed: int, split: str, i: int) -> np.random.Generator:
    """Each sample has its own stream: sample i does not depend on how many are built."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), i, 5]))


def generate_split(media: Media, split: str, n: int, start: int = 0) -> dict:
    """Arrays for samples ``start … start + n - 1`` of ``split`` (see the module doc)."""
    spec = media.spec
    pools = media.pools(split)
    if not pools:
        raise ValueError(f"no class has items for split {split!r}")
    S = spec.size
    out = {
        "images": np.zeros((n, S, S, 3), np.uint8),
        "labels": np.full((n, SLOTS), -1, np.int16),
        "boxes": np.full((n, SLOTS, 4), -1, np.int16),
        "gains": np.zeros((n, SLOTS), np.float32),
        "stamps": np.full((n, SLOTS), -1, np.int16),
        "recordings": np.full((n, SLOTS), -1, np.int16),
        "offsets": np.zeros((n, SLOTS), np.int32),
        "scales": np.zeros((n, SLOTS), np.float32),
        "n_objects": np.zeros(n, np.int8),
        "background": np.zeros(n, np.int16),
        "crop": np.zeros((n, 4), np.int16),
    }
    for i in range(n):
        s = make_scene(media, pools, sample_rng(media.seed, split, start + i))
        k = len(s["labels"])
        out["images"][i] = s["image"]
        out["n_objects"][i] = k
        for key in ("labels", "boxes", "gains", "stamps", "recordings", "offsets", "scales"):
            out[key][i, :k] = s[key]
        out["background"][i] = s["background"]
        out["crop"][i] = s["crop"]
    return out


# --------------------------------------------------------------------------------------------
# Cache


def default_data_dir() -> Path:
    return Path(os.environ.get("SOUNDSIGHT_DATA") or Path.home() / ".cache" / "soundsight" / "data").expanduser()


def _meta_tables(media: Media) -> dict:
    cat = media.catalog
    n = media.spec.n_samples
    return {
        "classes": cat.classes,
        "class_table": cat.table(),
        "stamps": [{"id": i, "class": s.cls, "path": f"{STAMPS_DIR}/{s.image}", "description": s.description,
                    "has_sound": s.sound is not None, "mirror": s.mirror, "split": media.stamp_split[i],
                    "source": "tuxpaint-stamps-default", "licence": PACKAGES["tuxpaint-stamps-default"]["licence"]}
                   for i, s in enumerate(cat.stamps)],
        "recordings": [{"id": i, "class": r.cls, "source": r.source, "name": r.name, "ref": r.ref,
                        "licence": r.licence, "split": media.rec_split[i],
                        "seconds": round(float(media.bank.lengths[i]) / media.spec.sample_rate, 3)}
                       for i, r in enumerate(cat.recordings)],
        "backgrounds": [{"id": i, "name": b.name, "path": b.path, "source": b.source, "licence": b.licence}
                        for i, b in enumerate(cat.backgrounds)],
        "licences": {**{p: v["licence"] for p, v in PACKAGES.items()},
                     **{p: v[3] for p, v in OPTIONAL_BACKGROUNDS.items()
                        if any(b.source == p for b in cat.backgrounds)}},
        "dropped_classes": cat.dropped,
        "audio_samples": n,
    }


def build(spec: SceneSpec, counts: dict[str, int], seed: int = 0, data_dir=None, root=None, force: bool = False,
          store_audio: bool = False, extra_backgrounds: bool = True, log=print) -> Path:
    """Build (or reuse) the cached splits; returns the dataset folder.

    ``root``: file-system root holding ``usr/share/...`` (default ``$SOUNDSIGHT_SCENES_ROOT`` or
    ``/``); ``extra_backgrounds``: also use the scikit-learn / scikit-image photos if installed.
    """
    data_root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    folder = data_root / spec.name(seed)
    meta_path = folder / "meta.json"
    catalog = scan(root, extra_backgrounds=extra_backgrounds, min_recordings=spec.min_recordings)
    if extra_backgrounds:
        for pkg, (module, *_rest) in OPTIONAL_BACKGROUNDS.items():
            if _module_dir(module) is None:
                # every shipped scene model was trained with these photos: a rebuild without
                # them would shift every comparison against those models without a word
                log(f"warning: {pkg} is not installed, so its background photos are left out and this dataset "
                    f"differs from the one the shipped models were trained on: pip install -e '.[train]'")
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    same_sources = bool(old and old.get("format") == FORMAT_VERSION and old.get("spec") == asdict(spec)
                        and old.get("seed") == seed and old.get("fingerprint") == catalog.fingerprint()
                        and (folder / "bank.npz").is_file())
    folder.mkdir(parents=True, exist_ok=True)
    media = load_media(catalog, spec, seed, log=log)
    meta = {"format": FORMAT_VERSION, "spec": asdict(spec), "seed": seed, "counts": {},
            "fingerprint": catalog.fingerprint(), **_meta_tables(media), "splits": {}}
    if not same_sources or force:
        tmp = folder / ".bank.tmp.npz"
        media.bank.save(tmp)
        os.replace(tmp, folder / "bank.npz")
    for split in SPLITS:
        n = int(counts.get(split, 0))
        meta["counts"][split] = n
        path = folder / f"{split}.npz"
        apath = folder / f"{split}_audio.npy"
        cached = (not force and same_sources and old["counts"].get(split) == n and path.is_file()
                  and (not store_audio or apath.is_file()))
        if cached:
            meta["splits"][split] = old["splits"].get(split, {})
            log(f"  {split}: {n} samples (cached) {path}")
            continue
        if n == 0:
            for p in (path, apath):
                p.unlink(missing_ok=True)
            meta["splits"][split] = {"n": 0}
            continue
        t0 = time.time()
        arrays = generate_split(media, split, n)
        tmp = folder / f".{split}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        info = {"n": n, "bytes": path.stat().st_size, "seconds": round(time.time() - t0, 1),
                "classes": int(len(np.unique(arrays["labels"][arrays["labels"] >= 0]))),
                "two_object": int((arrays["n_objects"] == 2).sum())}
        if store_audio:
            a = np.lib.format.open_memmap(folder / f".{split}_audio.tmp.npy", mode="w+", dtype=np.float16,
                                          shape=(n, spec.n_samples))
            for b in range(0, n, 256):
                sl = slice(b, min(n, b + 256))
                a[sl] = mix_audio(media.bank, arrays["recordings"][sl], arrays["offsets"][sl], arrays["scales"][sl],
                                  arrays["gains"][sl], spec.n_samples)
            a.flush()
            del a
            os.replace(folder / f".{split}_audio.tmp.npy", apath)
            info["audio_bytes"] = apath.stat().st_size
        elif apath.exists():
            apath.unlink()
        meta["splits"][split] = info
        log(f"  {split}: {n} samples in {info['seconds']:.1f}s -> {path} ({info['bytes'] / 1e6:.1f} MB)")
    tmp = folder / ".meta.tmp.json"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, meta_path)
    return folder


def load_meta(folder) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, size, size, 3) by averaging S/size x S/size blocks."""
    S = images.shape[1]
    if size == S:
        return images
    if S % size:
        raise ValueError(f"{size} does not divide {S}")
    f = S // size
    x = images.reshape(images.shape[0], size, f, size, f, 3).astype(np.float32).mean(axis=(2, 4))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


class SceneSplit:
    """One built split: arrays in memory, audio rendered from the bank on demand."""

    def __init__(self, folder, split: str):
        folder = Path(folder)
        path = folder / f"{split}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; build it with `python -m soundsight_train.scenes build`")
        self.folder, self.split = folder, split
        self.meta = load_meta(folder)
        self.spec = SceneSpec(**self.meta["spec"])
        with np.load(path) as z:
            self.arrays = {k: z[k] for k in z.files}
        self.bank = AudioBank.load(folder / "bank.npz")
        self.classes: list[str] = self.meta["classes"]
        apath = folder / f"{split}_audio.npy"
        self._stored = np.load(apath, mmap_mode="r") if apath.is_file() else None

    def __len__(self) -> int:
        return len(self.arrays["images"])

    def __getattr__(self, name):
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    def images_at(self, size: int) -> np.ndarray:
        return downsample(self.arrays["images"], size)

    def boxes_at(self, size: int) -> np.ndarray:
        b = self.arrays["boxes"].astype(np.float32) * (size / self.spec.size)
        b[self.arrays["boxes"] < 0] = -1
        return b

    def audio(self, idx, gains=None) -> np.ndarray:
        """float32 (B, n) mixes of samples ``idx``; ``gains`` (B, 2) replaces the stored gains."""
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        a = self.arrays
        g = a["gains"][idx] if gains is None else np.broadcast_to(np.asarray(gains, np.float32), (len(idx), SLOTS))
        return mix_audio(self.bank, a["recordings"][idx], a["offsets"][idx], a["scales"][idx], g,
                         self.spec.n_samples)

    def stored_audio(self, idx) -> np.ndarray | None:
        """The float16 mixes written by ``build(store_audio=True)`` (None if not written)."""
        return None if self._stored is None else np.asarray(self._stored[idx], dtype=np.float32)

    def __getitem__(self, i: int) -> dict:
        """One sample: image uint8 (128, 128, 3), audio float32 (n,), and its annotations."""
        a = self.arrays
        k = int(a["n_objects"][i])
        return {"image": a["images"][i], "audio": self.audio([i])[0], "labels": a["labels"][i, :k],
                "boxes": a["boxes"][i, :k], "gains": a["gains"][i, :k], "classes": [self.classes[c] for c in
                                                                                     a["labels"][i, :k]]}


def more_compositions(folder, n: int, start: int | None = None, root=None, log=print) -> dict:
    """``n`` further training compositions of a built dataset: samples ``start …`` of its
    ``train`` stream (default: right after the stored ones), so the same stamps, recordings and
    backgrounds in new arrangements; never a held-out item. Only the picture arrays
    (``images``, ``labels``, ``boxes``, ``n_objects``, ``stamps``). The packages must be the ones the
    dataset was built from (checked by the catalog's fingerprint). Cached next to the splits as
    ``train-more-<start>-<n>.npz``.
    """
    folder = Path(folder)
    meta = load_meta(folder)
    start = int(meta["counts"]["train"]) if start is None else int(start)
    cache = folder / f"train-more-{start}-{n}.npz"
    keys = ("images", "labels", "boxes", "n_objects", "stamps")
    if cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in keys}
    spec = SceneSpec(**meta["spec"])
    with_extra = any(b["source"] != "mate-backgrounds" for b in meta["backgrounds"])
    catalog = scan(root, extra_backgrounds=with_extra, min_recordings=spec.min_recordings)
    if catalog.fingerprint() != meta["fingerprint"]:
        raise SystemExit(f"error: the installed packages differ from the ones {folder.name} was built from; "
                         "rebuild it with `python -m soundsight_train.scenes build --force`")
    t0 = time.time()
    arrays = generate_split(load_media(catalog, spec, int(meta["seed"]), log=log), "train", n, start=start)
    out = {k: arrays[k] for k in keys}
    tmp = folder / f".train-more-{start}-{n}.tmp.npz"
    np.savez_compressed(tmp, **out)
    os.replace(tmp, cache)
    log(f"  {n} more training compositions in {time.time() - t0:.1f}s -> {cache}")
    return out


def background_photos(folder) -> list[np.ndarray]:
    """The split's background photos (as the builder loaded them), from the paths in meta.json."""
    return [load_background(b["path"]) for b in load_meta(folder)["backgrounds"]]


def object_masks(split: "SceneSplit", size: int, thresh: int = 10) -> np.ndarray:
    """uint8 (N, size, size) masks of the pasted objects (1 = object), for background augmentation.

    Not stored by the builder: the background crop of every sample is (``background``, ``crop``),
    so it is re-rendered and differenced with the image; a 3x3 closing fills the pixels where
    an object happens to match the photo. Cached as ``masks-<split>.npz`` next to the split.
    """
    cache = split.folder / f"masks-{split.split}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            full = z["masks"]
    else:
        photos = background_photos(split.folder)
        S = split.spec.size
        full = np.zeros((len(split), S, S), np.uint8)
        for i in range(len(split)):
            bg = crop_background(photos[int(split.background[i])], split.crop[i], S)
            d = np.abs(split.images[i].astype(np.int16) - bg.astype(np.int16)).max(-1)
            full[i] = d > thresh
        np.savez_compressed(cache, masks=full)
    m = downsample(np.repeat(full[..., None], 3, -1) * 255, size)[..., 0] if size != full.shape[1] else full * 255
    return (m >= 128).astype(np.uint8)


def background_bank(folder, n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3) random square crops (with flips) of the dataset's background photos."""
    photos = background_photos(folder)
    spec = SceneSpec(**load_meta(folder)["spec"])
    rng = np.random.default_rng(seed)
    out = np.empty((n, spec.size, spec.size, 3), np.uint8)
    for i in range(n):
        out[i], _ = background_crop(photos[int(rng.integers(len(photos)))], spec, rng)
    return downsample(out, size)


def data_card(folder) -> dict:
    """What a model card needs about the data: sources, licences, item counts, classes."""
    meta = load_meta(folder)
    sources = {}
    for kind in ("stamps", "recordings", "backgrounds"):
        for item in meta[kind]:
            src = sources.setdefault(item["source"], {"licence": meta["licences"].get(item["source"], ""),
                                                      "stamps": 0, "recordings": 0, "backgrounds": 0,
                                                      "item_licences": {}})
            src[kind] += 1
            src["item_licences"][item["licence"]] = src["item_licences"].get(item["licence"], 0) + 1
    for name, src in sources.items():
        if name in PACKAGES:
            src["what"] = PACKAGES[name]["what"]
    return {"dataset": Path(folder).name, "builder": "python -m soundsight_train.scenes build",
            "spec": meta["spec"], "seed": meta["seed"], "counts": meta["counts"], "classes": meta["classes"],
            "sources": sources,
            "attribution": "Stamps and sounds: Tux Paint stamps (GPL-2.0-or-later); OpenSFX (CC-BY-SA-3.0, "
                           "per-file CC0-1.0/CC-BY-3.0/CC-BY-SA-3.0, authors in each label); Sonic Pi samples "
                           "(CC0-1.0, freesound.org); backgrounds: MATE backgrounds (GPL-2.0-or-later), "
                           "scikit-learn china.jpg/flower.jpg (CC-BY-2.0), scikit-image grass/gravel/brick (CC0-1.0)."}


# --------------------------------------------------------------------------------------------
# Inspection


def _annotate(image: np.ndarray, boxes, labels, gains, classes, scale: int = 2):
    from PIL import Image, ImageDraw

    im = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    colours = [(255, 40, 40), (40, 160, 255)]
    for k, (b, c, g) in enumerate(zip(boxes, labels, gains)):
        x0, y0, x1, y1 = [v * scale for v in b]
        d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colours[k % 2], width=2)
        text = f"{classes[c]} x{g:.2f}"
        ty = max(0, y0 - 11) if k == 0 else min(im.height - 11, y1 + 1)
        d.rectangle([x0, ty, x0 + 6 * len(text) + 2, ty + 10], fill=(0, 0, 0))
        d.text((x0 + 1, ty - 1), text, fill=colours[k % 2])
    return im


def show(out, n: int = 8, split: str = "train", seed: int = 0, spec: SceneSpec | None = None, root=None,
         sweep: bool = True, extra_backgrounds: bool = True, log=print) -> list[Path]:
    """Write ``n`` samples of ``split`` as PNG + WAV + JSON, an annotated grid, and a gain sweep."""
    from soundsight.audio import save_audio
    from soundsight.image import make_grid, save_image

    spec = spec or SceneSpec()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    media = load_media(scan(root, extra_backgrounds=extra_backgrounds, min_recordings=spec.min_recordings), spec, seed,
                       log=log)
    pools = media.pools(split)
    written, tiles = [], []
    for i in range(n):
        s = make_scene(media, pools, sample_rng(seed, split, i))
        audio = mix_audio(media.bank, [s["recordings"]], [s["offsets"]], [s["scales"]], [s["gains"]],
                          spec.n_samples)[0]
        stem = out / f"{split}_{i:03d}"
        save_image(stem.with_suffix(".png"), s["image"])
        save_audio(stem.with_suffix(".wav"), audio, spec.sample_rate, subtype="FLOAT", peak_policy="limit")
        info = {k: s[k] for k in ("labels", "boxes", "gains", "stamps", "recordings", "background", "crop")}
        info["classes"] = [media.classes[c] for c in s["labels"]]
        info["stamp_paths"] = [media.catalog.stamps[j].image for j in s["stamps"]]
        info["recording_names"] = [f"{media.catalog.recordings[j].source}:{media.catalog.recordings[j].name}"
                                   for j in s["recordings"]]
        info["rms"] = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        info["peak"] = float(np.abs(audio).max())
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1, default=int) + "\n")
        tiles.append(_annotate(s["image"], s["boxes"], s["labels"], s["gains"], media.classes))
        written += [stem.with_suffix(".png"), stem.with_suffix(".wav")]
    grid = out / f"{split}_grid.png"
    save_image(grid, make_grid(tiles, cols=min(4, len(tiles))))
    written.append(grid)
    if sweep:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 77]))
        rows = []
        levels = [0.25, 0.5, 1.0, 2.0, 4.0]
        for r in range(4):
            c = list(pools)[int(rng.integers(len(pools)))]
            st, rec = int(rng.choice(pools[c][0])), int(rng.choice(pools[c][1]))
            bgi = int(rng.integers(len(media.backgrounds)))
            crop_seed = int(rng.integers(1 << 30))
            for g in levels:
                s = make_scene(media, pools, np.random.default_rng(crop_seed), gains=[g], classes=[c], stamps=[st],
                               recordings=[rec], background=bgi, crop_rng=np.random.default_rng(crop_seed))
                rows.append(_annotate(s["image"], s["boxes"], s["labels"], s["gains"], media.classes))
                if r == 0:
                    a = mix_audio(media.bank, [s["recordings"]], [s["offsets"]], [s["scales"]], [s["gains"]],
                                  spec.n_samples)[0]
                    save_audio(out / f"sweep_{c}_x{g:g}.wav", a, spec.sample_rate, subtype="FLOAT", peak_policy="limit")
        sp = out / "sweep.png"
        save_image(sp, make_grid(rows, cols=len(levels)))
        written.append(sp)
    return written


# --------------------------------------------------------------------------------------------
# CLI


def print_classes(catalog: Catalog, seed: int = 0, test_frac: float = 0.25, verbose: bool = False, file=None) -> None:
    file = file or sys.stdout
    st_split, rec_split = assign_splits(catalog, seed, test_frac)
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"{'class':14s} {'stamps':>6s} {'w/snd':>5s} {'recs':>5s} {'tux':>4s} {'sfx':>4s} {'spi':>4s}  "
      f"{'test st':>7s} {'test rec':>8s}")
    tot = np.zeros(6, int)
    for row in catalog.table():
        c = row["class"]
        ts = sum(1 for i, s in enumerate(catalog.stamps) if s.cls == c and st_split[i] == "test")
        shared = any(s.cls == c and st_split[i] == "shared" for i, s in enumerate(catalog.stamps))
        tr = sum(1 for i, r in enumerate(catalog.recordings) if r.cls == c and rec_split[i] == "test")
        vals = [row["stamps"], row["stamps_with_sound"], row["recordings"], row["rec_tuxpaint"], row["rec_opensfx"],
                row["rec_sonicpi"]]
        tot += vals
        p(f"{c:14s} {vals[0]:6d} {vals[1]:5d} {vals[2]:5d} {vals[3]:4d} {vals[4]:4d} {vals[5]:4d}  "
          f"{('shared' if shared else str(ts)):>7s} {(str(tr) if tr else '-'):>8s}")
        if verbose:
            for s in catalog.stamps:
                if s.cls == c:
                    p(f"    stamp  {s.image}  {'(sound)' if s.sound else ''}  {s.description}")
            for r in catalog.recordings:
                if r.cls == c:
                    p(f"    rec    {r.source}: {r.name}  [{r.licence}]")
    n_test = sum(1 for c in catalog.classes if any(r.cls == c and rec_split[i] == "test"
                                                    for i, r in enumerate(catalog.recordings)))
    p(f"{'total':14s} {tot[0]:6d} {tot[1]:5d} {tot[2]:5d} {tot[3]:4d} {tot[4]:4d} {tot[5]:4d}")
    p(f"{len(catalog.classes)} classes ({n_test} with held-out recordings, i.e. in the test split); "
      f"{len(catalog.backgrounds)} backgrounds")
    if catalog.dropped:
        p("dropped (too few stamp images or recordings): "
          + ", ".join(f"{c} ({why})" for c, why in catalog.dropped.items()))
    if verbose and catalog.unassigned_sounds:
        p("stamps with a sound and no class: " + ", ".join(catalog.unassigned_sounds))
    lic = {p_: v["licence"] for p_, v in PACKAGES.items()}
    lic.update({p_: v[3] for p_, v in OPTIONAL_BACKGROUNDS.items() if any(b.source == p_ for b in catalog.backgrounds)})
    p("licences: " + "; ".join(f"{k} {v}" for k, v in lic.items()))


def _spec_args(ap):
    ap.add_argument("--seconds", type=float, default=5.0, help="clip length (default 5; the paper uses 10)")
    ap.add_argument("--two-object-frac", type=float, default=0.4, help="fraction of samples with two objects")
    ap.add_argument("--test-frac", type=float, default=0.25, help="fraction of stamps/recordings held out per class")
    ap.add_argument("--min-recordings", type=int, default=1,
                    help="keep classes with at least this many recordings (2: every class has held-out sounds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=None, help="file-system root holding usr/share/... (default /)")


def _spec(args) -> SceneSpec:
    return SceneSpec(seconds=args.seconds, two_object_frac=args.two_object_frac, test_frac=args.test_frac,
                     min_recordings=args.min_recordings)


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.scenes", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("classes", help="print the class table (stamps, recordings per class)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--test-frac", type=float, default=0.25)
    c.add_argument("--root", default=None)
    c.add_argument("--min-recordings", type=int, default=1)
    c.add_argument("-v", "--verbose", action="store_true", help="list every stamp and recording")
    b = sub.add_parser("build", help="build and cache the train/val/test splits")
    b.add_argument("--train", type=int, default=5000)
    b.add_argument("--val", type=int, default=500)
    b.add_argument("--test", type=int, default=500)
    _spec_args(b)
    b.add_argument("--data", default=None, help="data dir (default $SOUNDSIGHT_DATA or ~/.cache/soundsight/data)")
    b.add_argument("--store-audio", action="store_true", help="also write {split}_audio.npy (float16 mixes)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    s = sub.add_parser("show", help="write a few samples as png + wav for inspection")
    s.add_argument("--n", type=int, default=8)
    s.add_argument("--out", required=True)
    s.add_argument("--split", choices=SPLITS, default="train")
    s.add_argument("--no-sweep", action="store_true", help="skip the gain sweep strip")
    _spec_args(s)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "classes":
            print_classes(scan(args.root, min_recordings=args.min_recordings), args.seed, args.test_frac, args.verbose)
        elif args.cmd == "build":
            spec = _spec(args)
            data = Path(args.data).expanduser() if args.data else default_data_dir()
            print(f"building {spec.name(args.seed)} under {data}")
            t0 = time.time()
            folder = build(spec, {"train": args.train, "val": args.val, "test": args.test}, args.seed, data,
                           root=args.root, force=args.force, store_audio=args.store_audio)
            print(f"dataset: {folder} ({_du(folder) / 1e6:.1f} MB, {time.time() - t0:.1f}s)")
        else:
            files = show(args.out, args.n, args.split, args.seed, _spec(args), args.root, sweep=not args.no_sweep)
            print(f"wrote {len(files)} files to {args.out}")
    except MissingSource as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
