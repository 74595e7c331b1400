"""The scene evaluator (classifier + object-size regressor), trained supervised on real composites.

    python -m soundsight_train.scene_evaluator [--data DIR] [--steps 2400] [--max-minutes 12] \
        [--out models/scene-evaluator-64] [--resume] [--threads 1]
    python -m soundsight_train.scene_evaluator --tiny --data DIR --out /tmp/ev     # tests, smoke runs

Never used for generation: ``soundsight_train.eval_scene`` uses it to rank generated images by
class (R@1 / R@5), as the FID feature space, and to estimate the loudest object's size (the
volume control). Trained on the ``train`` split at 64 px, validated on ``val`` (same stamps,
new compositions) and tested on ``test`` (held-out stamps and recordings).

Targets: every object class of the composite — softmax cross-entropy against the multi-hot label
spread evenly over the scene's one or two classes (multi-label training by label normalisation;
it learns much faster than 65 independent sigmoids, and the logits' ranking is what R@k and the
top-3 mixing test read) — and the log of the loudest object's longer box side / image side
(standardised; MSE, weight ``--size-weight``).
Augmentation is light and leaves both targets true: horizontal flip, a shift of up to
``--shift`` px (reflected border), brightness / contrast jitter, and with probability
``--blur`` a 2x down-and-up resampling (generated images are softer than real ones).
``--more N`` adds N further compositions of the training stamps (``scenes.more_compositions``:
the dataset's own training stream continued, cached next to it). AdamW, warm-up + cosine decay; with ``--max-minutes`` (wall clock) or ``--max-cpu-minutes``
(this process's CPU time in training steps, so a budget means the same work on a busy machine)
the schedule follows whichever of steps or time runs out first, so the learning rate still
ends near 0.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from soundsight_plugins.scene_gen.encoders import count_parameters
from soundsight_plugins.scene_gen.evaluator import (
    ARCHITECTURE,
    TASK,
    EvaluatorConfig,
    SceneEvaluator,
    labelled_metrics,
    size_target,
)
from soundsight_train import scene_common as sc
from soundsight_train.scene_loop import TrainLoop


def parse(argv=None):
    ap = sc.make_parser("scene_evaluator", __doc__, "scene-evaluator-64")
    ap.add_argument("--size", type=int, choices=[32, 64, 128], default=64)
    ap.add_argument("--preset", choices=["cpu", "tiny"], default="cpu")
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--size-weight", type=float, default=1.0)
    ap.add_argument("--shift", type=int, default=4, help="largest random shift in px (at --size)")
    ap.add_argument("--jitter", type=float, default=0.15, help="brightness / contrast jitter (fraction)")
    ap.add_argument("--blur", type=float, default=0.25, help="probability of a 2x down-and-up resampling")
    ap.add_argument("--max-cpu-minutes", type=float, default=0.0,
                    help="stop after this much CPU time in training steps (0: no limit)")
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--more", type=int, default=0,
                    help="also train on this many further compositions of the training stamps "
                         "(scenes.more_compositions; generated once and cached next to the dataset)")
    return sc.parse_with_tiny(ap, argv, dict(preset="tiny", size=32, steps=40, batch=16, warmup=2, eval_every=20,
                                             log_every=10))


def multi_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N, 2) labels (-1 = none) → (N, n_classes) float targets."""
    y = torch.zeros(len(labels), n_classes + 1)
    y.scatter_(1, torch.where(labels < 0, n_classes, labels).long(), 1.0)
    return y[:, :n_classes]


def augment(x: torch.Tensor, gen: torch.Generator, shift: int, jitter: float, blur: float) -> torch.Tensor:
    """Flip + shift (one affine resampling, reflected border), brightness/contrast, optional blur."""
    b, _, h, w = x.shape
    dev = x.device
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    # integer pixel shifts: the affine grid moves by 2 * px / side in normalised coordinates
    tx = torch.randint(-shift, shift + 1, (b,), generator=gen).float() * 2 / w
    ty = torch.randint(-shift, shift + 1, (b,), generator=gen).float() * 2 / h
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = flip, tx, 1.0, ty
    grid = F.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="nearest", padding_mode="reflection", align_corners=False)
    if jitter > 0:
        bright = (1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter).to(dev, x.dtype)
        contrast = (1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter).to(dev, x.dtype)
        m = x.mean((1, 2, 3), keepdim=True)
        x = ((x - m) * contrast + m) * bright
    if blur > 0:
        soft = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="area"), size=(h, w), mode="bilinear",
                             align_corners=False)
        pick = (torch.rand(b, 1, 1, 1, generator=gen) < blur).to(dev, x.dtype)
        x = pick * soft + (1 - pick) * x
    return x.clamp(0, 1)


