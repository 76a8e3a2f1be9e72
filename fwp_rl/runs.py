"""Run directories: the resolved config, checkpoints, a metrics file, and the Weights & Biases mirror.

    runs/<name>/config.yaml        the resolved config the run goes on with (a resume may extend its budget)
    runs/<name>/metrics.jsonl      one JSON object per logged step, appended and flushed line by line
    runs/<name>/checkpoints/       latest.pt, previous.pt: the one latest.pt replaced, and best.pt: the best
                                   evaluation's (run.eval_every, ``fwp_rl.harness``); each written atomically
    runs/<name>/wandb/             W&B's own files (offline by default: `wandb sync` uploads them later)
    runs/<name>/tensorboard/       with run.tensorboard, the metrics as TensorBoard scalars
    runs/<name>/videos/            with run.eval_video_every, the videos of evaluations (also logged to W&B)
    runs/<name>/.lock              held (flock) by the process that trains the run (``lock_run_dir``)

Every learner's run writes them through ``fwp_rl.harness.Run``. The seeds of ``fwp-rl train --seeds`` are
run directories inside one group directory, runs/<name>/seed_<k>/ (``fwp_rl.seeds``); ``find_run_dirs``
finds run directories at any depth.

A checkpoint is first written to a temporary file in the same directory and then renamed over the
old one, so an interruption at any moment leaves the previous checkpoint intact. A checkpoint holds tensors
and plain data only (numbers, strings, lists, dicts): ``save_checkpoint`` refuses a tensor with nan or inf in
it, and ``load_checkpoint`` reads with ``torch.load(weights_only=True)``, whose unpickler rebuilds nothing else,
so a crafted file cannot run code when a run is evaluated or resumed. ``read_metrics`` skips a last line cut short
by an interruption; anything else in metrics.jsonl that is not a record is a ``MetricsError``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from fwp_rl.config import ConfigError
from fwp_rl.files import atomic_copy, atomic_write_bytes

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A path that is not a readable fwp-rl checkpoint."""


class NonFiniteError(RuntimeError):
    """Training made a nan or an infinity (a loss, a gradient, a parameter), or was about to save one."""


class MetricsError(ValueError):
    """A metrics.jsonl with a line that is not a metrics record: reported as one line, without a traceback."""


class RunDirInUse(RuntimeError):
    """A run directory that another process is training (``lock_run_dir``): reported as one line."""


USER_ERRORS = (ConfigError, CheckpointError, MetricsError, RunDirInUse)
"""What the user gave is wrong: ``fwp-rl`` reports these as one line, with exit status 2."""


