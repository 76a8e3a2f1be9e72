"""The run harness (fwp_rl.harness) under every learner: a tiny config of each, trained through its registry entry,
makes the same run directory, logs its default metric at steps of its unit, checkpoints every run.checkpoint_every
updates (or generations) and at the end, and starts W&B in its group; Ctrl-C stops it after the update under way
with a checkpoint there; a resumed run goes on in its metrics and its W&B run; a bad config writes nothing. What a
run guards: a run stopped before its first checkpoint starts over on resume; a resume that changes more than its
learner allows, or whose metrics file is broken, is refused; the run directory is locked while a run writes it; a
resume removes what a kill left half written; metrics.jsonl is on disk before each checkpoint."""

import io
import json
import signal

import pytest
import yaml
from rich.console import Console

from fwp_rl import harness
from fwp_rl.config import ConfigError, to_dict
from fwp_rl.learners import LEARNERS, RESUMABLE, learner, load_config
from fwp_rl.runs import MetricsError, RunDirInUse, load_checkpoint, lock_run_dir, read_metrics

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

    def recorded(path, payload, previous):
        iterations.append(payload.get("update", payload.get("generation")))
        save(path, payload, previous)

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
    core, task = entry.core_of(to_dict(config)), entry.task(to_dict(config))
    assert (init["name"], init["dir"], init["group"]) == ("tiny", str(run_dir), "tiny")
    assert init["tags"] == [name, core, task]
    shown, folder = console.export_text(), run.settings.sync_dir
    assert f"run directory: {run_dir}" in shown
    assert f"W&B offline: {folder}; upload with: wandb sync {folder}\n" in shown


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


@pytest.mark.parametrize("name", RESUMABLE)
def test_a_run_stopped_before_its_first_checkpoint_starts_over_on_resume(tmp_path, name):
    two, three = TWO_THEN_THREE[name]
    run_dir = learner(name).train(tiny_config(tmp_path, name, two, "run.wandb=disabled")).run_dir
    for path in (run_dir / "checkpoints").iterdir():  # as a kill during the first checkpoint's write leaves it
        path.unlink()
    config, console = load_config(str(run_dir / "config.yaml"), [three]), wide_console()
    assert learner(name).train(config, resume=run_dir, console=console) == (run_dir, True)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == TINY[name][1]  # the records of the first start are dropped
    assert [r[ITERATION[name]] for r in records] == [1, 2, 3]
    assert load_checkpoint(run_dir)[ITERATION[name]] == 3
    assert f"{run_dir} was stopped before its first checkpoint: starting it over" in console.export_text()


@pytest.mark.parametrize("name, override", [("neuroevolution", "policy.torso=nature_cnn"),
                                            ("ppo", "policy.torso=nature_cnn"),
                                            ("sb3_recurrent_ppo", "policy=CnnLstmPolicy")])
def test_a_config_that_cannot_run_writes_nothing(tmp_path, wandb_runs, name, override):
    with pytest.raises(ConfigError, match="policy"):
        learner(name).train(tiny_config(tmp_path, name, override))
    assert not (tmp_path / "runs").exists() and wandb_runs == []


# ---------------------------------------------------------------------------------------------- what a run guards
def run_files(run_dir):
    """Every file of a run directory (W&B's own aside) and its bytes."""
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and "wandb" not in p.parts}


# Per resumable learner: the --set that gives its tiny run a budget of k updates (or generations), one that changes
# what it learns, and one of its device.
BUDGET = {"ppo": "ppo.total_steps=%d", "sb3_recurrent_ppo": "ppo.total_steps=%d",
          "neuroevolution": "search.max_generations=%d"}
PER_ITERATION = {"ppo": 96, "sb3_recurrent_ppo": 96, "neuroevolution": 1}
LEARNED = {"ppo": ("ppo.gamma=0.9", "ppo.gamma 0.99 -> 0.9"),
           "sb3_recurrent_ppo": ("ppo.gamma=0.9", "ppo.gamma 0.99 -> 0.9"),
           "neuroevolution": ("search.stdev_init=0.9", "search.stdev_init 0.5 -> 0.9")}
DEVICE = {"ppo": "ppo.device=cpu", "sb3_recurrent_ppo": "ppo.device=cpu", "neuroevolution": "search.device=cpu"}


def budget(name, iterations):
    return BUDGET[name] % (iterations * PER_ITERATION[name])


@pytest.mark.parametrize("name", RESUMABLE)
def test_a_resume_that_changes_what_is_learned_is_refused_with_the_change_and_writes_nothing(tmp_path, name):
    run_dir = learner(name).train(tiny_config(tmp_path, name, budget(name, 2))).run_dir
    before = run_files(run_dir)
    override, change = LEARNED[name]
    changed = tiny_config(tmp_path, name, budget(name, 3), override, "seed=3")
    with pytest.raises(ConfigError) as error:
        learner(name).train(changed, resume=run_dir)
    assert str(error.value) == (f"--resume {run_dir}: the config differs from the checkpoint's: seed 0 -> 3, {change}; "
                                f"only {', '.join(learner(name).resume_may_change)} may change on resume")
    assert run_files(run_dir) == before


