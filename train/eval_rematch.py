"""Evaluation of acoustic matching (issue 4) on the synthetic rooms dataset.

For every room of a split (``unseen`` by default) one test utterance A is the dry input and the
target is ``A * RIR`` (the RIRs have unit energy, so the target is about as loud as A). A
*different* reverberant recording in the same room (two other test utterances, 0.3 s apart,
convolved with the same RIR) is the reference that the blind reverberator listens to. Each
method maps the item to a wet signal; outputs are cut or zero-padded to the target's length and
scaled to the target's RMS (the metrics compare acoustics, not levels: the command matches the
output's loudness to its input anyway).

Metrics (means over the rooms):

- ``stft``: mean squared error between linear STFT magnitudes of output and target
  (``acoustics.stft_distance``: periodic Hann window 512, hop 128, FFT 512, centred frames, no
  normalisation; 32 ms / 8 ms at 16 kHz; speech at RMS 0.05).
- ``rt60_err``: |RT60(output) - RT60(true RIR)| in seconds. RT60(output): the effective IR
  between dry input and output by regularised deconvolution (``acoustics.estimate_ir``,
  Tikhonov, 1e-4 x the dry power smoothed over 30 Hz, 4 s), then Schroeder T30 (-5..-35 dB) with noise-floor
  truncation. Both RT60s are measured on the 177 Hz .. 5.7 kHz band (the 250 Hz .. 4 kHz
  octaves, ``acoustics.SPEECH_BAND``) because an IR deconvolved from speech is only known where
  speech has energy; the true value is the room's stored ``rt60_speech``.
- ``drr_err``: |DRR(effective IR) - DRR(true RIR)| in dB (+-2.5 ms direct window).

Rows: ``input`` (the dry audio unchanged), ``blind reverberator`` (``acoustics.blind_estimate``
on the reference -> per-band RT60 + DRR -> ``acoustics.synthetic_ir`` -> convolution), ``oracle``
(the true RIR; its RT60 error is the bias of the deconvolution metric itself). A learned model
adds a row with ``from_rematch(fn)`` where ``fn(dry, image, sr) -> wet``::

    from soundsight_train import eval_rematch as ev
    res = ev.evaluate(folder, extra={"AViTAR": ev.from_rematch(my_rematch)})
    print(ev.markdown(res))

Measured on the default rooms dataset (``rooms-400r-s0``; unseen: 60 rooms, seen: 340):

| rooms | method | STFT distance | RT60 error (s) | median (s) | DRR error (dB) |
|---|---|---|---|---|---|
| unseen | input | 0.2594 | 0.808 | 0.687 | 37.15 |
| unseen | blind reverberator | 0.2079 | 0.106 | 0.082 | 2.91 |
| unseen | oracle | 0.0000 | 0.006 | 0.002 | 0.21 |
| seen | input | 0.2410 | 0.804 | 0.675 | 36.75 |
| seen | blind reverberator | 0.1889 | 0.095 | 0.062 | 2.96 |
| seen | oracle | 0.0000 | 0.011 | 0.001 | 0.24 |

The blind estimator itself, on the unseen references: speech-band RT60 MAE 0.093 s (13 %,
r = 0.96; true mean 0.82 s), DRR MAE 2.86 dB (r = 0.80). (The input row's RT60 error is about
the rooms' mean RT60: its effective IR is a delta.)

CLI::

    python -m soundsight_train.eval_rematch [--folder DIR] [--split unseen|seen|both] [--n 60] [--json out.json]
        [--avitar rooms-avitar-16k] [--avitar-no-image DIR] [--modes waveform,ir] [--rt60-model rooms-rt60-16k]
        [--params-model rooms-params-128]   # adds the row of `rematch --room IMAGE --mode params`
    python -m soundsight_train.eval_rematch calibrate   # refit the blind estimator (seen rooms only)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from soundsight_plugins.acoustic_match import acoustics as ac
from soundsight_train import rooms as rooms_mod


@dataclass
class Item:
    room: int
    utt: int
    ref_utts: tuple
    sr: int
    dry: np.ndarray  # float32 (n,)
    image: np.ndarray  # uint8 (H, W, 3)
    reference: np.ndarray  # a different reverberant recording in the same room
    rir: np.ndarray  # the true RIR (unit energy, direct peak at rooms.DIRECT_INDEX)
    target: np.ndarray  # dry * rir, tail kept
    truth: dict  # the room's stored acoustics


Method = Callable[[Item], np.ndarray]


def from_rematch(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> Method:
    """Adapt ``fn(dry, image, sr) -> wet`` (a model's rematch) to an evaluation method."""
    return lambda item: np.asarray(fn(item.dry, item.image, item.sr), dtype=np.float32)


def method_input(item: Item) -> np.ndarray:
    return item.dry


def method_oracle(item: Item) -> np.ndarray:
    return ac.convolve(item.dry, item.rir)


def method_blind(item: Item) -> np.ndarray:
    est = ac.blind_estimate(item.reference, item.sr)
    ir = ac.synthetic_ir(est.rt60_bands, est.drr_db, item.sr, predelay=rooms_mod.DIRECT_INDEX / item.sr,
                         seed=item.room)
    return ac.convolve(item.dry, ir)


BASELINES: dict[str, Method] = {"input": method_input, "blind reverberator": method_blind, "oracle": method_oracle}


# ---------------------------------------------------------------------------------------------
# learned models (AViTAR rows, the learned RT60 estimator)


def load_learned(name_or_path, architecture: str):
    """A registry model of acoustic-match's (``loaders.ARCHITECTURES``) on the CPU, eval mode."""
    from soundsight.registry import resolve
    from soundsight_plugins.acoustic_match import loaders

    folder = resolve(name_or_path)
    arch = folder.card.get("architecture")
    if arch != architecture:
        raise SystemExit(f"error: {name_or_path} is a {arch!r} model, not {architecture!r}")
    return loaders.ARCHITECTURES[arch][1](folder, "cpu"), folder


def learned_rt60(model) -> Callable[[np.ndarray, int], float]:
    """``fn(wave, sr) -> RT60 s`` from an ``rt60_net.RT60Net``."""
    import torch

    def fn(wave, sr):
        if sr != model.sample_rate:
            raise ValueError(f"the RT60 estimator is {model.sample_rate} Hz, got {sr}")
        with torch.no_grad():
            return float(model.estimate(torch.from_numpy(np.asarray(wave, np.float32))[None, None])[0])

    return fn


def avitar_methods(model, name: str = "AViTAR", modes=("waveform", "ir"), tail_s: float = 2.0) -> dict[str, Method]:
    """Rows for an AViTAR model: waveform mode (the model's output, input padded by ``tail_s``
    of silence for the reverberation tail) and ir mode (the effective IR between the padded input
    and that output by ``acoustics.estimate_ir``, 3 s, convolved with the dry input)."""
    from soundsight_train.avitar import rematch_fn

    rows = {}
    for mode in modes:
        label = name if mode == "waveform" and len(modes) == 1 else f"{name} ({mode} mode)"
        rows[label] = from_rematch(rematch_fn(model, tail_s=tail_s, mode=mode))
    return rows


PARAMS_ROW = "picture -> parameters -> synthetic IR (--mode params)"


def params_methods(model) -> dict[str, Method]:
    """The row of ``rematch --room --mode params`` (``rematch.params_evaluation_method``: the
    picture model's octave RT60s + DRR, the blind reverberator's synthesis, the command's
    convolution)."""
    from soundsight_plugins.acoustic_match.rematch import params_evaluation_method

    return {PARAMS_ROW: from_rematch(params_evaluation_method(model))}


def make_items(ds: rooms_mod.RoomsData, split: str = "unseen", n: int | None = None, seed: int = 0,
               min_dry_s: float = 1.5) -> list[Item]:
    """Deterministic evaluation items: one per room (the first ``n`` rooms of the split in a
    seeded order), dry utterance >= ``min_dry_s``, reference from two other test utterances."""
    rooms = ds.room_ids(split)
    order = np.random.default_rng([seed, 1]).permutation(len(rooms))
    rooms = [rooms[k] for k in order][: n or len(rooms)]
    test = ds.speech_ids("test")
    long_ = [u for u in test if ds.speech[u]["length"] >= min_dry_s * ds.sr] or test
    items = []
    for r in rooms:
        rng = np.random.default_rng([seed, 2, r])
        a = int(long_[int(rng.integers(len(long_)))])
        others = [u for u in test if u != a]
        b, c = (int(x) for x in rng.choice(others, size=2, replace=False))
        dry = ds.utterance(a)
        ref_dry = np.concatenate([ds.utterance(b), np.zeros(int(0.3 * ds.sr), np.float32), ds.utterance(c)])
        items.append(Item(room=r, utt=a, ref_utts=(b, c), sr=ds.sr, dry=dry, image=ds.image(r),
                          reference=ds.wet(r, ref_dry), rir=ds.rir(r), target=ds.wet(r, dry),
                          truth=ds.rooms[r]["acoustics"]))
    return items


def score(item: Item, out: np.ndarray, rt60_estimator: Callable[[np.ndarray, int], float] | None = None) -> dict:
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(out)):
        raise ValueError("method returned NaN/inf")
    n = len(item.target)
    out = np.pad(out[:n], (0, max(0, n - len(out))))
    rt, ro = np.sqrt(np.mean(item.target.astype(np.float64) ** 2)), np.sqrt(np.mean(out ** 2))
    if ro > 0:
        out = out * (rt / ro)
    stft = ac.stft_distance(out, item.target)
    h = ac.estimate_ir(item.dry, out, length=min(n, int(4.0 * item.sr)), sr=item.sr)
    rt60 = ac.rt60_schroeder(h, item.sr, band=ac.SPEECH_BAND)
    drr = ac.drr_db(h, item.sr)
    true_rt = float(item.truth["rt60_speech"])
    res = {"stft": stft, "rt60": rt60, "rt60_err": abs(rt60 - true_rt) if np.isfinite(rt60) else true_rt,
           "drr": drr, "drr_err": abs(drr - float(item.truth["drr"])) if np.isfinite(drr) else float("nan")}
    if rt60_estimator is not None:
        est = float(rt60_estimator(out.astype(np.float32), item.sr))
        res.update(rt60_learned=est, rt60_learned_err=abs(est - true_rt))
    return res


