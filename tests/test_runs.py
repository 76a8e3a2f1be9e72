"""Run directories: checkpoints written whole, metrics that survive an interruption, fresh run names, and the W&B
mirror of each learner's metrics file."""

import json
import os

import pytest
import torch
import yaml

from fwp_rl.cli import main
from conftest import wandb_offline_records
from fwp_rl.runs import (CheckpointError, MetricsError, MetricsLog, NonFiniteError, RunDirInUse, load_checkpoint,
                         lock_run_dir, read_metrics, save_checkpoint, unique_run_dir)


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


@pytest.mark.parametrize("text, line, what", [
    ('{"step": 1}\n{"step": 2, "ret"\n{"step": 3}\n', 2, "is not JSON"),  # cut short, then written after
    ('{"step": 1}\n{"step": 2, "ret"\n', 2, "is not JSON"),  # a whole line (it ends in a newline) that is not JSON
    ('{"step": 1}\n[1, 2]\n', 2, "is a JSON array"),
    ('{"step": 1}\n{"ret": 1.5}\n', 2, "has no integer 'step'"),
    ('{"step": "1"}\n', 1, "has no integer 'step'"),
    ('{"step": 1}\n\n7\n{"step": 2}', 3, "is a number"),
])
def test_a_line_that_is_not_a_record_is_an_error_naming_the_file_and_the_line(tmp_path, text, line, what):
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    with pytest.raises(MetricsError) as error:
        read_metrics(path)
    message = str(error.value)
    assert message.startswith(f"{str(path)!r} line {line} {what}") and "\n" not in message


def test_only_a_last_line_without_its_newline_counts_as_cut_short(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}')  # blank lines are nothing; a whole last line without "\n" is kept
    assert read_metrics(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n\x00\x00\x00')  # what a crash can leave at the end of a file
    assert read_metrics(path) == [{"step": 1}]


def test_sync_puts_the_records_on_disk(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), fsync(fd)))
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.log(1, ret=1.0)
    log.sync()
    assert synced == [str(tmp_path / "metrics.jsonl")] and read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 1, "ret": 1.0}]
    log.close()


def test_the_lock_of_a_run_directory_is_held_by_one_at_a_time_and_released_however_the_block_ends(tmp_path):
    with lock_run_dir(tmp_path):
        with pytest.raises(RunDirInUse, match=rf"'{tmp_path}' is in use: another process \(pid {os.getpid()}\) is "
                                              "training it"):
            with lock_run_dir(tmp_path):
                pass
    with pytest.raises(RuntimeError):
        with lock_run_dir(tmp_path):
            raise RuntimeError
    with lock_run_dir(tmp_path):  # free again
        pass


