"""``fwp-rl bench faults``: the promises of a run (README, "What a run promises") tried by force.

First every case of the table of bad inputs (``fwp_rl.bench.bad_inputs``) must give a clear one-line error. Then
runs are killed with SIGKILL at random moments and resumed with ``fwp-rl train --resume``, again and again, until
they finish (``kill_and_resume``); the same config also trains once without interruption beside them. After every
kill the checkpoint must load (a run killed before its first checkpoint has none, and starts over) and metrics.jsonl
must hold every update the checkpoint covers; at the end the run must have finished where the uninterrupted one did,
with every update in metrics.jsonl once, and, for a learner whose resume is exact (the double pole's
neuroevolution), the same figures and the same solution.

The runs are child processes (``python -m fwp_rl.cli``), as a user's are: a kill takes the whole interpreter, at
whatever it was doing, a checkpoint write included. tests/test_faults.py runs the same loop with a few kills.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from fwp_rl.bench.bad_inputs import BAD_INPUTS, try_case
from fwp_rl.bench.timing import check_positive
from fwp_rl.config import ConfigError
from fwp_rl.files import atomic_write_text, temporary_target
from fwp_rl.runs import CheckpointError, checkpoint_file, load_checkpoint, read_metrics

RECALL = "env: {id: fwp_rl/Recall-v0, num_envs: 4, options: {k: 3, delay: 4}}\n"
# The runs killed, each with %d for its budget: a budget per kill (the second number) trains a few seconds on one
# core, so every kill lands inside the run (the run gets kills + 1 of them).
FAULT_CONFIGS = {
    "ppo": (RECALL + "policy: {torso: mlp, core: delta, core_options: {hidden_size: 16}}\n"
                     "ppo: {total_steps: %d, num_steps: 24, num_minibatches: 2, update_epochs: 2, device: cpu}\n",
            3000),
    "sb3_recurrent_ppo": (RECALL + "policy: MlpLstmPolicy\npolicy_kwargs: {lstm_hidden_size: 16}\n"
                                   "ppo: {total_steps: %d, num_steps: 24, num_minibatches: 2, update_epochs: 2, "
                                   "device: cpu}\n", 1500),
    "neuroevolution": ("env: {id: double_pole, options: {task: nonmarkov}}\n"
                       "policy: {torso: identity, core: direct, core_options: {hidden_size: 1, slow_size: 2}}\n"
                       "search: {algorithm: cmaes, popsize: 16, max_evaluations: %d, restart_after: 800}\n", 600),
}
# PPO and SB3 evaluate every 5 updates, so that best.pt is written (and killed) too; the double pole's fitness episode
# is its evaluation.
EVALUATION = {"ppo": ", eval_every: 5, eval_episodes: 2", "sb3_recurrent_ppo": ", eval_every: 5, eval_episodes: 2",
              "neuroevolution": ""}
TIMING_KEYS = ("seconds", "steps_per_second", "env_seconds", "inference_seconds", "learn_seconds")


@dataclass
class FaultReport:
    """What ``kill_and_resume`` saw of one config."""

    learner: str
    kills: int = 0  # kills that landed while the run trained
    cut_writes: int = 0  # kills that cut a checkpoint write short (its temporary file was left)
    unreadable: int = 0  # kills after which latest.pt, previous.pt or best.pt did not load
    uncovered: int = 0  # records of checkpointed updates missing from metrics.jsonl after a kill
    lost: int = 0  # records of the uninterrupted run missing at the end
    duplicated: int = 0  # records logged more than once at the end
    finished: bool = False  # the last resume ended with exit code 0 where the uninterrupted run ended (with a best.pt)
    different: int = 0  # exact learners: records (or the solution) that differ from the uninterrupted run's
    leftovers: list[str] = dataclasses.field(default_factory=list)  # temporary files left in checkpoints/ at the end
    seconds: float = 0.0

    @property
    def kept(self) -> bool:
        """Whether every promise held."""
        return self.finished and not (self.unreadable or self.uncovered or self.lost or self.duplicated
                                      or self.different or self.leftovers)


def write_config(folder: Path, learner: str, name: str, kills: int) -> Path:
    text, per_kill = FAULT_CONFIGS[learner]
    path = folder / f"{name}.yaml"
    path.write_text(f"learner: {learner}\nname: {name}\nseed: 3\n{text % (per_kill * (kills + 1))}"
                    f"run: {{root: {str(folder / 'runs')!r}, wandb: disabled, checkpoint_every: 1"
                    f"{EVALUATION[learner]}}}\n")
    return path


def _start(argv: list[str]) -> subprocess.Popen:
    # One torch thread: the child's speed does not depend on how many cores the machine lends it.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "fwp_rl.cli", *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _finish(process: subprocess.Popen, what: str) -> None:
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{what} ended with exit code {process.returncode}: {err.decode()[-2000:]}")


def _last_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    records = read_metrics(path) if path.is_file() else []
    return records[-1]["step"] if records else -1


def _wait_for_progress(process: subprocess.Popen, run_dir: Path, after_step: int, timeout: float = 120.0) -> bool:
    """Wait until the run logs a step after ``after_step``; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if _last_step(run_dir) > after_step:
            return True
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run_dir} logged nothing after step {after_step} in {timeout:.0f} s")
        time.sleep(0.01)
    return False