def evaluate(model, images_u8: torch.Tensor, labels: np.ndarray, log_size: np.ndarray, device) -> dict:
    out = sc.unwrap(model).predict(sc.to_unit(images_u8, "cpu"), batch=250)
    m = labelled_metrics(out, torch.from_numpy(labels.astype("int64")), torch.from_numpy(log_size))
    counts = np.bincount(labels[:, 0], minlength=out["logits"].shape[1])
    m["chance_top1"] = round(float(counts.max() / counts.sum()), 4)
    m["classes_present"] = int((counts > 0).sum())
    return m


def progress(step: int, total: int, elapsed: float, max_minutes: float, cpu: float = 0.0,
             max_cpu_minutes: float = 0.0) -> float:
    """Fraction of the training done: steps, wall time or CPU time, whichever is furthest."""
    p = step / max(total, 1)
    if max_minutes > 0:
        p = max(p, elapsed / (max_minutes * 60))
    if max_cpu_minutes > 0:
        p = max(p, cpu / (max_cpu_minutes * 60))
    return min(p, 1.0)


def lr_at(p: float, step: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * p))


METRICS_NOTES = ("val: new compositions of the training stamps and recordings; test: held-out stamps and recordings "
                 "(27 classes). top1/top5: the loudest object's class among the top 1/5 logits; top1_any: the top "
                 "class is any object of the scene; both_top3: two-object scenes with both classes in the top 3; "
                 "size_r2: R^2 of the log of the loudest object's longer box side / image side.")


def write_registry(out, model, cfg, args, state, metrics, data):
    training = {"command": state["command"],
                "method": "supervised: softmax cross-entropy on the scene's classes (soft multi-hot) + MSE on the "
                          "standardised log size of the loudest object",
                "steps": state["step"], "batch": args.batch, "images_seen": state["step"] * args.batch,
                "seconds": round(state["elapsed"], 1), "cpu_seconds": round(state["cpu_seconds"], 1),
                "threads": torch.get_num_threads(), "device": state["device"],
                "optimizer": {"type": "AdamW", "lr": args.lr, "weight_decay": args.wd,
                              "schedule": f"warm-up {args.warmup} + cosine over min(steps, time budget)"},
                "size_weight": args.size_weight,
                "more_compositions": args.more,
                "augment": {"flip": True, "shift_px": args.shift, "brightness_contrast": args.jitter,
                            "blur_2x": args.blur},
                "curve": "curve.jsonl in the run folder"}
    sc.save_registry(out, args, model, cfg, task=TASK, architecture=ARCHITECTURE, training=training, metrics=metrics,
                     data=data, extra={"metrics_notes": METRICS_NOTES},
                     description=f"scene-gen evaluator (evaluation only, never used for generation): {cfg.image_size} "
                                 f"px CNN, {cfg.n_classes}-class multi-label head + log object-size regressor, trained "
                                 "supervised on the scenes dataset's real composites.")


