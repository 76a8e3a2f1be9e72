"""What several test modules share."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import pytest

from fwp_rl.cli import main

RECALL_FRAME = (48, 192)  # height, width of the Recall env's own picture


@pytest.fixture
def first_episode_video():
    """``first_episode_video(run, video_dir, memory_view, steps)``: `fwp-rl evaluate` writes the video of one
    Recall episode of ``steps`` steps, one frame per step; the memory panel makes the frames wider than the env's
    picture, without it they are that picture. Returns the video's path."""

    def check(run: Path, video_dir: Path, memory_view: bool, steps: int) -> Path:
        args = ["evaluate", str(run), "--episodes", "1", "--video", str(video_dir)]
        assert main(args + (["--memory-view"] if memory_view else [])) == 0
        (video,) = video_dir.glob("*.mp4")
        frames = imageio.mimread(video)
        assert len(frames) == steps
        if memory_view:
            assert frames[0].shape[1] > RECALL_FRAME[1]
        else:
            assert frames[0].shape[:2] == RECALL_FRAME
        return video

    return check


class FakeWandbRun:
    id = "fake"

    def log(self, values, step=None):
        pass

    def finish(self):
        pass


@pytest.fixture
def wandb_inits(monkeypatch):
    """The keyword arguments of every wandb.init call, which makes no W&B files or processes; each run's id is
    "fake"."""
    import wandb

    calls = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or FakeWandbRun())
    return calls