def _temporaries(run_dir: Path) -> list[str]:
    """The names of the temporary files of unfinished writes in the run's checkpoints/ (``fwp_rl.files``)."""
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if temporary_target(p.name) is not None)


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def kill_and_resume(learner: str, folder: Path, kills: int, seed: int, max_delay: float = 1.0,
                    exact: bool | None = None) -> FaultReport:
    """Train the run of ``FAULT_CONFIGS[learner]`` in ``folder`` once without interruption, then once killed ``kills``
    times at random moments (each within ``max_delay`` seconds of the run's first new record after its start or
    resume) and resumed after each kill, and compare (module docstring). ``exact``: compare the figures and the
    solution too (default: for neuroevolution, whose double pole resume is exact)."""
    exact = learner == "neuroevolution" if exact is None else exact
    rng = random.Random(seed)
    report = FaultReport(learner)
    start = time.perf_counter()
    _finish(_start(["train", str(write_config(folder, learner, "whole", kills))]), f"the uninterrupted {learner} run")
    whole_dir = folder / "runs" / "whole"
    reference = read_metrics(whole_dir / "metrics.jsonl")

    run_dir = folder / "runs" / "killed"
    process = _start(["train", str(write_config(folder, learner, "killed", kills))])
    logged_before = -1  # the last step logged when the run was killed: what it logs after that is progress
    while True:
        if not _wait_for_progress(process, run_dir, logged_before) or report.kills == kills:
            break
        time.sleep(rng.uniform(0, max_delay))
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        report.kills += 1
        report.cut_writes += bool(_temporaries(run_dir))
        try:
            # a kill before the first checkpoint was written leaves none: the resume starts the run over
            saved = load_checkpoint(run_dir) if checkpoint_file(run_dir).exists() else {"global_step": -1}
            for kept in ("previous.pt", "best.pt"):
                if (run_dir / "checkpoints" / kept).exists():
                    load_checkpoint(run_dir / "checkpoints" / kept)
        except CheckpointError:
            report.unreadable += 1
            break
        logged = {r["step"] for r in read_metrics(run_dir / "metrics.jsonl")}
        report.uncovered += sum(r["step"] <= saved["global_step"] and r["step"] not in logged for r in reference)
        logged_before = max(logged, default=-1)
        process = _start(["train", "--resume", str(run_dir)])
    try:
        _finish(process, f"the killed {learner} run")
        report.finished = load_checkpoint(run_dir)["update"] == load_checkpoint(whole_dir)["update"]
        if EVALUATION[learner]:
            report.finished &= load_checkpoint(run_dir / "checkpoints" / "best.pt")["update"] > 0
    except (RuntimeError, CheckpointError):
        report.finished = False
    records = read_metrics(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in records]
    report.lost = len({r["step"] for r in reference} - set(steps))
    report.duplicated = len(steps) - len(set(steps))
    if exact:
        report.different = sum(_comparable(a) != _comparable(b) for a, b in zip(records, reference))
        report.different += abs(len(records) - len(reference))
        if report.finished and not torch.equal(load_checkpoint(run_dir)["flat_params"],
                                               load_checkpoint(whole_dir)["flat_params"]):
            report.different += 1
    report.leftovers = _temporaries(run_dir)
    report.seconds = time.perf_counter() - start
    return report


@dataclass
class InputsReport:
    """What the table of bad inputs (``fwp_rl.bench.bad_inputs``) gave: counts, and the cases that were not clear."""

    cases: int = 0
    clear: int = 0  # exit code 2, one line of error naming what ``Case.expected`` says
    tracebacks: int = 0
    unclear: list[str] = dataclasses.field(default_factory=list)  # "case: what it did"


