"""Which `rematch --room` mode wins: the command's own rendering (``rematch.evaluation_method``)
in waveform and ir mode, next to the baselines, on the rooms dataset's unseen rooms (the
metrics of ``soundsight_train.eval_rematch``: STFT distance, RT60 and DRR error of the effective
IR measured by deconvolution).

    python benchmarks/eval_rematch_modes.py [--model rooms-avitar-16k] [--params-model rooms-params-128] [--n 60]
        [--split unseen] [--json out.json]      # --model none: only the params row

Needs the rooms dataset (``python -m soundsight_train.rooms build``). The evaluation runs at
16 kHz (the dataset's rate), so it compares what the modes do to the room's acoustics, not the
band above 8 kHz that only ir mode keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="rooms-avitar-16k", help="AViTAR (waveform and ir mode rows); none: skip")
    ap.add_argument("--params-model", default=None, help="room-acoustics model: adds the params mode row")
    ap.add_argument("--folder", default=None, help="rooms dataset folder (default: the newest with the default looks)")
    ap.add_argument("--split", default="unseen", choices=("unseen", "seen"))
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from soundsight import registry
    from soundsight_plugins.acoustic_match.rematch import evaluation_method
    from soundsight_train import eval_rematch as ev
    from soundsight_train.avitar import find_rooms

    # the newest default-looks build, as the trainers pick it (a --textures material build only when named)
    folder = find_rooms(a.folder, False)
    extra, info = {}, {}
    if a.model != "none":
        mf = registry.resolve(a.model, task="acoustic-match")
        model = registry.load(mf, "cpu")
        step = mf.card.get("training", {}).get("steps")
        extra.update({f"{mf.name}, waveform mode": ev.from_rematch(evaluation_method(model, "waveform")),
                      f"{mf.name}, ir mode": ev.from_rematch(evaluation_method(model, "ir"))})
        info.update(model=mf.name, steps=step)
        print(f"model {mf.name} (training steps: {step}, sha256 {mf.sha256()[:12]}), dataset {folder.name}")
    if a.params_model:
        pf = registry.resolve(a.params_model, task="room-acoustics")
        extra.update(ev.params_methods(registry.load(pf, "cpu")))
        info.update(params_model=pf.name)
        print(f"params model {pf.name} (sha256 {pf.sha256()[:12]}), dataset {folder.name}")
    res = ev.evaluate(folder, split=a.split, n=a.n, extra=extra, log=lambda *x: None)
    print(ev.markdown(res))
    if a.json:
        res.pop("per_item", None)
        res.pop("blind_per_item", None)
        Path(a.json).write_text(json.dumps({**info, "dataset": folder.name, **res}, indent=1,
                                           default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
