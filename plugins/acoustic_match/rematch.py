"""The `rematch` command: speech re-rendered with the acoustics of another room.

Three ways to get the room (exactly one per run):

- ``room`` (a picture), three modes. ``mode="params"`` (the default: it wins on unseen rooms)
  runs the picture model (``room_params_net``, registry task ``room-acoustics``,
  ``Request.params_model``): it predicts the octave RT60s and DRR the blind reverberator takes,
  and the same synthesis (``impulse.ir_from_picture``) renders the IR at the input's rate. The
  other two run the learned AViTAR model (registry task ``acoustic-match``; its
  ``match(wave, image)`` maps 16 kHz speech to 16 kHz speech in the pictured room):
  ``mode="waveform"`` is the paper's, the model's output itself, run on overlapping chunks with
  crossfades, resampled back to the input's rate (nothing above 8 kHz); ``mode="ir"`` runs the
  model on one excerpt only, deconvolves the effective impulse response of its output and
  continues it to the full band (``impulse.ir_from_model``), then convolves the full-rate,
  full-band input with it.
- ``like`` (a reverberant recording of the target room): the blind reverberator
  (``impulse.ir_from_reference``).
- ``ir`` (a measured impulse response file): resampled to the input's rate and convolved
  through pedalboard (``render.PedalboardConvolver``).

The rendering streams in two passes (``render.py``): output at the input's rate and channels,
loudness matched to the input, the tail kept, written block by block into an atomic file with a
provenance sidecar. ``rematch_array`` / ``evaluation_method`` give the same rendering on arrays
(for ``soundsight_train.eval_rematch``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from soundsight import console
from soundsight.errors import InputError, ModelError, OutputError

from . import acoustics as ac
from .impulse import (MODEL_INPUT_RMS, SCAN_S, active_rms, choose_excerpt, image_tensor, ir_from_file, ir_from_model,
                      ir_from_picture, ir_from_reference, model_renderer)
from .loaders import ARCHITECTURES, ROOM_PARAMS
from .render import (BLOCK_S, MIN_SECONDS, SILENT_PEAK, ConvolutionEngine, ModelEngine, PedalboardConvolver,
                     first_seconds, to_mono, json_num, render)

MODES = ("waveform", "ir", "params")
PARAMS_MODEL = ARCHITECTURES[ROOM_PARAMS][2]  # --mode params: picture -> octave RT60s + DRR
SOURCES = ("room", "like", "ir")


# =============================================================================================
# input: a file or a mix expression, streamed


@dataclass
class SoundInput:
    """A sound to rematch: one file or a mix expression, readable in blocks any number of times."""

    expr: str
    sources: list  # [(path, gain)]
    sr: int
    channels: int
    frames: Optional[int]  # None when a source's length is only an estimate (mp3)

    @classmethod
    def open(cls, expr: str) -> "SoundInput":
        from soundsight.audio import parse_mix, probe_audio

        sources = parse_mix(str(expr))
        probes = [probe_audio(p, decode=False) for p, _ in sources]
        sr = int(probes[0]["samplerate"])
        counts = {int(p["channels"]) for p in probes}
        channels = counts.pop() if len(counts) == 1 else min(max(int(p["channels"]) for p in probes), 2)
        frames = None
        exact = all(p["frames"] is not None and str(p["format"]).upper() not in ("MP3", "MPEG") for p in probes)
        if exact:
            frames = max(int(round(p["frames"] * sr / p["samplerate"])) for p in probes)
        return cls(str(expr), sources, sr, channels, frames)

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.sources]

    def blocks(self, block_s: float = BLOCK_S, *, sr: Optional[int] = None,
               channels: Optional[int] = None) -> Iterator[np.ndarray]:
        """float32 (channels, n) blocks of ``block_s`` (the last shorter), sources summed."""
        from soundsight.audio import stream_audio

        sr = sr or self.sr
        ch = channels or self.channels
        if len(self.sources) == 1:
            path, gain = self.sources[0]
            for b in stream_audio(path, block_s, sr=sr, channels=channels, min_samples=1):
                yield b * np.float32(gain) if gain != 1.0 else b
            return
        streams = [(stream_audio(p, block_s, sr=sr, channels=ch if ch in (1, 2) else None, min_samples=1), g)
                   for p, g in self.sources]
        while True:
            parts = []
            for s, g in streams:
                b = next(s, None)
                if b is not None:
                    parts.append(b * np.float32(g))
            if not parts:
                return
            n = max(p.shape[1] for p in parts)
            mix = np.zeros((ch, n), np.float32)
            for p in parts:
                mix[:, : p.shape[1]] += p
            yield mix


# =============================================================================================
# the whole command


@dataclass
class Request:
    audio: str
    room: Optional[str] = None
    like: Optional[str] = None
    ir: Optional[str] = None
    out: Optional[str] = None
    mode: Optional[str] = None
    mix: float = 1.0
    model: str = "rooms-avitar-16k"
    params_model: str = PARAMS_MODEL
    report: Optional[str] = None
    force: bool = False
    estimates: bool = True
    block_s: float = BLOCK_S

    def source(self) -> str:
        given = [k for k in SOURCES if getattr(self, k)]
        if len(given) != 1:
            raise InputError("give exactly one of --room IMAGE, --like REFERENCE.wav or --ir IR.wav"
                             + (f" (got {', '.join('--' + g for g in given)})" if given else ""))
        return given[0]


def validate(req: Request) -> tuple[str, str]:
    src = req.source()
    mode = req.mode
    if mode is not None and mode not in MODES:
        raise InputError(f"--mode must be waveform, ir or params, got {mode!r}")
    if src != "room" and mode in ("waveform", "params"):
        raise InputError(f"--mode {mode} needs a picture (--room IMAGE); --{src} always convolves (mode ir)")
    # --room defaults to params: on unseen rooms it beats both AViTAR modes on every metric
    # (STFT 0.231 vs 0.244, RT60 error 0.32 vs 0.80 s; README, "Which --room mode wins")
    mode = mode or ("params" if src == "room" else "ir")
    if not (isinstance(req.mix, (int, float)) and 0.0 <= float(req.mix) <= 1.0):
        raise InputError(f"--mix must be between 0 and 1, got {req.mix}")
    if not (req.block_s > 0):
        raise InputError("block size must be positive")
    return src, mode


def default_out(sound: SoundInput) -> Path:
    first = Path(sound.paths[0])
    return first.with_name(f"{first.stem}.rematch.wav")


def _out_subtype(sound: SoundInput, out: Path) -> Optional[str]:
    """Keep the input's sample format when the output has the same container and it is PCM/float."""
    from soundsight.audio import WRITE_FORMATS

    try:
        import soundfile as sf

        info = sf.info(sound.paths[0])
    except Exception:
        return None
    fmt = WRITE_FORMATS.get(out.suffix.lower(), (None,))[0]
    if info.format == fmt and info.subtype in ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        return info.subtype
    return None


