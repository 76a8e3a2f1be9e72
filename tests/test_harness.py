"""The run harness (fwp_rl.harness) under every learner: a tiny config of each, trained through its registry entry,
makes the same run directory, logs its default metric at steps of its unit, checkpoints every run.checkpoint_every
updates (or generations) and at the end, and starts W&B in its group; Ctrl-C stops it after the update under way
with a checkpoint there; a resumed run goes on in its metrics and its W&B run; a bad config writes nothing."""

import io
import json
import signal

import pytest
import yaml
from rich.console import Console

from fwp_rl import harness
from fwp_rl.config import ConfigError, to_dict
from fwp_rl.learners import LEARNERS, RESUMABLE, learner, load_config
from fwp_rl.runs import load_checkpoint, read_metrics

RECALL = "env: {id: fwp_rl/Recall-v0, num_envs: 4, options: {k: 3, delay: 5}}\n"
PPO = "ppo: {total_steps: 288, num_steps: 24, num_minibatches: 2, update_epochs: 1, device: cpu}\n"
# Each learner's tiny config of 3 updates (or generations), and the steps of its metrics records.
TINY = {
    "neuroevolution": ("env: {id: CartPole-v1}\n"
                       "policy: {torso: identity, core: elman, core_options: {hidden_size: 3}}\n"
                       "search: {algorithm: snes, popsize: 6, max_generations: 3}\n", [6, 12, 18]),
    "ppo": (RECALL + "policy: {torso: mlp, core: lstm, core_options: {hidden_size: 8}}\n" + PPO, [96, 192, 288]),
    "sb3_recurrent_ppo": (RECALL + "policy: MlpLstmPolicy\npolicy_kwargs: {lstm_hidden_size: 8}\n" + PPO,
                          [96, 192, 288]),
}
ITERATION = {"neuroevolution": "generation", "ppo": "update", "sb3_recurrent_ppo": "update"}
# Each learner's overrides that end its tiny run after 2 updates (or generations), and after 3.
TWO_THEN_THREE = {"neuroevolution": ("search.max_generations=2", "search.max_generations=3"),
                  "ppo": ("ppo.total_steps=192", "ppo.total_steps=288"),
                  "sb3_recurrent_ppo": ("ppo.total_steps=192", "ppo.total_steps=288")}


def tiny_config(tmp_path, name, *overrides):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"learner: {name}\nname: tiny\n{TINY[name][0]}"
                    f"run: {{root: {str(tmp_path / 'runs')!r}, wandb: offline, checkpoint_every: 2}}\n")
    return load_config(str(path), list(overrides))


def wide_console():
    return Console(file=io.StringIO(), record=True, width=400)  # the lines as printed, run directories unwrapped


@pytest.fixture
def saved(monkeypatch):
    """The update (or generation) of every checkpoint the harness writes."""
    save, iterations = harness.save_checkpoint, []

    def recorded(path, payload):
        iterations.append(payload.get("update", payload.get("generation")))
        save(path, payload)

    monkeypatch.setattr(harness, "save_checkpoint", recorded)
    return iterations


def test_the_registry_has_a_tiny_config_of_every_learner():
    assert set(TINY) == set(ITERATION) == set(LEARNERS)


@pytest.mark.parametrize("name", LEARNERS)
def test_each_learner_trains_a_tiny_run_through_the_harness(tmp_path, name, wandb_runs, saved):
    config, console = tiny_config(tmp_path, name), wide_console()
    entry = learner(name)
    run_dir = tmp_path / "runs" / "tiny"
    assert entry.train(config, console=console) == (run_dir, True)
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == to_dict(config)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == TINY[name][1]
    assert [r[ITERATION[name]] for r in records] == [1, 2, 3]
    assert any(entry.default_metric in r for r in records)
    assert saved == [2, 3]  # every 2, and the end
    payload = load_checkpoint(run_dir)
    assert (payload["learner"], payload["config"], payload["wandb_id"]) == (name, to_dict(config), wandb_runs[0].id)
    (run,) = wandb_runs
    init = run.init
    assert (init["name"], init["dir"], init["group"]) == ("tiny", str(run_dir), entry.wandb_group(to_dict(config)))
    assert f"run directory: {run_dir}" in console.export_text()


# SB3 reports an update as the next rollout starts: a Ctrl-C while update 1 is logged comes in update 2.
@pytest.mark.parametrize("name, stopped_after", [("neuroevolution", 1), ("ppo", 1), ("sb3_recurrent_ppo", 2)])
def test_ctrl_c_stops_each_learner_after_the_update_under_way_with_a_checkpoint(tmp_path, monkeypatch, saved, name,
                                                                                  stopped_after):
    log = harness.Run.log

    def log_then_ctrl_c(run, step, **figures):
        log(run, step, **figures)
        if run.iterations == 1:
            signal.raise_signal(signal.SIGINT)  # as from the terminal

    monkeypatch.setattr(harness.Run, "log", log_then_ctrl_c)
    run_dir, console = tmp_path / "runs" / "tiny", wide_console()
    config = tiny_config(tmp_path, name, "run.wandb=disabled")
    assert learner(name).train(config, console=console) == (run_dir, False)
    assert len(read_metrics(run_dir / "metrics.jsonl")) == stopped_after
    assert saved[-1] == load_checkpoint(run_dir)[ITERATION[name]] == stopped_after
    assert f"stopping after this {ITERATION[name]} (Ctrl-C again to stop at once)" in console.export_text()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("name", RESUMABLE)
def test_a_resumed_run_goes_on_in_its_metrics_and_its_w_and_b_run(tmp_path, name, wandb_runs):
    two, three = TWO_THEN_THREE[name]
    steps, iteration = TINY[name][1], ITERATION[name]
    run_dir = learner(name).train(tiny_config(tmp_path, name, two)).run_dir
    left = {"step": steps[2], iteration: 3}  # a record after the checkpoint, left by a crash
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(left) + "\n")
    config = load_config(str(run_dir / "config.yaml"), [three])
    console = wide_console()
    assert learner(name).train(config, resume=run_dir, console=console) == (run_dir, True)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == steps and records[-1] != left  # logged again
    assert (wandb_runs[1].init["id"], wandb_runs[1].init["resume"]) == (wandb_runs[0].id, "allow")
    assert f"resuming {run_dir} at {iteration} 2, step {steps[1]}" in console.export_text()


@pytest.mark.parametrize("name, override", [("neuroevolution", "policy.torso=nature_cnn"),
                                            ("ppo", "policy.torso=nature_cnn"),
                                            ("sb3_recurrent_ppo", "policy=CnnLstmPolicy")])
def test_a_config_that_cannot_run_writes_nothing(tmp_path, wandb_runs, name, override):
    with pytest.raises(ConfigError, match="policy"):
        learner(name).train(tiny_config(tmp_path, name, override))
    assert not (tmp_path / "runs").exists() and wandb_runs == []