def evaluate(folder=None, *, split: str = "unseen", n: int | None = None, seed: int = 0,
             methods: dict[str, Method] | None = None, extra: dict[str, Method] | None = None,
             items: list[Item] | None = None, rt60_estimator: Callable[[np.ndarray, int], float] | None = None,
             log=print) -> dict:
    """Run every method on the split's items; returns ``{"split", "n", "rows": {name: metrics},
    "blind_estimator": {...}, "per_item": [...]}``. ``rt60_estimator(wave, sr) -> seconds`` (the
    learned one: ``learned_rt60(model)``) adds ``rt60_learned_err`` to every row."""
    ds = rooms_mod.RoomsData(folder) if items is None else None
    if items is None:
        items = make_items(ds, split, n, seed)
    methods = dict(methods if methods is not None else BASELINES)
    methods.update(extra or {})
    per_item = []
    sums = {m: [] for m in methods}
    blind = []
    times = {m: 0.0 for m in methods}
    for it in items:
        rec = {"room": it.room, "utt": it.utt, "true_rt60": it.truth["rt60_speech"], "true_drr": it.truth["drr"]}
        for name, fn in methods.items():
            t0 = time.perf_counter()
            out = fn(it)
            times[name] += time.perf_counter() - t0
            s = score(it, out, rt60_estimator)
            sums[name].append(s)
            rec[name] = s
        est = ac.blind_estimate(it.reference, it.sr)
        blind.append({"rt60": est.rt60, "drr": est.drr_db, "true_rt60": it.truth["rt60_speech"],
                      "true_drr": it.truth["drr"], "n_decays": est.n_decays,
                      "bands": {str(k): v for k, v in est.rt60_bands.items()},
                      "true_bands": it.truth["rt60_bands"]})
        per_item.append(rec)
    rows = {}
    for name, ss in sums.items():
        rows[name] = {
            "stft": float(np.mean([s["stft"] for s in ss])),
            "rt60_err": float(np.mean([s["rt60_err"] for s in ss])),
            "rt60_err_median": float(np.median([s["rt60_err"] for s in ss])),
            "drr_err": float(np.nanmean([s["drr_err"] for s in ss])),
            "seconds_per_item": times[name] / max(1, len(ss)),
        }
        if rt60_estimator is not None:
            rows[name]["rt60_learned_err"] = float(np.mean([s["rt60_learned_err"] for s in ss]))
    be = np.array([[b["rt60"], b["true_rt60"], b["drr"], b["true_drr"]] for b in blind])
    band_err = {}
    for c in ac.BLIND_BANDS:
        e = [abs(b["bands"][str(c)] - b["true_bands"][str(c)]) for b in blind]
        band_err[str(c)] = float(np.mean(e))
    blind_summary = {
        "rt60_mae": float(np.mean(np.abs(be[:, 0] - be[:, 1]))),
        "rt60_median_ae": float(np.median(np.abs(be[:, 0] - be[:, 1]))),
        "rt60_rel_mae": float(np.mean(np.abs(be[:, 0] - be[:, 1]) / be[:, 1])),
        "rt60_corr": float(np.corrcoef(be[:, 0], be[:, 1])[0, 1]) if len(be) > 2 else float("nan"),
        "drr_mae": float(np.mean(np.abs(be[:, 2] - be[:, 3]))),
        "drr_corr": float(np.corrcoef(be[:, 2], be[:, 3])[0, 1]) if len(be) > 2 else float("nan"),
        "band_rt60_mae": band_err,
        "true_rt60_mean": float(be[:, 1].mean()),
    }
    return {"split": split, "n": len(items), "rows": rows, "blind_estimator": blind_summary, "per_item": per_item,
            "blind_per_item": blind}


