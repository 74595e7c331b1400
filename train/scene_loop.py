"""The step bookkeeping shared by the scene-gen trainers' loops (scene_image_encoder,
scene_audio_encoder, scene_gan, scene_ldm, scene_evaluator): running means of the step stats,
the learning curve (``<run>/curve.jsonl``: a record every ``--log-every`` steps), the wall-clock
budget (``--max-minutes``; evaluation and one-off encoding passes do not count) and the
checkpoints (every ``--ckpt-minutes``, at the last step, when the budget is spent).

Each trainer keeps its own step (batches, losses, optimisers) and its own evaluation; it tells
the ``TrainLoop`` what a curve record holds besides the running means (``fields``) and how a
record reads in the log (``line``). ``TrainLoop.run`` is the whole loop of the trainers with one
step counter (image and audio encoders, GAN); the LDM (two phases with an encoding pass between)
and the evaluator (its schedule follows a time budget) drive their loops with the parts.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from soundsight_train.scene_common import Curve, Meter, save_checkpoint


def lr_epoch_fields(opt, samples_per_step: int, n_train: int) -> Callable[[int, float], dict]:
    """Curve fields of a one-optimiser trainer: learning rate, elapsed seconds, epochs seen."""
    return lambda step, elapsed: dict(lr=round(opt.param_groups[0]["lr"], 7), elapsed=elapsed,
                                      epoch=round(step * samples_per_step / n_train, 3))


def epoch_line(rec: dict, total: int) -> str:
    """The log line of a one-loss trainer whose records hold ``epoch``."""
    return (f"step {rec['step']}/{total}  loss {rec['loss']:.4f}  {rec['sec_per_step']:.2f}s/step  "
            f"ep {rec['epoch']:.2f}  [{rec['elapsed'] / 60:.1f} min]")


class TrainLoop:
    """``state`` is the run's state dict (saved as ``state.json``; its ``elapsed`` is kept here);
    ``modules`` / ``optims`` are what a checkpoint holds (see scene_common.save_checkpoint).

    ``fields(step, elapsed)``: the keys a curve record has after the running means and
    ``sec_per_step``, in their order (``elapsed``: training seconds, rounded to 0.1);
    ``line(rec, total)``: the log line of a record. With ``stop_on_budget`` False,
    ``--max-minutes`` neither stops the loop nor forces a checkpoint here (a trainer that
    folds the budget into its schedule ends its loop itself).
    """

    def __init__(self, args, run: Path, state: dict, modules: dict, optims: dict, main_proc: bool, log,
                 fields: Callable[[int, float], dict], line: Callable[[dict, int], str], stop_on_budget: bool = True):
        self.args, self.run_dir, self.state = args, Path(run), state
        self.modules, self.optims = modules, optims
        self.main_proc, self.log = main_proc, log
        self.fields, self.line = fields, line
        self.budget_minutes = args.max_minutes if stop_on_budget else 0.0
        self.curve = Curve(self.run_dir / "curve.jsonl", main_proc)
        self.meter = Meter()
        self.t_start = time.time() - state["elapsed"]  # a resumed run goes on counting from its saved time
        self.last_ck = time.time()

    def elapsed(self) -> float:
        """Training seconds so far."""
        return time.time() - self.t_start

    def add(self, stats: dict) -> bool:
        """One step's stats into the running means; False when any mean is no longer finite."""
        self.meter.add(stats)
        return self.meter.finite()

    def step_done(self, step: int, total: int | None, /, **counters) -> bool:
        """After step ``step`` of ``total`` (None: no fixed last step): ``counters`` and the
        elapsed time into the state, a curve record and log line when due, a checkpoint when
        due. Returns whether the time budget is spent."""
        now = time.time()
        self.state.update(elapsed=now - self.t_start, **counters)
        if step % self.args.log_every == 0 or step == total:
            rec = self.meter.record(step, **self.fields(step, round(now - self.t_start, 1)))
            self.curve.write(rec)
            self.log(self.line(rec, total))
        out_of_time = self.budget_minutes > 0 and now - self.t_start > self.budget_minutes * 60
        if self.main_proc and (now - self.last_ck > self.args.ckpt_minutes * 60 or step == total or out_of_time):
            self.checkpoint()
        return out_of_time

    def checkpoint(self) -> None:
        save_checkpoint(self.run_dir, self.modules, self.optims, self.state)
        self.last_ck = time.time()

    def eval_due(self, step: int, total: int) -> bool:
        """An evaluation during training: main process, every ``--eval-every`` steps, not at the
        last step (the final evaluation follows it)."""
        return bool(self.main_proc and self.args.eval_every and step % self.args.eval_every == 0 and step < total)

    @contextmanager
    def off_the_clock(self):
        """Time spent inside does not count as training time (budget, ``elapsed``); yields its start."""
        t0 = time.time()
        try:
            yield t0
        finally:
            self.t_start += time.time() - t0

    def budget_spent(self, where: str) -> None:
        self.log(f"--max-minutes {self.args.max_minutes} reached at {where}")

    def close(self) -> None:
        self.curve.close()

    def run(self, step: int, total: int, train_step: Callable[[int], dict],
            evaluate: Callable[[int], tuple[dict, str]]) -> int | None:
        """Steps ``step + 1`` .. ``total`` (fewer when the budget is spent): ``train_step(s)`` does
        step ``s + 1`` and returns its stats; ``evaluate(s)`` when due (see eval_due; off the
        clock) returns its metrics, recorded in the curve as ``{"step": s, "val": metrics}``, and
        its log line (the seconds it took are added). Returns the last step done, or None after a
        non-finite stat (logged as an error)."""
        while step < total:
            stats = train_step(step)
            step += 1
            if not self.add(stats):
                self.log(f"error: non-finite loss at step {step}")
                return None
            out_of_time = self.step_done(step, total, step=step)
            if self.eval_due(step, total):
                with self.off_the_clock() as t0:
                    metrics, line = evaluate(step)
                    self.curve.write({"step": step, "val": metrics})
                    self.log(f"{line} ({time.time() - t0:.0f}s)")
            if out_of_time:
                self.budget_spent(f"step {step}")
                break
        return step
