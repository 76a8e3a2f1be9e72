"""The run every learner's ``train`` goes through: ``Run``. It does everything but the algorithm, so a ``train``
reads top to bottom; ``fwp_rl.agents.ppo.train``, in outline:

    run = Run(config, resume, console)   # a resume's checkpoint, config and metrics are checked; nothing is written
    with contextlib.closing(Trainer(config)) as trainer:   # what the user can get wrong fails here
        if run.saved is not None:
            trainer.load_state_dict(run.saved)
        with run.start(total=config.num_updates * config.steps_per_update, iteration="update"):
            while trainer.update_index < config.num_updates and not run.stop_requested:
                figures = trainer.update()
                figures |= run.evaluate(trainer.play, final=trainer.update_index == config.num_updates)
                run.log(trainer.global_step, update=trainer.update_index, **figures)
                run.show(f"{figures['steps_per_second']:,.0f} steps/s")
                run.checkpoint(trainer.state_dict)              # every run.checkpoint_every updates
            run.checkpoint(trainer.state_dict, final=True)      # at the end, or where Ctrl-C stopped the run
    run.summary([f"{trainer.global_step:,} steps in {trainer.update_index} updates"])
    return run.result                                           # the run directory, and whether it finished

A resumed run (``resume``: its run directory) goes on from its checkpoint, or starts over in its directory when it
was stopped before it wrote one. It is refused, with a ConfigError that shows the difference, when its
config (the run's config.yaml plus ``--set``) differs from its checkpoint's in a key that its learner's
``resume_may_change`` (``fwp_rl.learners``: the budget, the device, run settings) does not name; and, before anything
is built, when another process is training it or its metrics.jsonl has a line that is not a record.

``start`` makes the run directory (``fwp_rl.runs``: runs/<name>/, or <name>-2, -3, ... beside an existing one), or
prints where the resumed run goes on; holds run_dir/.lock (``fwp_rl.runs.lock_run_dir``: a second process that would
train the run stops with an error) until the block ends, by an error too; removes the temporary files that writes cut
short by a kill left in the run directory and checkpoints/ (``fwp_rl.files.remove_temporaries``); writes config.yaml,
the config the run goes on with (so a resume's longer budget is what the next resume reads); starts W&B in the
experiment's group (``fwp_rl.runs.start_run_wandb``; a resumed run continues its W&B run); opens metrics.jsonl (a
resumed run first drops the records after its checkpoint: they get logged again), and with run.tensorboard
TensorBoard's events in tensorboard/; takes Ctrl-C and SIGTERM
(``fwp_rl.progress.StopOnInterrupt``: the first asks the run to stop after the update or generation under way, the
second stops it at once); and shows a progress line counting the learner's step unit. When the block ends, by an
error too, metrics.jsonl and W&B are closed and the lock is released.

A checkpoint is checkpoints/latest.pt, written atomically after metrics.jsonl is flushed and fsynced (every record
it covers is on disk), the one it replaces kept as previous.pt: the learner, the config, the W&B run id, the best
evaluation so far and what the learner hands over. A resumable learner's (``fwp_rl.learners``) holds ``update``, the
updates done, and ``global_step``, the step of the last metrics record: a resumed run goes on from there.

Evaluation (``run.eval_every`` set): every ``eval_every`` updates (or generations), and after the last one, ``evaluate``
plays ``run.eval_episodes`` whole episodes of the policy as trained with the learner's ``play``, which replays as
``fwp-rl evaluate`` does (``fwp_rl.evaluate.run_episodes`` in one env of its own, not a training env), and gives
eval/return_mean, eval/return_std and eval/length_mean for that update's metrics record. The global generators
(torch's, NumPy's, Python's) are put back as they were afterwards: a run trains as it would without evaluations. An
evaluation whose mean return beats every earlier one of the run makes its update write a checkpoint whatever
``run.checkpoint_every`` says, kept as checkpoints/best.pt (a copy made atomically after latest.pt is written; a
resume whose latest.pt is that checkpoint makes the copy again, in case a kill came in between). The best score
travels in every checkpoint (``best_evaluation``), so a resumed run goes on comparing with it.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from rich.console import Console

from fwp_rl.config import MAX_SEED, ConfigError, dump_yaml, to_dict
from fwp_rl.distributed import Ranks
from fwp_rl.envs.vector import Episode
from fwp_rl.evaluate import episode_figures, video_fps, write_video
from fwp_rl.files import atomic_copy, remove_temporaries
from fwp_rl.learners import learner
from fwp_rl.progress import StopOnInterrupt, run_progress
from fwp_rl.runs import (CheckpointError, MetricsLog, load_checkpoint, lock_run_dir, read_metrics, save_checkpoint,
                         start_run_wandb, unique_run_dir)

CHECKPOINT_NAMES = ("latest.pt", "previous.pt", "best.pt")  # the checkpoints a run keeps in checkpoints/
MAX_CHANGES_SHOWN = 8  # of a refused resume's config changes; the rest are counted

EVAL_SEED_OFFSET = MAX_SEED + 1
"""An evaluation's env is seeded with the run's seed + EVAL_SEED_OFFSET (2**30), and so are its sampled actions, at
every evaluation of the run: each plays the same episode starts, so evaluations differ by the policy alone. Training's
seeds count up from the run's seed by one per env, and by one per update a PPO or SB3 run resumes at (neuroevolution:
by one per episode evaluated), so they stay below it for any run shorter than 2**30 of those; and seed + 2**30 is
still a 32-bit signed seed, which ale-py needs."""

Play = Callable[[int, int, bool, bool], tuple[list[Episode], dict]]
"""A learner's ``play(seed, episodes, deterministic, record)``: that many whole episodes of its policy as trained, in
an env of its own seeded with ``seed``, and with ``record`` the first one's recording (``fwp_rl.evaluate.run_episodes``
gives both)."""


@contextlib.contextmanager
def generators_kept() -> Iterator[None]:
    """The global generators (torch's, CUDA's where it runs, NumPy's, Python's) as they were before the block."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_initialized() else []):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class Trained(NamedTuple):
    """What a learner's ``train`` returns: its run directory (None at a rank other than 0 of several processes,
    which writes none), and whether it trained to its end rather than being stopped by Ctrl-C or SIGTERM."""

    run_dir: Path | None
    finished: bool


