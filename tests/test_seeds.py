"""train --seeds: one group directory of run directories per call, for both learners, in turn and in worker
processes; the group in every config and in W&B; the errors a user sees."""

from __future__ import annotations

import pytest
import torch
import yaml

from fwp_rl import seeds
from fwp_rl.cli import main
from fwp_rl.config import ConfigError
from fwp_rl.runs import find_run_dirs, load_checkpoint, read_metrics
from fwp_rl.seeds import parse_seeds


def write_recall_config(tmp_path, core="lstm", wandb="disabled", total_steps=192):
    """A PPO config on fwp_rl/Recall-v0 of two tiny updates (4 envs x 24 steps), run root tmp_path/runs."""
    path = tmp_path / f"recall_{core}.yaml"
    path.write_text(f"learner: ppo\nname: recall_{core}\n"
                    "env: {id: fwp_rl/Recall-v0, num_envs: 4, options: {k: 3, delay: 5}}\n"
                    f"policy: {{torso: mlp, core: {core}, core_options: {{hidden_size: 16}}, dtype: float64}}\n"
                    f"ppo: {{total_steps: {total_steps}, num_steps: 24, sequence_length: 12, num_minibatches: 2, "
                    "update_epochs: 1, device: cpu}\n"
                    f"run: {{root: {str(tmp_path / 'runs')!r}, wandb: {wandb}}}\n")
    return path


def assert_w_and_b_mirrors_the_seed(run, run_dir, task, tags, resumed_id=None, records=None, config_changes=None):
    """A W&B run of the seed in ``run_dir`` as fwp_rl/seeds.py's docstring has it: named <group>/seed_<k>, in
    the group of the group directory's name, tagged with ``tags`` (learner, core, task), with the seed's config
    (and ``config_changes``, {section: {key: value}}, those of a resume) and the fields core and ``task``; that got
    exactly the records of its metrics.jsonl (or ``records``: those of a resume), keys, values and steps in order,
    and was finished."""
    init, group = run.init, run_dir.parent.name
    assert (init["mode"], init["dir"]) == ("offline", str(run_dir))
    assert (init["name"], init["group"], init["tags"]) == (f"{group}/{run_dir.name}", group, tags)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    for section, changes in (config_changes or {}).items():
        config[section].update(changes)
    assert init["config"] == {**config, "core": tags[1], "task": task}
    assert (init["id"], init["resume"]) == ((resumed_id, "allow") if resumed_id else (None, None))
    expected = read_metrics(run_dir / "metrics.jsonl") if records is None else records
    assert expected, "no records to compare"
    assert run.history() == expected
    assert run.finished


TAGS = ["ppo", "lstm", "fwp_rl/Recall-v0"]


