"""The command line itself: `fwp-rl --help` and argument errors answer without importing torch; what `train` guards
(a resume that changes the config, a run another process trains, SIGTERM, run names), each mistake one line and exit
status 2."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fwp_rl import harness
from fwp_rl.cli import main
from fwp_rl.runs import load_checkpoint, read_metrics

from conftest import fwp_rl_process, terminated, wait_while_running

RECALL_LSTM = str(Path(__file__).resolve().parents[1] / "configs" / "memory" / "recall_lstm.yaml")


def tiny(root, total_steps=96):
    """--set items that make configs/memory/recall_lstm.yaml a run of 96 agent steps an update."""
    return [item for value in ("env.num_envs=4", "env.options.delay=2", "policy.core_options.hidden_size=8",
                               f"ppo.total_steps={total_steps}", "ppo.num_steps=24", "ppo.num_minibatches=2",
                               "ppo.update_epochs=1", f"run.root={root}", "run.wandb=disabled",
                               "run.checkpoint_every=1") for item in ("--set", value)]


def one_line_error(capsys) -> str:
    """What the command printed to stderr: one line, an fwp-rl error, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("fwp-rl: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, status", [(["--help"], 0), (["bench", "--help"], 0), (["train", "--seeds"], 2)])
def test_help_and_argument_errors_need_no_torch(argv, status):
    code = ("import sys\nfrom fwp_rl.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('torch' in sys.modules, e.code, file=sys.stderr)\n")
    child = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert child.stderr.splitlines()[-1] == f"False {status}"


def test_resume_refuses_a_changed_config_in_one_line_and_keeps_an_extended_budget(tmp_path, capsys, monkeypatch):
    """A resume that would learn something else is refused with the change; one that extends the budget writes it
    to config.yaml, so a later plain --resume trains to the new end."""
    assert main(["train", RECALL_LSTM, *tiny(tmp_path)]) == 0
    run_dir = tmp_path / "recall_lstm"
    assert main(["train", "--resume", str(run_dir), "--set", "policy.core=delta"]) == 2
    assert one_line_error(capsys) == (
        f"fwp-rl: error: --resume {run_dir}: the config differs from the checkpoint's: policy.core 'lstm' -> 'delta'; "
        "only ppo.total_steps, ppo.device, run.root, run.wandb, run.project, run.entity, run.tags, run.tensorboard, "
        "run.checkpoint_every, run.eval_every, run.eval_video_every may change on resume\n")

    log = harness.Run.log

    def log_then_ctrl_c(run, step, **figures):
        log(run, step, **figures)
        if run.iterations == 2:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(harness.Run, "log", log_then_ctrl_c)
    assert main(["train", "--resume", str(run_dir), "--set", "ppo.total_steps=288"]) == 0  # stopped after update 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["ppo"]["total_steps"] == 288
    assert load_checkpoint(run_dir)["update"] == 2
    monkeypatch.setattr(harness.Run, "log", log)
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [96, 192, 288]


def test_sigterm_saves_the_run_a_second_process_cannot_train_it_meanwhile_and_resume_finishes_it(tmp_path, capsys):
    """`fwp-rl train` in its own process: while it trains, `train --resume` of its run directory stops with one line;
    SIGTERM stops it after the update under way with a checkpoint of everything in metrics.jsonl, exit status 143;
    then --resume finishes it."""
    run_dir = tmp_path / "recall_lstm"
    with fwp_rl_process("train", RECALL_LSTM, *tiny(tmp_path, 96 * 10_000)) as child:
        wait_while_running(child, (run_dir / "checkpoints" / "latest.pt").is_file,
                           "the run did not save a first checkpoint")
        assert main(["train", "--resume", str(run_dir)]) == 2
        assert one_line_error(capsys) == (f"fwp-rl: error: {str(run_dir)!r} is in use: another process (pid "
                                          f"{child.pid}) is training it; wait for it to end or stop it first\n")
        printed = terminated(child)
    assert "SIGTERM: stopping after this update" in printed and "Traceback" not in printed
    records = read_metrics(run_dir / "metrics.jsonl")
    update = load_checkpoint(run_dir)["update"]
    assert [r["step"] for r in records] == [96 * (i + 1) for i in range(update)]
    assert main(["train", "--resume", str(run_dir), "--set", f"ppo.total_steps={96 * (update + 1)}"]) == 0
    assert load_checkpoint(run_dir)["update"] == update + 1
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [96 * (i + 1) for i in range(update + 1)]


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden"])
def test_a_run_name_that_would_write_outside_run_root_is_a_one_line_error(tmp_path, capsys, name):
    assert main(["train", RECALL_LSTM, *tiny(tmp_path / "runs"), "--set", f"name={json.dumps(name)}"]) == 2
    assert f"name={name!r} is not allowed" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_resume_with_a_broken_metrics_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", RECALL_LSTM, *tiny(tmp_path, 192)]) == 0
    metrics = tmp_path / "recall_lstm" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace("\n", "\n[]\n", 1))
    assert main(["train", "--resume", str(tmp_path / "recall_lstm")]) == 2
    assert f"{str(metrics)!r} line 2 is a JSON array, not a metrics record" in one_line_error(capsys)