def try_bad_inputs() -> InputsReport:
    """Every case of ``BAD_INPUTS``, each in a fresh folder."""
    report = InputsReport()
    for case in BAD_INPUTS:
        with tempfile.TemporaryDirectory(prefix="fwp-rl-input-") as tmp:
            outcome = try_case(case, Path(tmp))
        report.cases += 1
        report.tracebacks += "Traceback" in outcome.stderr
        if outcome.clear and case.expected in outcome.stderr:
            report.clear += 1
        else:
            last = outcome.stderr.strip().splitlines()[-1:] or ["nothing on stderr"]
            report.unclear.append(f"{case.name}: exit code {outcome.code}, {last[0]}")
    return report


@dataclass(frozen=True)
class FaultsOptions:
    """The options of ``fwp-rl bench faults`` (their defaults and help: fwp_rl.cli); ``learners`` None: every one of
    FAULT_CONFIGS; ``only``: "inputs", "kills" or None for both."""

    learners: list[str] | None
    kills: int
    seed: int
    max_delay: float
    only: str | None
    json: str | None


def run_faults_bench(options: FaultsOptions) -> int:
    """Try the bad inputs and kill and resume a run of every learner in ``options.learners``; print what survived.
    Exit code 1 when a promise broke."""
    check_positive("--kills", options.kills)
    if not options.max_delay >= 0:
        raise ConfigError(f"--max-delay {options.max_delay} is not allowed: it must be >= 0")
    learners = options.learners or list(FAULT_CONFIGS)
    unknown = sorted(set(learners) - set(FAULT_CONFIGS))
    if unknown:
        raise ConfigError(f"--learners {','.join(unknown)} is not allowed; choose from: {', '.join(FAULT_CONFIGS)}")
    console, result = Console(), {}
    if options.only != "kills":
        inputs = try_bad_inputs()
        console.print(f"bad inputs: {inputs.cases} cases tried, {inputs.clear} clear one-line errors (exit code 2), "
                      f"{inputs.tracebacks} tracebacks, {len(inputs.unclear)} not clear", soft_wrap=True)
        for line in inputs.unclear:
            console.print(f"  [red]not clear:[/red] {line}", highlight=False, soft_wrap=True)
        result["inputs"] = dataclasses.asdict(inputs)
    rows = []
    if options.only != "inputs":
        with tempfile.TemporaryDirectory(prefix="fwp-rl-faults-") as tmp:
            for i, learner in enumerate(learners):
                folder = Path(tmp) / learner
                folder.mkdir()
                rows.append(kill_and_resume(learner, folder, options.kills, options.seed + i, options.max_delay))
        title = (f"runs killed (SIGKILL) up to {options.kills} times, each within {options.max_delay} s of progress, "
                 f"and resumed; seed {options.seed}")
        table = Table(title=title)
        columns = ("learner", "kills", "cut writes", "unreadable", "uncovered", "lost", "duplicated", "finished",
                   "differ", "leftovers", "s")
        for column in columns:
            table.add_column(column, justify="left" if column == "learner" else "right")
        for r in rows:
            table.add_row(r.learner, str(r.kills), str(r.cut_writes), str(r.unreadable), str(r.uncovered), str(r.lost),
                          str(r.duplicated), "yes" if r.finished else "NO",
                          str(r.different) if r.learner == "neuroevolution" else "-", str(len(r.leftovers)),
                          f"{r.seconds:.0f}")
        console.print(table)
        console.print("cut writes: kills that cut a checkpoint write short; unreadable: kills after which latest.pt, "
                      "previous.pt or best.pt did not load; uncovered: records of checkpointed updates missing from "
                      "metrics.jsonl after a kill; lost, duplicated: records of the uninterrupted run missing or "
                      "logged twice at the end; differ (exact learners): records or solution unlike the uninterrupted "
                      "run's; leftovers: temporary files left in checkpoints/ at the end", soft_wrap=True)
        result["kills"] = [dataclasses.asdict(r) for r in rows]
    if options.json:
        atomic_write_text(options.json, json.dumps(dict(options=dataclasses.asdict(options), **result), indent=2))
    broken = bool(result.get("inputs", {}).get("unclear")) or not all(r.kept for r in rows)
    return 1 if broken else 0