def test_ppo_seeds_make_one_group_and_w_and_b_sees_it(tmp_path, wandb_runs):
    config = write_recall_config(tmp_path, wandb="offline")
    assert main(["train", str(config), "--seeds", "0,1"]) == 0
    group = tmp_path / "runs" / "recall_lstm"
    assert find_run_dirs(group) == [group / "seed_0", group / "seed_1"]
    for k in (0, 1):
        resolved = yaml.safe_load((group / f"seed_{k}" / "config.yaml").read_text())
        assert resolved["seed"] == k and resolved["name"] == f"seed_{k}"
        assert resolved["run"]["group"] == "recall_lstm" and resolved["run"]["root"] == str(group)
        assert [r["step"] for r in read_metrics(group / f"seed_{k}" / "metrics.jsonl")] == [96, 192]
    weights = [load_checkpoint(group / f"seed_{k}")["policy"] for k in (0, 1)]
    assert any(not torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    # W&B: one run per seed, in seed order, in the seed group's W&B group and named by it, each with what its own
    # metrics file holds (the seeds trained differently, so they logged apart).
    assert len(wandb_runs) == 2
    for k, run in enumerate(wandb_runs):
        assert_w_and_b_mirrors_the_seed(run, group / f"seed_{k}", "fwp_rl/Recall-v0", TAGS)
    assert wandb_runs[0].history() != wandb_runs[1].history()

    # A seed resumes like any run, its W&B run continued with the records after the checkpoint; a second call
    # makes a new group instead of mixing into this one.
    assert main(["train", "--resume", str(group / "seed_1"), "--set", "ppo.total_steps=288"]) == 0
    records = read_metrics(group / "seed_1" / "metrics.jsonl")
    assert [r["step"] for r in records] == [96, 192, 288]
    assert len(wandb_runs) == 3
    assert_w_and_b_mirrors_the_seed(wandb_runs[2], group / "seed_1", "fwp_rl/Recall-v0", TAGS,
                                    resumed_id=wandb_runs[1].id, records=records[2:],
                                    config_changes={"ppo": {"total_steps": 288}})
    assert main(["train", str(config), "--seeds", "3"]) == 0
    second = tmp_path / "runs" / "recall_lstm-2"
    assert find_run_dirs(second) == [second / "seed_3"]
    assert len(wandb_runs) == 4 and wandb_runs[3].init["name"] == "recall_lstm-2/seed_3"
    assert_w_and_b_mirrors_the_seed(wandb_runs[3], second / "seed_3", "fwp_rl/Recall-v0", TAGS)


def test_neuroevolution_seeds_make_one_group(tmp_path, wandb_runs):
    config = tmp_path / "cartpole.yaml"
    config.write_text("learner: neuroevolution\nname: cartpole\nenv: {id: CartPole-v1}\n"
                      "policy: {torso: identity, core: elman, core_options: {hidden_size: 3}}\n"
                      "search: {algorithm: snes, popsize: 6, max_generations: 2}\n"
                      f"run: {{root: {str(tmp_path / 'runs')!r}, wandb: offline}}\n")
    assert main(["train", str(config), "--seeds", "4,2"]) == 0
    group = tmp_path / "runs" / "cartpole"
    assert find_run_dirs(group) == [group / "seed_2", group / "seed_4"]
    for k in (2, 4):
        resolved = yaml.safe_load((group / f"seed_{k}" / "config.yaml").read_text())
        assert resolved["seed"] == k and resolved["run"]["group"] == "cartpole"
        assert [r["step"] for r in read_metrics(group / f"seed_{k}" / "metrics.jsonl")] == [6, 12]
    # W&B: the seeds in the order given, one record per generation each, as in its metrics file.
    assert len(wandb_runs) == 2
    for k, run in zip((4, 2), wandb_runs):
        assert_w_and_b_mirrors_the_seed(run, group / f"seed_{k}", "CartPole-v1",
                                        ["neuroevolution", "elman", "CartPole-v1"])
    assert wandb_runs[0].history() != wandb_runs[1].history()


def test_parallel_seeds_train_in_worker_processes(tmp_path, capsys):
    config = write_recall_config(tmp_path, core="delta", total_steps=96)
    assert main(["train", str(config), "--seeds", "0,1", "--parallel", "2"]) == 0
    group = tmp_path / "runs" / "recall_delta"
    assert find_run_dirs(group) == [group / "seed_0", group / "seed_1"]
    for k in (0, 1):
        assert load_checkpoint(group / f"seed_{k}")["update"] == 1
        assert yaml.safe_load((group / f"seed_{k}" / "config.yaml").read_text())["seed"] == k
    out = capsys.readouterr().out
    assert "in 2 worker processes" in out and "seed 0: finished" in out and "seed 1: finished" in out


@pytest.mark.parametrize("parallel", [[], ["--parallel", "2"]])
def test_a_seed_that_makes_a_nan_stops_the_group_naming_it(tmp_path, capsys, parallel):
    config = write_recall_config(tmp_path, core="delta", total_steps=96)
    assert main(["train", str(config), "--seeds", "4,5", *parallel, "--set", "ppo.learning_rate=1e10",
                 "--set", "policy.dtype=float32"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("fwp-rl: error: seed 4: update 1 of 1: the loss or its gradient is not finite") or \
        err.startswith("fwp-rl: error: seed 5: update 1 of 1: the loss or its gradient is not finite")


def test_a_stopped_seed_starts_no_other(tmp_path, monkeypatch, capsys):
    """Ctrl-C stops the seed under way (train_run reports it unfinished): the next seeds are not started."""
    trained = []

    def stopped_run(config, console=None):
        trained.append(config.seed)
        return tmp_path / "runs" / "recall_lstm" / config.name, False

    monkeypatch.setattr(seeds, "train_run", stopped_run)
    assert main(["train", str(write_recall_config(tmp_path)), "--seeds", "0,1,2"]) == 0
    assert trained == [0]
    out = capsys.readouterr().out
    assert "stopped early" in out and out.count("not started") == 2


def test_train_reports_lost_seeds_and_exits_1(tmp_path, monkeypatch, capsys):
    def lost_in_workers(configs, parallel, console):
        finished = seeds.SeedRun(configs[0].seed, tmp_path / "seed_0", finished=True)
        return [finished, seeds.SeedRun(configs[1].seed, None, finished=False, lost=True)]

    monkeypatch.setattr(seeds, "_train_in_workers", lost_in_workers)
    assert main(["train", str(write_recall_config(tmp_path)), "--seeds", "0,1,2", "--parallel", "2"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "lost: its worker process ended" in out and "not started" in out and "finished" in out
    assert "a worker process ended in the middle of a seed" in out


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "a,b"], "--seeds 'a,b' is not allowed: give at most 10,000 distinct integers from 0 to 1073741823"),
    (["--seeds", "0-1000000000"], "--seeds '0-1000000000' is not allowed: give at most 10,000"),
    (["--seeds", "0-5000,6000-12000"], "--seeds '0-5000,6000-12000' is not allowed"),
    (["--seeds", "0,0"], "--seeds '0,0' is not allowed"),
    (["--seeds", "-1"], "--seeds '-1' is not allowed"),
    (["--seeds", "0,1073741824"], "--seeds '0,1073741824' is not allowed"),
    (["--set", "seed=-1"], "seed=-1 is not allowed: it must be an integer from 0 to 1073741823"),
    (["--seeds", ""], "--seeds '' is not allowed"),
    (["--parallel", "2"], "--parallel N trains N of the --seeds at a time: give --seeds too"),
    (["--seeds", "0,1", "--parallel", "0"], "--parallel 0 is not allowed: it must be >= 1"),
    (["--seeds", "0,1", "--set", "seed=3"], "--set seed=... and --seeds both set the seed"),
])
def test_bad_seed_options_are_one_line_errors_and_write_nothing(tmp_path, capsys, argv, message):
    assert main(["train", str(write_recall_config(tmp_path)), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fwp-rl: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_seeds_with_resume_is_an_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--seeds", "0,1"]) == 2
    err = capsys.readouterr().err
    assert "--seeds starts new runs and --resume continues one" in err and err.count("\n") == 1


def test_a_config_that_fails_to_start_leaves_no_group_directory(tmp_path, capsys):
    config = write_recall_config(tmp_path)
    assert main(["train", str(config), "--seeds", "0,1", "--set", "policy.torso=nature_cnn"]) == 2
    err = capsys.readouterr().err
    assert "nature_cnn" in err and "Traceback" not in err
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("text, expected", [("0-13", list(range(14))), ("0-4,10,20-22", [0, 1, 2, 3, 4, 10, 20, 21, 22]),
                                         ("50-99,120-169", [*range(50, 100), *range(120, 170)]), ("7", [7]),
                                         ("3-3", [3])])
def test_seeds_take_ranges(text, expected):
    assert parse_seeds(text) == expected


@pytest.mark.parametrize("text", ["3-1", "1-", "-1", "1-2-3", "0-5,3", "a-b", "0,...,13", "", "0-10000"])
def test_bad_seed_ranges_are_refused(text):
    with pytest.raises(ConfigError, match="distinct integers from 0 to 1073741823 separated by commas, or ranges"):
        parse_seeds(text)