def main(argv=None) -> int:
    args = parse(argv)
    rank, world, dev, main_proc, out, run, log, command = sc.start(args, "scene_evaluator", argv)
    if world > 1:
        raise SystemExit("error: the evaluator trains in one process (it is small); run it without torchrun")
    from soundsight_train import scenes

    folder = sc.find_scenes(args.data)
    splits = {s: scenes.SceneSplit(folder, s) for s in scenes.SPLITS}
    train = splits["train"]
    images = {s: sc.images_nchw(d, args.size) for s, d in splits.items()}
    sizes = {s: size_target(d.boxes, d.spec.size) for s, d in splits.items()}
    n_classes = len(train.classes)
    cfg = EvaluatorConfig.preset(args.preset, image_size=args.size, n_classes=n_classes,
                                 classes=tuple(train.classes), size_mean=float(sizes["train"].mean()),
                                 size_std=float(sizes["train"].std()))
    labels_train = train.labels
    if args.more > 0:
        # a 12-minute run sees each of the 5000 stored compositions ~30 times; fresh arrangements
        # of the same stamps keep it from learning the scenes instead of the objects
        more = scenes.more_compositions(folder, args.more, log=log)
        images["train"] = torch.cat([images["train"], torch.from_numpy(np.ascontiguousarray(
            scenes.downsample(more["images"], args.size))).permute(0, 3, 1, 2).contiguous()])
        labels_train = np.concatenate([train.labels, more["labels"]])
        sizes["train"] = np.concatenate([sizes["train"], size_target(more["boxes"], train.spec.size)])
    n_train = len(labels_train)
    y_train = multi_hot(torch.from_numpy(labels_train.astype("int64")), n_classes)
    y_train = y_train / y_train.sum(1, keepdim=True)  # soft targets: each object class gets an equal share
    s_train = torch.from_numpy((sizes["train"] - cfg.size_mean) / cfg.size_std).float()

    torch.manual_seed(args.seed)
    model = SceneEvaluator(cfg).to(dev.torch_device)
    channels_last = dev.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    modules, optims = {"model": model}, {"opt": opt}
    state = sc.initial_state({"step": 0, "elapsed": 0.0, "cpu_seconds": 0.0}, command, world, dev, cfg, args)
    sc.restore(sc.resume_state(args, run, cfg.to_dict(), log), modules, optims, dev, state)
    gen = sc.batch_generator(args.seed, rank, state["step"])  # rank 0: one process

    log(f"data: {folder} ({', '.join(f'{len(d)} {s}' for s, d in splits.items())} images at {args.size} px, "
        f"{n_classes} classes; {n_train} training compositions)")
    log(f"model: evaluator {count_parameters(model) / 1e6:.2f}M params; device {dev}; batch {args.batch}")
    log(f"run folder: {run}; registry folder: {out}")

    def fields(step, elapsed):
        return dict(lr=round(opt.param_groups[0]["lr"], 7), elapsed=elapsed,
                    cpu_minutes=round(state["cpu_seconds"] / 60, 2), epoch=round(step * args.batch / n_train, 3))

    def line(rec, total):
        return (f"step {rec['step']}  loss {rec['loss']:.4f} (cls {rec['cls']:.4f}, size {rec['size']:.4f})  "
                f"{rec['sec_per_step']:.2f}s/step  ep {rec['epoch']:.2f}  [{rec['elapsed'] / 60:.1f} min, "
                f"{rec['cpu_minutes']:.1f} CPU min]")

    # the time budgets end the loop through progress() (the schedule follows them), not in TrainLoop
    loop = TrainLoop(args, run, state, modules, optims, main_proc, log, fields, line, stop_on_budget=False)
    step = state["step"]
    model.train()
    while True:
        p = progress(step, args.steps, loop.elapsed(), args.max_minutes, state["cpu_seconds"], args.max_cpu_minutes)
        if p >= 1.0:
            break
        sc.set_lr(opt, lr_at(p, step, args.lr, args.warmup))
        cpu0 = time.process_time()
        idx = sc.take(n_train, args.batch, gen)
        x = augment(sc.to_unit(images["train"][idx], dev.torch_device, channels_last), gen, args.shift,
                    args.jitter, args.blur)
        logits, size = model(x)
        cls_loss = -(y_train[idx].to(dev.torch_device) * F.log_softmax(logits, 1)).sum(1).mean()
        size_loss = F.mse_loss(size, s_train[idx].to(dev.torch_device))
        loss = cls_loss + args.size_weight * size_loss
        sc.backward_step(loss, opt, None)
        step += 1
        if not loop.add({"loss": loss.detach(), "cls": cls_loss.detach(), "size": size_loss.detach()}):
            log(f"error: non-finite loss at step {step}")
            return 1
        # total None: no forced record or checkpoint at --steps (the loop may end earlier, on time)
        loop.step_done(step, None, step=step, cpu_seconds=state["cpu_seconds"] + time.process_time() - cpu0)
        if args.eval_every and step % args.eval_every == 0:
            with loop.off_the_clock() as t0:  # evaluation time does not count against the budget
                m = evaluate(model, images["val"], splits["val"].labels, sizes["val"], dev)
                loop.curve.write({"step": step, "val": m})
                log(f"eval: val top1 {m['top1']} top5 {m['top5']} both-in-top3 {m['both_top3']} size R^2 "
                    f"{m['size_r2']} ({time.time() - t0:.0f}s)")
    if step < args.steps:
        log(f"time budget reached at step {step} ({state['elapsed'] / 60:.1f} min, "
            f"{state['cpu_seconds'] / 60:.1f} CPU min)")
    loop.checkpoint()

    log("final evaluation ...")
    metrics = {s: evaluate(model, images[s], splits[s].labels, sizes[s], dev) for s in ("val", "test")}
    loop.curve.write({"step": step, "val_final": metrics["val"], "test_final": metrics["test"]})
    loop.close()
    cfg_out = EvaluatorConfig.from_dict(cfg.to_dict())
    write_registry(out, model, cfg_out, args, state, metrics, scenes.data_card(folder))
    for s, m in metrics.items():
        log(f"{s} ({m['n']} images, {m['classes_present']} classes): top1 {m['top1']} (chance {m['chance_top1']}) "
            f"top5 {m['top5']}; both objects in top 3: {m['both_top3']} of {m['two_object_n']}; "
            f"size R^2 {m['size_r2']} (MAE {m['size_mae_log']} in log side)")
    log(f"wrote registry model {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
