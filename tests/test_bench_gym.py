"""``fwp-rl bench gym``: the success table's figures against the runs, held-out returns on episodes the search never
saw, the steps/s comparison with EvoTorch's VecGymNE, the env steps the generic path counts, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from fwp_rl.agents import neuroevolution as ne
from fwp_rl.bench import gym_evolution as bench
from fwp_rl.cli import main
from fwp_rl.config import ConfigError, PolicyConfig, RunConfig

# CartPole's return is its episode's length: a target of 30 is reached within a few generations of 8 candidates.
CARTPOLE = {"learner": "neuroevolution", "name": "tiny_cartpole", "env": {"id": "CartPole-v1", "episodes": 2},
            "policy": {"torso": "identity", "core": "lstm", "core_options": {"hidden_size": 2}},
            "search": {"algorithm": "cmaes", "popsize": 8, "max_evaluations": 400, "target": 30}}


def write_config(tmp_path, name: str, data: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_success_rows_summarize_the_runs_and_held_out_returns_replay_the_kept_controller(tmp_path):
    path = write_config(tmp_path, "cartpole", CARTPOLE)
    runs = bench.bench_gym([path], seeds=2, held_out_episodes=3)
    assert [r.seed for r in runs] == [0, 1] and all(r.solved for r in runs)
    assert all(r.evaluations % 8 == 0 and 0 < r.evaluations <= 400 for r in runs)
    [row] = bench.summarize_gym(runs)
    assert (row["runs"], row["solved"], row["target"], row["env_id"]) == (2, 2, 30, "CartPole-v1")
    assert row["mean_evaluations"] == np.mean([r.evaluations for r in runs])
    assert row["held_out_mean"] == np.mean([r.held_out_return for r in runs])
    assert row["controller"] == runs[0].controller and row["controller"].startswith("lstm, ")
    # the held-out return is that of the run's kept controller on the held-out seeds, and the search never drew them
    config = bench.load_gym_config(path, 1)
    evolution = ne.Evolution(config)
    while not evolution.done:
        evolution.step()
    evolution.finish()
    episodes, _ = evolution.play(1 + bench.EVAL_SEED_OFFSET, 3, deterministic=True)
    assert runs[1].held_out_return == np.mean([e.raw_return for e in episodes])


def test_a_run_that_misses_its_target_counts_as_not_reached(tmp_path):
    path = write_config(tmp_path, "unreachable", CARTPOLE | {"search": CARTPOLE["search"] | {"target": 10_000}})
    [run] = bench.bench_gym([path], seeds=1, max_evaluations=16, held_out_episodes=1)
    assert not run.solved and run.evaluations == 16
    [row] = bench.summarize_gym([run])
    assert (row["solved"], row["mean_evaluations"], row["held_out_above_target"]) == (0, None, 0)


def test_gym_problem_counts_the_env_steps_of_the_counted_episodes():
    config = ne.NeuroevolutionConfig(
        name="t", env=ne.EnvConfig(id="CartPole-v1", episodes=3),
        policy=PolicyConfig(torso="identity", core="elman", core_options={"hidden_size": 2}),
        search=ne.SearchConfig(popsize=5, target=1.0), run=RunConfig(wandb="disabled"))
    policy = ne.make_policy(config)
    problem = ne.GymProblem(policy, "CartPole-v1", {}, 3, config.search, 0)
    batch = problem.generate_batch(5)
    problem.evaluate(batch)
    # CartPole pays 1 a step: the steps of a candidate's 3 episodes are 3 times its mean return
    assert problem.env_steps == round(3 * float(batch.evals[:, 0].sum())) > 0


def test_throughput_compares_every_config_with_vecgymne_on_its_task(tmp_path):
    paths = [write_config(tmp_path, "a", CARTPOLE),
             write_config(tmp_path, "b", CARTPOLE | {"policy": {"torso": "identity", "core": "delta",
                                                                "core_options": {"hidden_size": 4, "num_heads": 1}}})]
    rows = bench.bench_gym_throughput(paths, popsize=4, repeats=1)
    assert [r["side"] for r in rows] == ["fwp-rl a", "fwp-rl b", "EvoTorch VecGymNE"]
    assert all(r["steps"] >= 4 * 8 and r["steps_per_second"] > 0 for r in rows)  # CartPole lasts >= 8 steps
    vecgymne = rows[-1]
    assert vecgymne["vs_vecgymne"] == 1.0 and "LSTM(obs, 2)" in vecgymne["network"]  # the lstm config's size
    assert vecgymne["weights"] == rows[0]["weights"]  # EvoTorch's LSTM of 2 units and ours: the same weights
    assert rows[1]["vs_vecgymne"] == rows[1]["steps_per_second"] / vecgymne["steps_per_second"]


def test_the_command_prints_both_tables_and_writes_the_json(tmp_path, capsys):
    path = write_config(tmp_path, "cartpole", CARTPOLE)
    out = tmp_path / "gym.json"
    assert main(["bench", "gym", "--configs", path, "--seeds", "1", "--held-out-episodes", "2", "--popsize", "4",
                 "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fwp-rl bench gym: seeds 0 to 0" in printed and "Env steps per second" in printed
    figures = json.loads(out.read_text())
    assert len(figures["runs"]) == 1 and figures["rows"][0]["runs"] == 1 and len(figures["throughput"]) == 2


@pytest.mark.parametrize("change, expected", [
    ({"env": {"id": "double_pole"}, "search": {"algorithm": "cmaes", "target": None}}, "env.id: 'double_pole'"),
    ({"search": {"algorithm": "cmaes"}}, "no search.target"),
    ({"learner": "ppo", "env": {"id": "CartPole-v1"}, "search": None}, "learner: ppo"),
])
def test_configs_that_are_not_gym_neuroevolution_configs_are_refused(tmp_path, change, expected):
    data = {k: v for k, v in (CARTPOLE | change).items() if v is not None}
    if data["learner"] == "ppo":
        data.pop("policy")
    path = write_config(tmp_path, "wrong", data)
    with pytest.raises(ConfigError, match="is not a neuroevolution config of a Gymnasium id") as e:
        bench.load_gym_config(path, 0)
    assert expected in str(e.value)


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    path = write_config(tmp_path, "cartpole", CARTPOLE)
    for argv, expected in ((["--seeds", "0"], "--seeds 0 is not allowed"),
                           (["--held-out-episodes", "0"], "--held-out-episodes 0 is not allowed"),
                           (["--configs", str(tmp_path / "missing.yaml")], "does not exist")):
        args = ["bench", "gym", "--only", "success", *(["--configs", path] if "--configs" not in argv else []), *argv]
        assert main(args) == 2
        assert expected in capsys.readouterr().err


def test_default_configs_reach_for_their_targets_with_a_fast_weight_and_an_lstm_controller():
    configs = {path: bench.load_gym_config(path, 0) for path in bench.gym_config_paths()}
    by_env: dict[str, set[str]] = {}
    for config in configs.values():
        by_env.setdefault(config.env.id, set()).add(config.policy.core)
    assert len(by_env) >= 2 and all({"delta", "lstm"} <= cores for cores in by_env.values())
    # equal budgets within a task: the same target, episodes and evaluations, about as many weights (within 15 %)
    for env_id in by_env:
        same_task = [c for c in configs.values() if c.env.id == env_id]
        assert len({(c.search.target, c.env.episodes, c.search.max_evaluations) for c in same_task}) == 1
        weights = [ne.make_policy(c).num_flat_parameters for c in same_task]
        assert max(weights) <= 1.15 * min(weights), (env_id, weights)


def test_a_worker_that_dies_stops_the_bench_with_the_finished_runs_shown(tmp_path, monkeypatch, capsys):
    from fwp_rl.workers import WorkerDied

    finished = bench.GymRun("configs/gym/x.yaml", "CartPole-v1", "lstm, 30 weights", 30.0, 0, 400, True, 16, 42.0, 1.0)

    def dying(paths, *args):
        args[-1]([finished])  # on_run: one run finished, then a worker died
        raise WorkerDied(1234, [])

    monkeypatch.setattr(bench, "bench_gym", dying)
    out = tmp_path / "gym.json"
    path = write_config(tmp_path, "cartpole", CARTPOLE)
    assert main(["bench", "gym", "--only", "success", "--configs", path, "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "the runs that finished" in printed and "worker process 1234 ended" in printed
    assert json.loads(out.read_text())["runs"][0]["held_out_return"] == 42.0