class Run:
    """One run of ``config`` (module docstring): a new one, or with ``resume`` (its run directory) the rest of one.

    Trained by several processes (``ranks``, ``fwp_rl.distributed``), rank 0 alone reads the checkpoint to resume
    (and sends it to the others), writes the run directory, metrics, W&B, TensorBoard and checkpoints, evaluates and
    shows progress; at every rank ``start`` takes Ctrl-C and SIGTERM, and ``stop_requested`` is true at every rank
    once any rank was asked to stop.
    """

    def __init__(self, config, resume: str | Path | None = None, console: Console | None = None,
                 ranks: Ranks = Ranks()):
        self.config, self.ranks = config, ranks
        self.console = console or Console()
        self.learner = learner(config.learner)
        self.run_dir = None if resume is None else Path(resume)
        # the checkpoint a resumed run goes on from (None: a new run, or one stopped before its first checkpoint)
        self.saved = None if resume is None else ranks.from_main(lambda: self._resumed(resume))
        self.iterations = 0 if self.saved is None else int(self.saved["update"])  # updates or generations logged
        self._checkpointed_at = self.iterations if self.saved is not None else None  # the iteration latest.pt holds
        # the best evaluation so far: {"update": its update (or generation), "return_mean": its score}, or None
        self.best = None if self.saved is None else self.saved.get("best_evaluation")
        self.wandb_id: str | None = None
        self.stopped = False
        self._video: Path | None = None  # the video of the evaluation about to be logged (run.eval_video_every)

    def _resumed(self, resume: str | Path) -> dict | None:
        """The checkpoint to resume from, None where the run was stopped before its first checkpoint was written (no
        checkpoint in checkpoints/: it starts over); refuse to resume a run that another process trains, whose config
        changed more than its learner allows, or whose metrics.jsonl is broken: before anything is built or written."""
        with lock_run_dir(self.run_dir):  # only asked here: it is held from ``start`` on
            pass
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.is_file():
            read_metrics(metrics)
        if not any((self.run_dir / "checkpoints" / name).exists() for name in CHECKPOINT_NAMES):
            return None
        payload = load_checkpoint(resume, learner=self.config.learner)
        if "update" not in payload:
            raise CheckpointError(f"{str(resume)!r} has a checkpoint written before {self.config.learner} runs could "
                                  "resume: it holds no state to go on from")
        saved = payload.get("config")
        refused = self.learner.refused_changes(saved if isinstance(saved, dict) else {}, to_dict(self.config))
        if refused:
            more = len(refused) - MAX_CHANGES_SHOWN
            shown = ", ".join(refused[:MAX_CHANGES_SHOWN]) + (f" and {more} more" if more > 0 else "")
            raise ConfigError(f"--resume {resume}: the config differs from the checkpoint's: {shown}; only "
                              f"{', '.join(self.learner.resume_may_change)} may change on resume")
        return payload

    @contextlib.contextmanager
    def start(self, total: int, iteration: str) -> Iterator[Run]:
        """The run, started (module docstring): ``total`` is the step at which the progress line is full,
        ``iteration`` what the learner calls one pass of its loop (say "update")."""
        config, console = self.config, self.console
        if not self.ranks.main:
            with StopOnInterrupt(Console(quiet=True), f"after this {iteration}") as self._stop:
                yield self
            return
        step = 0 if self.saved is None else int(self.saved["global_step"])
        resumed = self.run_dir is not None
        with contextlib.ExitStack() as held:
            if not resumed:
                self.run_dir = unique_run_dir(config.run.root, config.name)
            held.enter_context(lock_run_dir(self.run_dir))
            if self.saved is not None:
                console.print(f"resuming {self.run_dir} at {iteration} {self.iterations}, step {step:,}")
            elif resumed:
                console.print(f"{self.run_dir} was stopped before its first checkpoint: starting it over")
            self._remove_leftovers()  # a new run's directory is new: nothing there
            if self.best is not None and self.best["update"] == self.iterations:
                self._keep_best()  # a kill may have come between latest.pt and its copy
            self._iteration = iteration
            dump_yaml(config, self.run_dir / "config.yaml")
            plain = to_dict(config)
            wandb_run = start_run_wandb(plain, self.run_dir, self.run_dir.name, console,
                                        run_id=None if self.saved is None else self.saved.get("wandb_id"))
            self.wandb_id = None if wandb_run is None else wandb_run.id
            self._metrics = MetricsLog(self.run_dir / "metrics.jsonl", wandb_run,
                                       keep_until=step if resumed else None,
                                       tensorboard=self.run_dir / "tensorboard" if config.run.tensorboard else None)
            held.callback(self._metrics.close)
            with StopOnInterrupt(console, f"after this {iteration}") as self._stop:
                with run_progress(console, self.learner.step_unit) as self._progress:
                    self._total = total
                    self._task = self._progress.add_task(config.name, total=total, completed=step, status="")
                    yield self

    def _remove_leftovers(self) -> None:
        """Remove the temporary files of the run's own writes (config, metrics, checkpoints) that a kill cut short."""
        removed = [*remove_temporaries(self.run_dir, lambda name: name in ("config.yaml", "metrics.jsonl")),
                   *remove_temporaries(self.run_dir / "checkpoints", lambda name: name.endswith(".pt"))]
        if removed:
            self.console.print(f"removed what writes cut short left: {', '.join(p.name for p in removed)}")

    def evaluate(self, play: Play, final: bool) -> dict:
        """The evaluation of the update (or generation) about to be logged (module docstring), as figures for its
        metrics record: when ``run.eval_every`` is set and the update is one of every ``eval_every``, or ``final``
        (the run's last); else {}. A mean return that is nan (an env's nan reward) is never the best. With
        ``run.eval_video_every``, an evaluation at an update that is a multiple of eval_every * eval_video_every, and
        the run's last, also records its first episode as videos/<iteration>_<update>.mp4, logged to W&B with the
        update's record as eval/video."""
        run, iteration = self.config.run, self.iterations + 1
        if not self.ranks.main or not run.eval_every or not (final or iteration % run.eval_every == 0):
            return {}
        record = bool(run.eval_video_every) and (final or iteration % (run.eval_every * run.eval_video_every) == 0)
        with generators_kept():
            episodes, recording = play(self.config.seed + EVAL_SEED_OFFSET, run.eval_episodes, run.eval_deterministic,
                                       record)
        figures = episode_figures(episodes)
        if record:
            self._video = write_video(self.run_dir / "videos" / f"{self._iteration}_{iteration}.mp4",
                                      recording["frames"], video_fps(recording))
        score = figures["return_mean"]
        if not math.isnan(score) and (self.best is None or score > self.best["return_mean"]):
            self.best = {"update": iteration, "return_mean": score}
        return {f"eval/{key}": figures[key] for key in ("return_mean", "return_std", "length_mean")}

    def log(self, step: int, **figures) -> None:
        """The record of one update (or generation) at ``step``: into metrics.jsonl and W&B, and the progress line
        moved to ``step``; the video of its evaluation, if it recorded one, to W&B."""
        if not self.ranks.main:
            return
        self._metrics.log(step, videos={"eval/video": self._video} if self._video else None, **figures)
        self._video = None
        self.iterations += 1
        self._progress.update(self._task, completed=min(step, self._total))

    def show(self, status: str) -> None:
        """Show ``status`` on the progress line."""
        if not self.ranks.main:
            return
        self._progress.update(self._task, status=status)

    def checkpoint(self, payload: Callable[[], dict], final: bool = False) -> None:
        """Write checkpoints/latest.pt with what ``payload()`` gives, after every ``run.checkpoint_every`` updates
        (or generations), after an update whose evaluation is the best so far (also kept as checkpoints/best.pt),
        and when ``final``: at the end of the run, or where Ctrl-C or SIGTERM stopped it. The checkpoint it replaces
        is kept as checkpoints/previous.pt; a payload with nan or inf in it is not written
        (``fwp_rl.runs.NonFiniteError``)."""
        if not self.ranks.main:
            return
        best = self.best is not None and self.best["update"] == self.iterations
        if final or best or self.iterations % self.config.run.checkpoint_every == 0:
            self._metrics.sync()  # every update the checkpoint covers is in metrics.jsonl on disk
            folder = self.run_dir / "checkpoints"
            # a final checkpoint of the update the last one covered replaces it: previous.pt stays an update older
            keep = self.iterations != self._checkpointed_at
            save_checkpoint(folder / "latest.pt",
                            {"learner": self.config.learner, "config": to_dict(self.config), "wandb_id": self.wandb_id,
                             "best_evaluation": self.best, **payload()},
                            previous=folder / "previous.pt" if keep else None)
            self._checkpointed_at = self.iterations
            if best:
                self._keep_best()

    def _keep_best(self) -> None:
        """Make checkpoints/best.pt a copy of latest.pt, the checkpoint of the best evaluation."""
        folder = self.run_dir / "checkpoints"
        atomic_copy(folder / "latest.pt", folder / "best.pt")

    @property
    def stop_requested(self) -> bool:
        """Whether Ctrl-C (or SIGTERM) asked the run to stop. Ask it where the run would go on otherwise, after an
        update (or generation) that was not its last: once the answer is yes, the run stopped early
        (``result.finished``). Trained by several processes, it is whether any was asked, so every rank asks it at
        the same moments (it sums over them)."""
        self.stopped = self.stopped or self.ranks.any(self._stop.requested)
        return self.stopped

    def summary(self, lines: list[str]) -> None:
        """Print the run directory, then ``lines``, then the best evaluation where there was one."""
        if not self.ranks.main:
            return
        self.console.print(f"run directory: {self.run_dir}")
        for line in lines:
            self.console.print(line)
        if self.best is not None:
            self.console.print(f"best evaluation: mean return {self.best['return_mean']:.4g} at {self._iteration} "
                               f"{self.best['update']} (checkpoints/best.pt)")

    @property
    def result(self) -> Trained:
        return Trained(self.run_dir, finished=not self.stopped)
