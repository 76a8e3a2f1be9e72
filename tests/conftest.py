"""What several test modules share."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from fwp_rl.cli import main

# Without a GPU, Triton's kernels run in its interpreter (tests/test_recurrent_fwp_triton.py). Triton reads the switch
# when it defines a kernel, its own library functions included, which it defines on its first import (torch.compile
# imports it too): so it is set here, before any test can import Triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

RECALL_FRAME = (48, 192)  # height, width of the Recall env's own picture


def changed_pixels(a: np.ndarray, b: np.ndarray, level: int = 40) -> int:
    """How many pixels of two RGB pictures differ by more than ``level`` levels in some channel (the default is far
    above the noise of the video coding)."""
    return int((np.abs(a.astype(int) - b.astype(int)).max(-1) > level).sum())


def assert_frames_show_a_moving_picture(frames, region=(slice(None), slice(None)), level: int = 40) -> None:
    """The frames (or their ``region``, a pair of slices) show a picture that moves: no frame is one colour all
    over, each differs from the one before (in a pixel, by more than ``level`` levels), and the last differs from
    the first in at least 20 pixels by more than 40 levels."""
    frames = [np.asarray(f)[region] for f in frames]
    assert len(frames) >= 2
    for i, f in enumerate(frames):
        assert f.std() > 5, f"frame {i} is blank (one colour)"
    for i, (a, b) in enumerate(zip(frames, frames[1:]), 1):
        assert changed_pixels(a, b, level) > 0, f"frame {i} is the picture of frame {i - 1}"
    assert changed_pixels(frames[0], frames[-1]) >= 20, "the last frame shows the first one's picture"


def coloured_fraction(picture: np.ndarray) -> float:
    """The fraction of pixels in colour (channels more than 60 levels apart), not white, black or grey."""
    picture = picture.astype(int)
    return float((picture.max(-1) - picture.min(-1) > 60).mean())


@pytest.fixture
def first_episode_video():
    """``first_episode_video(run, video_dir, memory_view, steps)``: `fwp-rl evaluate` writes the video of one
    Recall episode of ``steps`` steps, one frame per step, whose picture moves; the memory panel makes the frames
    wider than the env's picture and shows a memory that changes, without it the frames are the env's picture.
    Returns the video's path."""

    def check(run: Path, video_dir: Path, memory_view: bool, steps: int) -> Path:
        args = ["evaluate", str(run), "--episodes", "1", "--video", str(video_dir)]
        assert main(args + (["--memory-view"] if memory_view else [])) == 0
        (video,) = video_dir.glob("*.mp4")
        frames = imageio.mimread(video)
        assert len(frames) == steps
        if memory_view:
            assert frames[0].shape[1] > RECALL_FRAME[1]
            # The memory panels: right of the game, below the title, above the outputs, left of the colour bar.
            height, width = frames[0].shape[:2]
            memory = (slice(25, height // 2), slice(int(0.6 * width), width - 70))
            assert_frames_show_a_moving_picture(frames, memory, level=10)  # a memory may settle in a delay
            assert max(coloured_fraction(f[memory]) for f in frames) > 0.03  # the memory's colours, not blank
        else:
            assert frames[0].shape[:2] == RECALL_FRAME
        assert_frames_show_a_moving_picture(frames)
        return video

    return check


@contextlib.contextmanager
def fwp_rl_process(*argv: str) -> Iterator[subprocess.Popen]:
    """`fwp-rl ARGV` in a process of its own, its output (stdout and stderr) in one text pipe; killed at the end of
    the block if it still runs."""
    code = "import sys\nfrom fwp_rl.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    child = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        yield child
    finally:
        child.kill()  # nothing, when it ended
        child.wait()


def wait_while_running(child, ready, what: str, seconds: float = 120) -> None:
    """Wait until ``ready()``, failing with ``what`` if the subprocess ``child`` ends first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while not ready():
        assert child.poll() is None and time.monotonic() < deadline, what
        time.sleep(0.1)


def terminated(child) -> str:
    """Send SIGTERM to the subprocess ``child`` -> all it printed, once it ended with exit status 143."""
    child.send_signal(signal.SIGTERM)
    printed, _ = child.communicate(timeout=120)
    assert child.returncode == 143, printed
    return printed


def _plain(value):
    """A logged value as metrics.jsonl holds it: tensors and numpy scalars as numbers, NaN and infinities as null."""
    if isinstance(value, (torch.Tensor, np.generic)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RecordingWandbRun:
    """A W&B run that keeps what it is given: the wandb.init arguments (``init``), every ``log`` call as
    (values, step) in order (``logged``), and whether ``finish`` was called; ``settings.sync_dir`` makes up where an
    offline run would write."""

    def __init__(self, init: dict, number: int):
        self.init = init
        self.id = init.get("id") or f"recorded{number}"
        self.logged: list[tuple[dict, int | None]] = []
        self.finished = False
        self.settings = SimpleNamespace(sync_dir=f"{init['dir']}/wandb/offline-run-{self.id}")

    def log(self, values: dict, step: int | None = None, commit: bool | None = None) -> None:
        assert not self.finished, "logged to a finished W&B run"
        self.logged.append((dict(values), step))

    def finish(self) -> None:
        assert not self.finished, "a W&B run finished twice"
        self.finished = True

    def history(self) -> list[dict]:
        """What was logged in the layout of metrics.jsonl: one {"step": step, **values} per log call."""
        return [{"step": step, **{k: _plain(v) for k, v in values.items()}} for values, step in self.logged]


@pytest.fixture
def wandb_runs(monkeypatch):
    """The W&B runs started during the test, in order, each a ``RecordingWandbRun``: wandb.init is replaced, so
    nothing is written, started or sent."""
    import wandb

    runs: list[RecordingWandbRun] = []

    def init(**kwargs):
        runs.append(RecordingWandbRun(kwargs, len(runs)))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", init)
    return runs


def wandb_offline_records(folder: Path) -> list:
    """The records W&B wrote into the one offline run under ``folder`` (its wandb/offline-run-*/run-*.wandb), as
    ``wandb_internal_pb2.Record`` messages in order. The file is a log of 32 KiB blocks after a 7-byte header
    (":W&B", a magic number, a version); each block holds chunks of a 7-byte header (checksum, little-endian length,
    kind: 1 a whole record, 2 its first part, 3 a middle one, 4 its last) and the bytes; a block's last 6 bytes or
    fewer are padding. W&B's service may write the file's last blocks after ``finish`` has returned (seen on a busy
    machine): the file is read again until it ends with the run's exit record, for up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        records = _wandb_records(folder)
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def _wandb_records(folder: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    (file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    data = file.read_bytes()
    assert data[:4] == b":W&B"
    block, records, position, parts = 32 * 1024, [], 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        if position + 7 + length > len(data):  # a chunk still being written
            break
        parts += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """Real offline W&B runs that write nothing outside ``tmp_path`` and print nothing of their own."""
    for variable, folder in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                             ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home" / folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
