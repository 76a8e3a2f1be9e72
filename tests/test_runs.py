import os

import pytest
import torch

from fwp_rl.runs import (CheckpointError, MetricsLog, load_checkpoint, read_metrics, save_checkpoint,
                         unique_run_dir)


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ckpt" / "latest.pt"
    save_checkpoint(path, {"weights": torch.arange(3.0), "step": 7})
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and torch.equal(loaded["weights"], torch.arange(3.0))
    assert os.listdir(path.parent) == ["latest.pt"], "no temporary file is left behind"


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})

    class Interrupt(BaseException):
        pass

    def interrupted(*args, **kwargs):
        raise Interrupt

    original = torch.save
    torch.save = interrupted
    try:
        with pytest.raises(Interrupt):
            save_checkpoint(path, {"step": 2})
    finally:
        torch.save = original
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["latest.pt"]


def test_truncated_and_foreign_files_are_named(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"weights": torch.randn(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable fwp-rl checkpoint"):
        load_checkpoint(path)
    torch.save({"something": "else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an fwp-rl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a run directory"):
        load_checkpoint(tmp_path)


def test_run_dir_of_a_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", {"step": 3})
    assert load_checkpoint(tmp_path / "run")["step"] == 3


def test_unique_run_dirs(tmp_path):
    a, b, c = (unique_run_dir(tmp_path, "pong") for _ in range(3))
    assert [p.name for p in (a, b, c)] == ["pong", "pong-2", "pong-3"]


def test_metrics_survive_a_cut_last_line(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.log(1, ret=1.5, loss=torch.tensor(0.25))
    log.log(2, ret=float("nan"))
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "ret"')  # what an interruption mid-write leaves
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "ret": 1.5, "loss": 0.25},
                                                        {"step": 2, "ret": None}]