@pytest.mark.parametrize("name", RESUMABLE)
def test_a_resume_may_change_the_budget_and_run_settings_and_config_yaml_keeps_them(tmp_path, name, saved):
    run_dir = learner(name).train(tiny_config(tmp_path, name, budget(name, 1))).run_dir
    config = load_config(str(run_dir / "config.yaml"), [budget(name, 4), "run.checkpoint_every=1",
                                                        "run.wandb=disabled", DEVICE[name]])
    assert learner(name).train(config, resume=run_dir) == (run_dir, True)
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == to_dict(config)
    assert load_checkpoint(run_dir)["config"] == to_dict(config)
    assert saved[:4] == [1, 2, 3, 4]  # the first run's end, then every update as run.checkpoint_every now says


def test_the_run_directory_is_locked_while_the_run_writes_it_and_free_after_even_after_an_error(tmp_path, monkeypatch):
    log, seen = harness.Run.log, []

    def log_and_try_the_lock(run, step, **figures):
        log(run, step, **figures)
        with pytest.raises(RunDirInUse, match="another process .* is training it"):
            with lock_run_dir(run.run_dir):
                pass
        seen.append(run.iterations)
        if run.iterations == 3:
            raise RuntimeError("a bug in update 3")

    monkeypatch.setattr(harness.Run, "log", log_and_try_the_lock)
    with pytest.raises(RuntimeError, match="a bug in update 3"):
        learner("ppo").train(tiny_config(tmp_path, "ppo", "run.wandb=disabled"))
    assert seen == [1, 2, 3]
    with lock_run_dir(tmp_path / "runs" / "tiny"):  # released by the error
        pass
    run_dir = tmp_path / "runs" / "tiny"
    with lock_run_dir(run_dir):  # another process trains it: a resume stops before it builds anything
        with pytest.raises(RunDirInUse, match=f"'{run_dir}' is in use: another process"):
            learner("ppo").train(load_config(str(run_dir / "config.yaml"), []), resume=run_dir)


def test_a_resume_removes_the_temporary_files_that_a_kill_left_and_nothing_else(tmp_path):
    run_dir = learner("ppo").train(tiny_config(tmp_path, "ppo", "ppo.total_steps=192", "run.wandb=disabled")).run_dir
    checkpoints = run_dir / "checkpoints"
    leftovers = [checkpoints / ".latest.pt.0123456789ab.tmp.pt", checkpoints / ".step_2.pt.0a0a0a0a0a0a.tmp.pt",
                 run_dir / ".config.yaml.a1b2c3d4e5f6.tmp.yaml", run_dir / ".metrics.jsonl.0123456789ab.tmp.jsonl"]
    kept = [checkpoints / ".latest.pt.eval.json.0123456789ab.tmp.json",  # an evaluate's, under way
            checkpoints / "notes.tmp.pt", run_dir / ".latest.pt.0123456789ab.tmp.pt"]
    for path in leftovers + kept:
        path.write_bytes(b"\x80half a file")
    console = wide_console()
    config = load_config(str(run_dir / "config.yaml"), ["ppo.total_steps=288"])
    assert learner("ppo").train(config, resume=run_dir, console=console) == (run_dir, True)
    assert [p for p in leftovers if p.exists()] == [] and all(p.exists() for p in kept)
    assert "removed what writes cut short left: " in console.export_text()


def test_every_update_a_checkpoint_covers_is_on_disk_in_metrics_jsonl_first(tmp_path, monkeypatch):
    """Before each checkpoint, metrics.jsonl is flushed and fsynced: what it holds then covers the checkpoint."""
    import os

    from fwp_rl import runs

    events, fsync, save = [], os.fsync, harness.save_checkpoint

    def recorded_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recorded_save(path, payload, previous):
        events.append(("save", payload["update"], len(read_metrics(path.parent.parent / "metrics.jsonl"))))
        save(path, payload, previous)

    monkeypatch.setattr(runs.os, "fsync", recorded_fsync)
    monkeypatch.setattr(harness, "save_checkpoint", recorded_save)
    run_dir = learner("ppo").train(tiny_config(tmp_path, "ppo", "run.wandb=disabled")).run_dir
    metrics = str(run_dir / "metrics.jsonl")
    saves = [i for i, e in enumerate(events) if e[0] == "save"]
    assert [events[i] for i in saves] == [("save", 2, 2), ("save", 3, 3)]
    assert all(events[i - 1] == ("fsync", metrics) for i in saves)


def test_a_resume_with_a_broken_metrics_file_is_refused_naming_the_line_and_writes_nothing(tmp_path):
    run_dir = learner("ppo").train(tiny_config(tmp_path, "ppo", "ppo.total_steps=192", "run.wandb=disabled")).run_dir
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    before = run_files(run_dir)
    with pytest.raises(MetricsError, match=f"'{run_dir / 'metrics.jsonl'}' line 2 is not JSON"):
        learner("ppo").train(load_config(str(run_dir / "config.yaml"), ["ppo.total_steps=288"]), resume=run_dir)
    assert run_files(run_dir) == before