def test_the_lock_of_a_killed_process_goes_with_it(tmp_path):
    import subprocess
    import sys

    code = ("import sys, time\nfrom fwp_rl.runs import lock_run_dir\nwith lock_run_dir(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        with pytest.raises(RunDirInUse, match=f"another process \\(pid {child.pid}\\)"):
            with lock_run_dir(tmp_path):
                pass
    finally:
        child.kill()
        child.wait()
    with lock_run_dir(tmp_path):  # kill -9 left the file, not the lock
        pass


# ---------------------------------------------------------------------------------------------- the W&B mirror
RECALL_ENV = "env: {id: fwp_rl/Recall-v0, num_envs: 2, options: {k: 3, delay: 2}}\n"
PPO_STEPS = "{total_steps: %d, num_steps: 24, sequence_length: 12, num_minibatches: 2, update_epochs: 1, device: cpu}"


def write_yaml(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text + f"run: {{root: {str(tmp_path / 'runs')!r}, wandb: offline}}\n")
    return path


def assert_mirrors(run, run_dir, records, core, task, resumed_id=None, config_changes=None):
    """A W&B run started for ``run_dir`` in the group of its config's name, tagged with its learner, ``core`` and
    ``task``, with the run's config (and ``config_changes``, {section: {key: value}}, those of a resume) and the fields
    core and task, that got exactly ``records`` (keys, values and steps, in order) and was finished."""
    init = run.init
    assert (init["mode"], init["project"], init["entity"], init["dir"], init["name"], init["job_type"]) == (
        "offline", "fwp-rl", None, str(run_dir), run_dir.name, "train")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (init["group"], init["tags"]) == (config["name"], [config["learner"], core, task])
    for section, changes in (config_changes or {}).items():
        config[section].update(changes)
    assert init["config"] == {**config, "core": core, "task": task}
    assert (init["id"], init["resume"]) == ((resumed_id, "allow") if resumed_id else (None, None))
    assert run.history() == records and run.finished


def test_a_ppo_run_logs_to_w_and_b_what_its_metrics_file_holds(tmp_path, wandb_runs):
    """Every record of metrics.jsonl goes to W&B at its step, with the same keys and values, and a resumed run
    continues the same W&B run with the records after its checkpoint."""
    config = write_yaml(tmp_path, "learner: ppo\nname: recall\n" + RECALL_ENV +
                        "policy: {torso: mlp, core: lstm, core_options: {hidden_size: 8}}\n"
                        f"ppo: {PPO_STEPS % 96}\n")
    assert main(["train", str(config)]) == 0
    run_dir = tmp_path / "runs" / "recall"
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [48, 96] and "policy_loss" in records[0]
    (first,) = wandb_runs
    assert_mirrors(first, run_dir, records, "lstm", "fwp_rl/Recall-v0")

    assert main(["train", "--resume", str(run_dir), "--set", "ppo.total_steps=144"]) == 0
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [48, 96, 144]
    assert_mirrors(wandb_runs[1], run_dir, records[2:], "lstm", "fwp_rl/Recall-v0", resumed_id=first.id,
                   config_changes={"ppo": {"total_steps": 144}})


def test_a_neuroevolution_run_logs_to_w_and_b_what_its_metrics_file_holds(tmp_path, wandb_runs):
    """One record per generation, at its count of evaluations, in W&B as in metrics.jsonl."""
    config = write_yaml(tmp_path, "learner: neuroevolution\nname: tiny\nenv: {options: {task: nonmarkov}}\n"
                        "policy: {torso: identity, action_squash: true, core: direct,\n"
                        "         core_options: {hidden_size: 1, slow_size: 2}}\n"
                        "search: {algorithm: snes, popsize: 6, max_generations: 3}\n")
    assert main(["train", str(config), "--set", "seed=1"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [(r["step"], r["generation"]) for r in records] == [(6, 1), (12, 2), (18, 3)] and "best" in records[0]
    (run,) = wandb_runs
    assert_mirrors(run, run_dir, records, "direct", "double_pole-nonmarkov")


def test_an_sb3_run_logs_to_w_and_b_what_its_metrics_file_holds(tmp_path, wandb_runs):
    """sb3-contrib's RecurrentPPO: each update's record in W&B as in metrics.jsonl."""
    config = write_yaml(tmp_path, "learner: sb3_recurrent_ppo\nname: sb3\nseed: 3\n" + RECALL_ENV +
                        "policy: MlpLstmPolicy\npolicy_kwargs: {lstm_hidden_size: 8}\n"
                        "ppo: {total_steps: 48, num_steps: 24, num_minibatches: 2, device: cpu}\n")
    assert main(["train", str(config)]) == 0
    run_dir = tmp_path / "runs" / "sb3"
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [48] and "policy_loss" in records[0]
    (run,) = wandb_runs
    assert_mirrors(run, run_dir, records, "sb3_lstm", "fwp_rl/Recall-v0")


def offline_run(folder):
    """What the offline W&B files of the run directory ``folder`` hold: its run record (group, tags, config, ...) and
    its history as metrics records ({"step": step, **values}, with the values W&B keeps)."""
    records = wandb_offline_records(folder)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    history = [{"step": r.history.step.num, **{key: json.loads(i.value_json) for i in r.history.item
                                              if not (key := i.key or "/".join(i.nested_key)).startswith("_")}}
               for r in records if r.WhichOneof("record_type") == "history"]
    return run, {i.key: json.loads(i.value_json) for i in run.config.update}, history


def test_w_and_b_files_each_experiment_in_its_own_group(tmp_path, capsys, wandb_offline):
    """Read back from the offline files: a run of our delta core and one of the SB3 baseline on the same task each sit
    in their config's group, carry their learner, core and task as config fields and tags (SB3's core is sb3_lstm,
    not our lstm), run.tags and run.entity too; each logs its metrics file, and tells where it wrote and how to
    upload it."""
    delta = write_yaml(tmp_path, "learner: ppo\nname: recall_delta\nseed: 4\n" + RECALL_ENV +
                       "policy: {torso: mlp, core: delta, core_options: {hidden_size: 8}}\n"
                       f"ppo: {PPO_STEPS % 96}\n")
    assert main(["train", str(delta), "--set", "run.tags=[sweep, small]", "--set", "run.entity=my-team"]) == 0
    baseline = write_yaml(tmp_path, "learner: sb3_recurrent_ppo\nname: recall_sb3\n" + RECALL_ENV +
                          "policy: MlpLstmPolicy\npolicy_kwargs: {lstm_hidden_size: 8}\n"
                          "ppo: {total_steps: 48, num_steps: 24, num_minibatches: 2, device: cpu}\n")
    assert main(["train", str(baseline)]) == 0
    printed = capsys.readouterr().out
    expected = {"recall_delta": ("ppo", "delta", 4, ["ppo", "delta", "fwp_rl/Recall-v0", "sweep", "small"], "my-team"),
                "recall_sb3": ("sb3_recurrent_ppo", "sb3_lstm", 0,
                               ["sb3_recurrent_ppo", "sb3_lstm", "fwp_rl/Recall-v0"], "")}
    for name, (learner_name, core, seed, tags, entity) in expected.items():
        run_dir = tmp_path / "runs" / name
        run, config, history = offline_run(run_dir)
        assert (run.run_group, run.display_name, run.job_type, run.project, run.entity) == (
            name, name, "train", "fwp-rl", entity)
        assert list(run.tags) == tags
        assert {k: config[k] for k in ("learner", "core", "task", "seed", "name")} == {
            "learner": learner_name, "core": core, "task": "fwp_rl/Recall-v0", "seed": seed, "name": name}
        assert config["run"] == yaml.safe_load((run_dir / "config.yaml").read_text())["run"]
        assert history == read_metrics(run_dir / "metrics.jsonl")
        (folder,) = run_dir.glob("wandb/offline-run-*")
        assert f"W&B offline: {folder}; upload with: wandb sync {folder}\n" in printed


def tensorboard_records(folder):
    """The scalars of TensorBoard's event files in ``folder`` as metrics records, {"step": step, **values}, by step
    (TensorBoard's reader applies a resume's purge)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: every event, none sampled away
    events.Reload()
    by_step: dict[int, dict] = {}
    for key in events.Tags()["scalars"]:
        steps = [event.step for event in events.Scalars(key)]
        assert steps == sorted(set(steps)), f"{key} has a step twice, or out of order: {steps}"
        for event in events.Scalars(key):
            by_step.setdefault(event.step, {"step": event.step})[key] = event.value
    return [by_step[step] for step in sorted(by_step)]


def numbers(records):
    """The records with the values TensorBoard keeps: numbers, as 32-bit floats; no nulls."""
    return [{k: v if k == "step" else pytest.approx(v, rel=1e-6) for k, v in r.items() if v is not None}
            for r in records]


def test_tensorboard_gets_the_scalars_of_metrics_jsonl_and_a_resume_drops_what_it_drops(tmp_path):
    path, folder = tmp_path / "metrics.jsonl", tmp_path / "tensorboard"
    log = MetricsLog(path, tensorboard=folder)
    for step in (10, 20, 30):
        log.log(step, loss=step / 7, update=step // 10, broken=float("nan") if step == 20 else 1.0)
    log.close()
    assert tensorboard_records(folder) == numbers(read_metrics(path))
    assert [set(r) for r in tensorboard_records(folder)] == [{"step", "loss", "update", "broken"}, {"step", "loss",
                                                             "update"}, {"step", "loss", "update", "broken"}]
    # a resume from the checkpoint of step 20: step 30 is logged again, with other values, and once
    log = MetricsLog(path, keep_until=20, tensorboard=folder)
    log.log(30, loss=-1.0, update=3, broken=2.0)
    log.log(40, loss=-2.0, update=4, broken=2.0)
    log.close()
    records = read_metrics(path)
    assert [r["step"] for r in records] == [10, 20, 30, 40] and records[2]["loss"] == -1.0
    assert tensorboard_records(folder) == numbers(records)


def test_a_run_with_run_tensorboard_writes_its_metrics_there(tmp_path, wandb_runs):
    """run.tensorboard: runs/<name>/tensorboard/ holds every number of metrics.jsonl at its step; off by default."""
    config = write_yaml(tmp_path, "learner: ppo\nname: recall\n" + RECALL_ENV +
                        "policy: {torso: mlp, core: lstm, core_options: {hidden_size: 8}}\n"
                        f"ppo: {PPO_STEPS % 96}\n")
    assert main(["train", str(config), "--set", "run.tensorboard=true"]) == 0
    run_dir = tmp_path / "runs" / "recall"
    records = read_metrics(run_dir / "metrics.jsonl")
    assert len(records) == 2 and "policy_loss" in records[0]
    assert tensorboard_records(run_dir / "tensorboard") == numbers(records)
    assert main(["train", str(config), "--set", "run.wandb=disabled"]) == 0
    assert not (tmp_path / "runs" / "recall-2" / "tensorboard").exists()


def test_a_disabled_run_starts_no_w_and_b_run(tmp_path, wandb_runs):
    """run.wandb=disabled: no W&B run, the metrics file all the same."""
    config = write_yaml(tmp_path, "learner: ppo\nname: recall\n" + RECALL_ENV +
                        "policy: {torso: mlp, core: lstm, core_options: {hidden_size: 8}}\n"
                        f"ppo: {PPO_STEPS % 48}\n")
    assert main(["train", str(config), "--set", "run.wandb=disabled"]) == 0
    assert wandb_runs == [] and len(read_metrics(tmp_path / "runs" / "recall" / "metrics.jsonl")) == 1


# ---------------------------------------------------------------------------------------------- safe checkpoints
class Payload:
    """What a crafted checkpoint holds: unpickling it would run open(marker, "w"), which makes the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_checkpoint_runs_nothing_and_is_named(tmp_path, capsys):
    run_dir = ppo_run(tmp_path)
    latest, marker = run_dir / "checkpoints" / "latest.pt", tmp_path / "ran"
    payload = torch.load(latest, weights_only=True)
    torch.save({**payload, "policy": Payload(marker)}, latest)
    for argv in (["evaluate", str(run_dir)], ["evaluate", str(latest)], ["train", "--resume", str(run_dir)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{str(latest)!r} holds io.open, which loading would run code to rebuild: refused" in err
        assert not marker.exists()
    torch.load(latest, weights_only=False)  # what loading it as fwp-rl did before would have done
    assert marker.exists()


def test_a_checkpoint_with_nan_or_inf_is_not_written(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"policy": {"w": torch.ones(2)}, "step": 1})
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteError, match=r"the checkpoint\['optimizer'\]\['state'\]\[0\] holds nan or inf"):
            save_checkpoint(path, {"policy": {"w": torch.ones(2)}, "optimizer": {"state": [torch.tensor([1.0, bad])]}})
    save_checkpoint(path, {"counts": torch.arange(3), "policy": {"w": torch.zeros(2)}})  # integer tensors pass
    assert sorted(os.listdir(tmp_path)) == ["latest.pt"]


def test_the_run_keeps_the_checkpoint_that_latest_replaced(tmp_path):
    run_dir = ppo_run(tmp_path, updates=3)
    checkpoints = run_dir / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["latest.pt", "previous.pt"]
    assert load_checkpoint(checkpoints / "latest.pt")["update"] == 3
    assert load_checkpoint(checkpoints / "previous.pt")["update"] == 2


def ppo_run(tmp_path, updates=1):
    path = tmp_path / "ppo.yaml"
    path.write_text(f"learner: ppo\nname: safe\n{RECALL_ENV}policy: {{torso: mlp, core: delta}}\n"
                    f"ppo: {PPO_STEPS % (48 * updates)}\n"
                    f"run: {{root: {str(tmp_path / 'runs')!r}, wandb: disabled, checkpoint_every: 1}}\n")
    assert main(["train", str(path)]) == 0
    return tmp_path / "runs" / "safe"