def audio_sink(path: Path, sr: int, channels: int, subtype: Optional[str], provenance: dict):
    """``open_sink`` for ``render``: the output written block by block into an atomic temporary
    file (renamed on success), its provenance sidecar next to it (removed if the audio fails)."""
    import contextlib

    import soundfile as sf

    from soundsight.audio import WRITE_FORMATS
    from soundsight.outputs import atomic_path, sidecar_path, write_sidecar

    fmt, default_sub = WRITE_FORMATS[path.suffix.lower()]
    sub = subtype or default_sub

    @contextlib.contextmanager
    def open_sink():
        ok = False
        write_sidecar(path, provenance)
        try:
            with atomic_path(path) as tmp:
                try:
                    f = sf.SoundFile(str(tmp), "w", samplerate=int(sr), channels=int(channels), format=fmt, subtype=sub)
                except Exception as exc:
                    raise OutputError(f"could not write {path} as {fmt} at {sr} Hz, {channels} channel(s): {exc}") from None
                with f:
                    yield lambda y: f.write(np.ascontiguousarray(y.T))
            ok = True
        finally:
            if not ok:
                with contextlib.suppress(OSError):
                    sidecar_path(path).unlink()

    return open_sink


def load_room_model(name: str, device):
    """``device``: a ``soundsight.device.Device``, a torch device, or a callable returning one
    (resolved here, so runs without the model never import torch)."""
    from soundsight import registry

    folder = registry.resolve(name, task="acoustic-match")
    device = device() if callable(device) else device
    model = registry.load(folder, device)
    for attr in ("sample_rate", "image_size", "match"):
        if not hasattr(model, attr):
            raise ModelError(f"model {folder.name} has no {attr!r}; not an acoustic-match model")
    return folder, model, device


def load_params_model(name: str, device):
    """The picture -> room-acoustics model of ``--mode params`` (``device`` as for ``load_room_model``)."""
    from soundsight import registry

    try:
        folder = registry.resolve(name, task="room-acoustics")
    except ModelError as exc:
        raise ModelError(f"--mode params needs a room-acoustics model ({exc}); python -m soundsight_train.room_params "
                         f"trains one, --params-model picks another") from None
    device = device() if callable(device) else device
    model = registry.load(folder, device)
    for attr in ("image_size", "estimate"):
        if not hasattr(model, attr):
            raise ModelError(f"model {folder.name} has no {attr!r}; not a room-acoustics model")
    return folder, model