def markdown(res: dict) -> str:
    learned = all("rt60_learned_err" in r for r in res["rows"].values())
    lines = [f"rooms: {res['split']}, n = {res['n']}", "",
             "| method | STFT distance | RT60 error (s) | RT60 error, median (s) | DRR error (dB) |"
             + (" RT60 error, learned estimator (s) |" if learned else ""),
             "|---|---|---|---|---|" + ("---|" if learned else "")]
    for name, r in res["rows"].items():
        lines.append(f"| {name} | {r['stft']:.4f} | {r['rt60_err']:.3f} | {r['rt60_err_median']:.3f} | {r['drr_err']:.2f} |"
                     + (f" {r['rt60_learned_err']:.3f} |" if learned else ""))
    b = res["blind_estimator"]
    lines += ["", f"blind estimator on the references: RT60 MAE {b['rt60_mae']:.3f} s (median {b['rt60_median_ae']:.3f}, "
                  f"relative {100 * b['rt60_rel_mae']:.0f} %, r = {b['rt60_corr']:.2f}; true mean {b['true_rt60_mean']:.2f} s), "
                  f"DRR MAE {b['drr_mae']:.2f} dB (r = {b['drr_corr']:.2f}); per band MAE "
              + ", ".join(f"{k} Hz {v:.3f} s" for k, v in b["band_rt60_mae"].items())]
    return "\n".join(lines)