@contextlib.contextmanager
def lock_run_dir(run_dir: str | Path) -> Iterator[None]:
    """Hold run_dir/.lock (an exclusive flock) inside the block, or raise RunDirInUse at once when another process
    holds it. The lock goes with the file descriptor: it is released when the block ends, by an exception too, and
    when the process dies however it dies, so a killed run leaves nothing to clean up. The file keeps the pid of the
    last process that held it, for the message."""
    import fcntl  # POSIX only; here so that this module imports elsewhere

    path = Path(run_dir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            raise RunDirInUse(f"{str(run_dir)!r} is in use: another process{f' (pid {holder})' if holder else ''} "
                              "is training it; wait for it to end or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def unique_run_dir(root: str | Path, name: str) -> Path:
    """root/name, or root/name-2, -3, ... if that exists already; created."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    candidate, n = root / name, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = root / f"{name}-{n}"


def find_run_dirs(path: str | Path) -> list[Path]:
    """The run directories at ``path``: ``path`` itself when it holds a config.yaml, else every directory
    under it that does (at any depth; a run directory's own folders are not searched), sorted."""
    path = Path(path)
    if (path / "config.yaml").is_file():
        return [path]
    found = []
    for folder, subfolders, _ in os.walk(path):
        if (Path(folder) / "config.yaml").is_file():
            found.append(Path(folder))
            subfolders.clear()
    return sorted(found)


def save_checkpoint(path: str | Path, payload: dict[str, Any], previous: str | Path | None = None) -> None:
    """Write ``payload`` (config, weights, learner state, ...) to ``path`` atomically; a NonFiniteError, and
    nothing written, when a floating-point tensor in it holds nan or inf. With ``previous``, the checkpoint at
    ``path`` is first kept there, so one bad write cannot take the only good state."""
    spoiled = first_nonfinite(_tensors(payload, "the checkpoint"))
    if spoiled is not None:
        raise NonFiniteError(f"not writing {str(path)!r}: {spoiled} holds nan or inf (the checkpoint there is kept)")
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    if previous is not None and Path(path).is_file():
        atomic_copy(path, previous)
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor of ``named`` with a nan or an infinity in it, or None: one host
    synchronisation per device when all are finite (training checks its parameters so after every update)."""
    named = [(name, t) for name, t in named if t.is_floating_point()]
    finite = [torch.isfinite(t).all() for _, t in named]
    devices = {flag.device for flag in finite}
    if all(bool(torch.stack([flag for flag in finite if flag.device == d]).all()) for d in devices):
        return None
    return next(name for (name, _), flag in zip(named, finite) if not bool(flag))


def _tensors(value, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors in ``value`` (nested dicts, lists and tuples), each named by where it is under ``where``."""
    if isinstance(value, torch.Tensor):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{where}[{i!r}]")


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: ``path`` itself, or of a run directory its checkpoints/latest.pt."""
    path = Path(path)
    return path / "checkpoints" / "latest.pt" if path.is_dir() else path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    learner: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (a file, or a run directory: ``checkpoint_file``; with
    ``learner``: of that learner); a clear error for anything else."""
    file = checkpoint_file(path)
    if Path(path).is_dir() and not file.is_file():
        raise CheckpointError(f"{str(path)!r} is a directory without checkpoints/latest.pt: not a run directory")
    if not file.is_file():
        raise CheckpointError(f"checkpoint {str(file)!r} does not exist")
    try:
        payload = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only names the object other than a tensor or plain data that unpickling would run code to rebuild
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        if named is None:
            raise CheckpointError(f"{str(file)!r} is not a readable fwp-rl checkpoint (another format)") from None
        raise CheckpointError(f"{str(file)!r} holds {named.group(1)}, which loading would run code to rebuild: "
                              "refused (fwp-rl checkpoints hold tensors and plain data only)") from None
    except Exception as e:  # torch raises many kinds of errors for truncated or foreign files
        raise CheckpointError(f"{str(file)!r} is not a readable fwp-rl checkpoint (truncated or another format): "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(file)!r} is not an fwp-rl checkpoint of format {CHECKPOINT_FORMAT}")
    if learner is not None and payload.get("learner") != learner:
        raise CheckpointError(f"{str(path)!r} holds a {payload.get('learner')!r} run, not a {learner!r} run")
    return payload


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl and mirrors it to W&B when a run is given, and with
    ``tensorboard`` (a folder) as TensorBoard scalars: each number of the record under its key, at its step, as
    CleanRL's and SB3's runs write theirs (a value that is not finite, null in metrics.jsonl, is left out).

    keep_until: a resumed run first drops the records of steps after the checkpoint it resumes from
    (the file is rewritten atomically), so each step appears once; TensorBoard is told to drop them too (a purge
    from step keep_until + 1 on, which its readers apply).
    """

    def __init__(self, path: str | Path, wandb_run=None, keep_until: int | None = None,
                 tensorboard: str | Path | None = None):
        self.path = Path(path)
        self.wandb_run = wandb_run
        if keep_until is not None and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_until]
            atomic_write_bytes(self.path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))
        self._file = open(self.path, "a", buffering=1)
        self._tensorboard = None
        if tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: seconds, so only when asked

            self._tensorboard = SummaryWriter(str(tensorboard),
                                              purge_step=None if keep_until is None else keep_until + 1)

    def log(self, step: int, videos: dict[str, Path] | None = None, **values: float) -> None:
        """The record of ``values`` at ``step``; ``videos`` ({key: mp4 file}) go with it to W&B only."""
        record = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            if videos:
                import wandb

                values = {**values, **{key: wandb.Video(str(path), format="mp4") for key, path in videos.items()}}
            self.wandb_run.log(values, step=int(step))
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(key, value, int(step))

    def sync(self) -> None:
        """Put every record logged so far on disk (flush and fsync): a checkpoint written after this covers no
        update that a crash could take out of metrics.jsonl. TensorBoard's events are flushed too."""
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


_JSON_KINDS = {list: "a JSON array", str: "a JSON string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file. A last line cut short by an interruption (no newline at its end, not
    JSON) is skipped; any other line that is not a JSON object with an integer ``step`` is a MetricsError naming
    the file and the line. Blank lines are skipped."""
    text = Path(path).read_text(errors="replace")
    lines = text.split("\n")  # the last item: what follows the last newline, a line cut short or ""
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                break  # written in part when the run was interrupted
            raise MetricsError(f"{str(path)!r} line {number} is not JSON ({e.msg}: column {e.colno}): not a "
                               "metrics file, or one that was edited by hand") from None
        if not isinstance(record, dict) or isinstance(record.get("step"), bool) \
                or not isinstance(record.get("step"), int):
            what = "has no integer 'step'" if isinstance(record, dict) else f"is {_JSON_KINDS[type(record)]}"
            raise MetricsError(f"{str(path)!r} line {number} {what}, not a metrics record (a JSON object with an "
                               "integer 'step')")
        records.append(record)
    return records


def _plain(v):
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def start_wandb(mode: str, project: str, folder: Path, name: str, group: str, tags: list[str], config: dict,
                run_id: str | None = None, entity: str | None = None, job_type: str | None = None):
    """A W&B run in ``mode`` (offline, online or disabled), its files under ``folder``/wandb, or None when disabled;
    ``run_id`` continues the W&B run of that id (a resumed training run)."""
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(project=project, entity=entity, dir=str(folder), name=name, group=group, tags=tags,
                      config=config, job_type=job_type, mode=mode, id=run_id, resume="allow" if run_id else None,
                      settings=wandb.Settings(silent=True))


def start_run_wandb(config: dict, folder: Path, name: str, console, mode: str | None = None,
                    run_id: str | None = None, job_type: str = "train"):
    """The W&B run of a run whose config (plain data) is ``config``, in ``mode`` (None: its run.wandb), its files
    under ``folder``/wandb; None when disabled. Training runs (``fwp_rl.harness``) and ``fwp-rl evaluate --wandb``
    (job type "evaluate") start theirs here, so both are filed alike:

    - group: the experiment, run.group or else the config's name: the seeds of a ``train --seeds`` group, or the runs
      of one config, are one line in W&B's charts, apart from every other config's (another core, the SB3 baseline);
    - name: ``name`` (the run directory's), <group>/<name> for a run of a group;
    - config: the run's config with the fields ``core`` (``fwp_rl.learners.Learner.core_of``: SB3's runs are
      "sb3_lstm") and ``task`` (``Learner.task``) added at the top, beside ``learner`` and ``seed``, for the UI to
      group and filter by;
    - tags: the learner, the core and the task, then run.tags;
    - project and entity: run.project and run.entity.

    An offline run prints the folder it writes and the command that uploads it, on ``console``.
    """
    from fwp_rl.learners import learner  # here: fwp_rl.learners imports the learners' modules only when asked

    run = config["run"]
    mode = mode or run["wandb"]
    if mode == "disabled":
        return None
    entry = learner(config["learner"])
    core, task, group = entry.core_of(config), entry.task(config), run.get("group")
    tags = list(dict.fromkeys([config["learner"], core, task, *run.get("tags", [])]))
    wandb_run = start_wandb(mode, run["project"], folder, f"{group}/{name}" if group else name,
                            group or config["name"], tags, {**config, "core": core, "task": task}, run_id=run_id,
                            entity=run.get("entity"), job_type=job_type)
    if mode == "offline":
        folder = wandb_run.settings.sync_dir
        console.print(f"W&B offline: {folder}; upload with: wandb sync {folder}", soft_wrap=True)  # unbroken
    return wandb_run