def estimates(capture_in: np.ndarray, capture_out: np.ndarray, sr: int) -> dict:
    """Blind RT60/DRR of input and output (first minute) and the output's effective RT60
    against the input (deconvolution: the input is the dry reference)."""
    from soundsight.audio import resample

    def mono16(x):
        m = to_mono(x).astype(np.float32)
        return resample(m[None, :], sr, ac.BLIND_SR)[0] if sr != ac.BLIND_SR else m

    xi, xo = mono16(capture_in), mono16(capture_out)
    out = {}
    for name, x in (("input", xi), ("output", xo)):
        try:
            e = ac.blind_estimate(x, ac.BLIND_SR)
            out[name] = {"rt60": json_num(e.rt60), "drr_db": json_num(e.drr_db), "method": "blind"}
        except ValueError:  # under a second of audio
            out[name] = {"rt60": None, "drr_db": None, "method": "blind (too short)"}
    eff = None
    if np.any(xi) and np.any(xo):
        h = ac.estimate_ir(xi, xo, length=min(len(xo), int(4.0 * ac.BLIND_SR)), sr=ac.BLIND_SR)
        eff = {"rt60_speech": json_num(ac.rt60_schroeder(h, ac.BLIND_SR, band=ac.SPEECH_BAND)),
               "drr_db": json_num(ac.drr_db(h, ac.BLIND_SR))}
    out["output_vs_input"] = eff
    return out


@contextlib.contextmanager
def _option_named(option: str):
    """Say which option a bad file came from: "--ir: x.png has no audio track"."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"{option}: {exc}") from None


def run_rematch(req: Request, *, device=None, extra_provenance: Optional[dict] = None) -> dict:
    """Validate, build the room's response, render, write; returns the JSON report."""
    import time

    from soundsight.outputs import check_output, make_provenance

    t0 = time.perf_counter()
    src, mode = validate(req)
    sound = SoundInput.open(req.audio)
    if sound.frames is not None and sound.frames < MIN_SECONDS * sound.sr:
        raise InputError(f"{req.audio} is too short ({sound.frames / sound.sr:.2f} s; rematch needs at least "
                         f"{MIN_SECONDS:g} s)")
    out = Path(req.out) if req.out else default_out(sound)
    from soundsight.audio import WRITE_FORMATS

    if out.suffix.lower() not in WRITE_FORMATS:
        raise OutputError(f"cannot write audio as '{out.suffix or out.name}' ({out}); use .wav, .flac, .ogg, .mp3 or .aiff")
    inputs = [*sound.paths] + [p for p in (req.room, req.like, req.ir) if p]
    check_output(out, force=req.force, inputs=inputs)
    report_path = Path(req.report) if req.report else None
    if report_path is not None:
        if report_path.suffix.lower() != ".png":
            raise OutputError(f"--report writes a PNG; got {report_path}")
        check_output(report_path, force=req.force, inputs=inputs + [out])
    sr, C = sound.sr, sound.channels
    models, model_name = {}, None

    if src == "like":
        with _option_named("--like"):
            ir, info = ir_from_reference(req.like, sr)
        engine = ConvolutionEngine(ir, C)
    elif src == "ir":
        with _option_named("--ir"):
            ir, info = ir_from_file(req.ir, sr, C)
        engine = PedalboardConvolver(ir, sr, C)
    else:
        from soundsight.image import load_image

        with _option_named("--room"):
            picture = load_image(req.room)  # a bad picture fails before the model loads
        if mode == "params":
            folder, pmodel = load_params_model(req.params_model, device)
            ir, info = ir_from_picture(pmodel, image_tensor(picture, int(pmodel.image_size)), sr)
            engine = ConvolutionEngine(ir, C)
        else:
            folder, model, device = load_room_model(req.model, device)
            msr, size = int(model.sample_rate), int(model.image_size)
            renderer = model_renderer(model, image_tensor(picture, size), device)
            scan = to_mono(first_seconds(sound.blocks(10.0, sr=msr, channels=1), SCAN_S, msr))
            if scan.size == 0 or float(np.max(np.abs(scan))) < SILENT_PEAK:
                raise InputError(f"{req.audio} is silent" + (" in its first two minutes" if len(scan) >= SCAN_S * msr else "")
                                 + "; there is nothing to rematch")
            level = active_rms(scan, msr)
            gain = getattr(model, "input_rms", MODEL_INPUT_RMS) / level if level > 0 else 1.0
            if mode == "ir":
                s, e = choose_excerpt(scan, msr)
                ir, info = ir_from_model(renderer, msr, scan[s:e] * np.float32(gain), sr)
                info.extra["estimated"]["excerpt_start_s"] = round(s / msr, 2)
                engine = ConvolutionEngine(ir, C)
            else:
                info = None
                engine = ModelEngine(renderer, msr, sr, C, input_gain=gain)
            del scan
        model_name = folder.name
        models = {folder.name: folder.provenance()}
    prov = make_provenance(models=models, seed=0, params={
        "audio": req.audio, "room": req.room, "like": req.like, "ir": req.ir, "mode": mode, "mix": float(req.mix),
        "model": model_name, **({"params_model": req.params_model} if mode == "params" else {})})
    prov.update(extra_provenance or {})
    open_sink = audio_sink(out, sr, C, _out_subtype(sound, out), prov)
    res = render(lambda: sound.blocks(req.block_s), engine, sr, C, mix=float(req.mix), open_sink=open_sink,
                 spool_dir=out.resolve().parent, block_s=req.block_s,
                 measure_hi_band=(mode == "waveform" and sr > 16000), trim_tail=(mode == "waveform"), what=str(out))
    warnings = list(info.warnings) if info is not None else []
    if mode == "waveform" and res["hi_band_db"] is not None and res["hi_band_db"] > -50.0:
        msg = (f"the input has energy above 8 kHz ({res['hi_band_db']:.0f} dB of the total) that waveform mode "
               f"drops (the model works at 16 kHz); --mode ir keeps it")
        console.warn(msg)
        warnings.append(msg)
    written = [str(out)]
    report = {
        "audio": req.audio, "source": src, src: getattr(req, src), "mode": mode, "model": model_name,
        "mix": float(req.mix), "sample_rate": sr, "channels": C,
        "input_duration_s": round(res["n"] / sr, 4), "output_duration_s": round(res["out_len"] / sr, 4),
        "tail_s": round((res["out_len"] - res["n"]) / sr, 4), "loudness": res["levels"],
        "ir": info.to_dict() if info is not None else None,
        "estimates": None, "warnings": warnings, "outputs": written,
    }
    if mode == "waveform" and res["hi_band_db"] is not None:
        report["input_above_8khz_db"] = json_num(res["hi_band_db"], 1)
    if req.estimates or report_path is not None:
        report["estimates"] = estimates(res["capture_in"], res["capture_out"], sr)
    if report_path is not None:
        from .report import write_report

        write_report(report_path, res["capture_in"], res["capture_out"], sr, report, provenance=prov)
        written.append(str(report_path))
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