# =============================================================================================
# calibration of the blind estimator


def _targets(acoustics: dict) -> dict:
    t = {"rt60": float(acoustics["rt60_speech"]), "drr": float(acoustics["drr"])}
    for c in ac.BLIND_BANDS:
        t[f"rt60_{c}"] = float(acoustics["rt60_bands"][str(c)])
    return t


def calibrate(folder, n: int | None = None, seed: int = 0, refs_per_room: int = 2, lam: float = 30.0,
              out=None, log=print) -> dict:
    """Fit the blind estimator (``acoustics.fit_blind_model``) on seen rooms x train speech.

    Per room, ``refs_per_room`` reference recordings (two train utterances 0.3 s apart,
    convolved with the room's RIR); targets are the room's speech-band and octave RT60s and DRR.
    Reports a 5-fold cross-validated error (folds by room) and writes the model JSON to ``out``
    (default: the plugin's ``assets/blind_estimator.json``)."""
    ds = rooms_mod.RoomsData(folder)
    rooms = ds.room_ids("seen")
    rooms = [rooms[k] for k in np.random.default_rng([seed, 5]).permutation(len(rooms))][: n or len(rooms)]
    train = ds.speech_ids("train")
    feats, targets, groups = [], [], []
    t0 = time.perf_counter()
    for r in rooms:
        rng = np.random.default_rng([seed, 6, r])
        for _ in range(refs_per_room):
            b, c = (int(x) for x in rng.choice(train, size=2, replace=False))
            ref = np.concatenate([ds.utterance(b), np.zeros(int(0.3 * ds.sr), np.float32), ds.utterance(c)])
            feats.append(ac.blind_features(ds.wet(r, ref), ds.sr))
            targets.append(_targets(ds.rooms[r]["acoustics"]))
            groups.append(r)
    log(f"features of {len(feats)} references ({len(rooms)} rooms) in {time.perf_counter() - t0:.0f} s")
    groups = np.array(groups)
    uniq = np.unique(groups)
    fold_of = {r: k % 5 for k, r in enumerate(np.random.default_rng([seed, 8]).permutation(uniq))}
    folds = np.array([fold_of[g] for g in groups])
    names = list(targets[0])
    pred = {t: np.zeros(len(feats)) for t in names}
    for k in range(5):
        tr, te = np.nonzero(folds != k)[0], np.nonzero(folds == k)[0]
        m = ac.fit_blind_model([feats[i] for i in tr], [targets[i] for i in tr], lam=lam)
        for i in te:
            p = ac._predict(m, feats[i])
            for t in names:
                pred[t][i] = p[t]
    cv = {}
    for t in names:
        y = np.array([tt[t] for tt in targets])
        cv[t] = {"mae": round(float(np.mean(np.abs(pred[t] - y))), 4),
                 "baseline_mae": round(float(np.mean(np.abs(y - (np.exp(np.mean(np.log(y))) if t.startswith("rt60") else y.mean())))), 4)}
        log(f"  {t}: 5-fold CV MAE {cv[t]['mae']:.3f} (predicting the mean: {cv[t]['baseline_mae']:.3f})")
    info = {"dataset": ds.folder.name, "rooms": int(len(rooms)), "references": len(feats), "refs_per_room": refs_per_room,
            "seed": seed, "cv_5fold_by_room": cv, "units": "rt60 s, drr dB",
            "command": "python -m soundsight_train.eval_rematch calibrate"}
    model = ac.fit_blind_model(feats, targets, lam=lam, info=info)
    out = Path(out) if out else ac.BLIND_MODEL_PATH
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(model, indent=0))
    ac._blind_model_cache.clear()
    log(f"wrote {out}")
    return info