# =============================================================================================
# in-memory use (evaluation): fn(dry, image, sr) -> wet


def rematch_array(dry: np.ndarray, sr: int, *, ir: Optional[np.ndarray] = None, render=None, model_sr: int = 16000,
                  mode: str = "ir", block_s: float = BLOCK_S) -> np.ndarray:
    """The command's rendering on an array (no files, no loudness matching, tail kept): the wet
    signal for ``ir`` (an IR at ``sr``) or for a model ``render`` (see ``model_renderer``)."""
    x = np.atleast_2d(np.asarray(dry, np.float32))
    if ir is not None:
        engine = ConvolutionEngine(ir, x.shape[0])
    elif mode == "ir":
        excerpt = to_mono(x)
        if sr != model_sr:
            from soundsight.audio import resample

            excerpt = resample(excerpt[None, :], sr, model_sr)[0]
        s, e = choose_excerpt(excerpt, model_sr)
        level = active_rms(excerpt, model_sr)
        g = MODEL_INPUT_RMS / level if level > 0 else 1.0
        h, _ = ir_from_model(render, model_sr, excerpt[s:e] * np.float32(g), sr)
        engine = ConvolutionEngine(h, x.shape[0])
    else:
        level = active_rms(to_mono(x), sr)
        engine = ModelEngine(render, model_sr, sr, x.shape[0], input_gain=MODEL_INPUT_RMS / level if level > 0 else 1.0)
    outs = []
    step = int(block_s * sr)
    for i in range(0, x.shape[1], step):
        outs.append(engine.process(x[:, i: i + step]))
    outs.append(engine.finish())
    y = np.concatenate(outs, axis=1)
    return y[0] if np.ndim(dry) == 1 else y


def params_evaluation_method(model):
    """``fn(dry, image_uint8, sr) -> wet`` for params mode: the picture model's parameters, the
    blind reverberator's synthesis at ``sr``, the command's convolution."""

    def fn(dry, image, sr):
        h, _ = ir_from_picture(model, image_tensor(image, int(model.image_size)), sr)
        return rematch_array(dry, sr, ir=h)

    return fn


def evaluation_method(model, mode: str = "ir", device=None):
    """``fn(dry, image_uint8, sr) -> wet`` for ``soundsight_train.eval_rematch.from_rematch``."""

    def fn(dry, image, sr):
        render = model_renderer(model, image_tensor(image, int(model.image_size)), device)
        return rematch_array(dry, sr, render=render, model_sr=int(model.sample_rate), mode=mode)

    return fn