def update_card(folder, results: dict, command: str) -> None:
    """Put an evaluation's summary into a registry card's ``metrics.eval_rematch`` (atomically;
    the weights and their checksums are untouched)."""
    from soundsight.registry import record_metrics

    summary = {"command": command}
    for split, res in results.items():
        summary[split] = {"n": res["n"], "seconds": res.get("seconds"),
                          "rows": {k: {m: round(float(v), 4) for m, v in r.items()} for k, r in res["rows"].items()},
                          "blind_estimator": {k: v for k, v in res["blind_estimator"].items() if k != "band_rt60_mae"}}
    record_metrics(Path(folder), "eval_rematch", summary)


def _folder(args) -> Path:
    if args.folder:
        return Path(args.folder)
    from soundsight_train.avitar import find_rooms  # the trainers' choice: a material-looks build only when named

    return find_rooms(args.data, False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soundsight_train.eval_rematch", description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", nargs="?", default="eval", choices=("eval", "calibrate"))
    ap.add_argument("--folder", default=None, help="rooms dataset folder (default: the newest with the default looks under the data dir)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--split", default="unseen", choices=("unseen", "seen", "both"))
    ap.add_argument("--n", type=int, default=None, help="rooms per split (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--out", default=None, help="calibrate: where to write the model (default: the plugin's asset)")
    ap.add_argument("--avitar", default=None, help="AViTAR model (name or folder) to add as rows")
    ap.add_argument("--avitar-no-image", default=None, help="its no-image ablation (name or folder)")
    ap.add_argument("--modes", default="waveform,ir", help="AViTAR output modes to report: waveform, ir or both")
    ap.add_argument("--params-model", default=None,
                    help="room-acoustics model (picture -> RT60s + DRR; name or folder): adds the --mode params row")
    ap.add_argument("--rt60-model", default=None,
                    help="learned RT60 estimator (name or folder): adds its RT60 error on every row's output")
    ap.add_argument("--card", action="append", default=[],
                    help="model folder whose card gets the results under metrics.eval_rematch (repeatable)")
    args = ap.parse_args(argv)
    folder = _folder(args)
    if args.cmd == "calibrate":
        res = calibrate(folder, n=args.n, seed=args.seed, out=args.out)
        print(json.dumps(res, indent=1))
        return 0
    splits = ("seen", "unseen") if args.split == "both" else (args.split,)
    out = {"folder": str(folder), "results": {}}
    extra: dict[str, Method] = {}
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if any(m not in ("waveform", "ir") for m in modes):
        raise SystemExit("error: --modes takes waveform, ir or both")
    models = {}
    if args.avitar_no_image:
        m, f = load_learned(args.avitar_no_image, "avitar")
        extra.update(avitar_methods(m, "AViTAR without image", modes))
        models["avitar_no_image"] = {"name": f.name, "path": str(f.path), "sha256": f.sha256()}
    if args.avitar:
        m, f = load_learned(args.avitar, "avitar")
        extra.update(avitar_methods(m, "AViTAR", modes))
        models["avitar"] = {"name": f.name, "path": str(f.path), "sha256": f.sha256()}
    if args.params_model:
        m, f = load_learned(args.params_model, "room-params")
        extra.update(params_methods(m))
        models["params"] = {"name": f.name, "path": str(f.path), "sha256": f.sha256()}
    rt60_fn = None
    if args.rt60_model:
        m, f = load_learned(args.rt60_model, "rt60-estimator")
        rt60_fn = learned_rt60(m)
        models["rt60_estimator"] = {"name": f.name, "path": str(f.path), "sha256": f.sha256()}
    out["models"] = models
    for sp in splits:
        t0 = time.perf_counter()
        res = evaluate(folder, split=sp, n=args.n, seed=args.seed, extra=extra, rt60_estimator=rt60_fn)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        out["results"][sp] = res
        print(markdown(res))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
        print(f"wrote {args.json}")
    command = "python -m soundsight_train.eval_rematch " + " ".join(argv if argv is not None else sys.argv[1:])
    for c in args.card:
        update_card(c, out["results"], command)
        print(f"updated {Path(c) / 'card.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
