"""Observation spaces beyond Box and "module:EnvId" ids, on every learner: Discrete, MultiDiscrete, MultiBinary, Dict
and Tuple observations reach the policy as one exact flat vector (fwp_rl.envs.vector.flat_observations), PPO trains
on them and evaluate replays the run, a neuroevolution generation and SB3 updates run on them; other spaces are
one-line errors naming the space and the ones allowed; "module:EnvId" imports the module that registers EnvId, and a
module that cannot be imported or registers no such id is a one-line error naming it. The envs: tests/spaces_envs.py.
"""

from __future__ import annotations

import math
import re
import sys

import gymnasium as gym
import numpy as np
import pytest
import yaml

import spaces_envs
from fwp_rl.agents import neuroevolution as ne
from fwp_rl.agents import ppo, sb3
from fwp_rl.cli import main
from fwp_rl.config import ConfigError, from_dict
from fwp_rl.envs.vector import OBSERVATION_SPACES, VectorEnvConfig, make_vector_env
from fwp_rl.runs import read_metrics

SUPPORTED = sorted(spaces_envs.SUPPORTED)
RUN = dict(wandb="disabled", checkpoint_every=1)
PPO_STEPS = dict(total_steps=2 * 2 * 8, num_steps=8, num_minibatches=2, update_epochs=2, device="cpu")


def module_id(kind: str) -> str:
    return f"spaces_envs:{spaces_envs.IDS[kind]}"


def ppo_config(tmp_path, kind: str) -> dict:
    return dict(learner="ppo", name=kind, env=dict(id=module_id(kind), num_envs=2),
                policy=dict(torso="mlp", torso_options=dict(hidden_sizes=[8]), core="delta",
                            core_options=dict(hidden_size=8)),
                ppo=PPO_STEPS, run=dict(root=str(tmp_path), **RUN))


def ne_config(tmp_path, kind: str) -> dict:
    return dict(learner="neuroevolution", name=kind, env=dict(id=module_id(kind), episodes=2),
                policy=dict(torso="identity", core="elman", core_options=dict(hidden_size=2)),
                search=dict(algorithm="snes", popsize=4, max_generations=1), run=dict(root=str(tmp_path), **RUN))


def sb3_config(tmp_path, kind: str) -> dict:
    return dict(learner="sb3_recurrent_ppo", name=kind, env=dict(id=module_id(kind), num_envs=2),
                policy="MlpLstmPolicy", policy_kwargs=dict(lstm_hidden_size=8), ppo=PPO_STEPS,
                run=dict(root=str(tmp_path), **RUN))


# ---------------------------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("kind", SUPPORTED)
def test_every_learner_sees_the_first_observation_as_its_exact_flat_vector(kind, tmp_path):
    expected = spaces_envs.FLAT_FIRST[kind]
    space = gym.spaces.flatten_space(spaces_envs.SUPPORTED[kind])
    with make_vector_env(VectorEnvConfig(module_id(kind), 2)) as envs:  # PPO and evaluate
        assert envs.single_observation_space == space and space.shape == (len(expected),)
        assert envs.reset(seed=0).tolist() == [expected, expected]
    evolution = ne.Evolution(from_dict(ne.NeuroevolutionConfig, ne_config(tmp_path, kind)))
    assert evolution.task.problem.policy.observation_space == space
    problem_envs = evolution.task.problem._vector_env(3)
    try:
        assert problem_envs.reset(seed=0)[0].tolist() == [expected] * 3
    finally:
        problem_envs.close()
    sb3_envs = sb3.make_env(from_dict(sb3.SB3Config, sb3_config(tmp_path, kind)))
    try:
        assert sb3_envs.observation_space == space
        assert sb3_envs.reset().tolist() == [expected, expected]
    finally:
        sb3_envs.close()


def test_a_box_observation_keeps_its_shape_and_dtype():
    with make_vector_env(VectorEnvConfig("fwp_rl/Recall-v0", 1)) as envs:
        assert envs.single_observation_space == gym.spaces.Box(0.0, 1.0, shape=(5,), dtype=np.float32)
    with make_vector_env(VectorEnvConfig("atari:pong", 1)) as envs:  # frames stay [C, H, W] uint8
        assert envs.single_observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


# ---------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("kind", SUPPORTED)
def test_ppo_trains_on_each_space_and_evaluate_replays_it(kind, tmp_path, capsys):
    run_dir = ppo.train(from_dict(ppo.PPOConfig, ppo_config(tmp_path, kind))).run_dir
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["update"] for r in records] == [1, 2]
    assert all(math.isfinite(r[k]) for r in records for k in ("policy_loss", "value_loss", "entropy"))
    # Episodes of 4 steps, one reward of 0 or 1 each.
    assert records[-1]["episodic_length"] == spaces_envs.EPISODE_STEPS
    assert 0 <= records[-1]["episodic_return"] <= spaces_envs.EPISODE_STEPS
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--episodes", "3"]) == 0
    assert "episode length" in capsys.readouterr().out


@pytest.mark.parametrize("kind", SUPPORTED)
def test_a_neuroevolution_generation_runs_on_each_space(kind, tmp_path):
    run_dir = ne.train(from_dict(ne.NeuroevolutionConfig, ne_config(tmp_path, kind))).run_dir
    (record,) = read_metrics(run_dir / "metrics.jsonl")
    assert record["generation"] == 1 and record["step"] == 4
    assert 0 <= record["mean"] <= record["best"] <= spaces_envs.EPISODE_STEPS


@pytest.mark.parametrize("kind", ["Dict", "Tuple"])
def test_sb3_trains_on_dict_and_tuple_observations(kind, tmp_path):
    run_dir = sb3.train(from_dict(sb3.SB3Config, sb3_config(tmp_path, kind))).run_dir
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["update"] for r in records] == [1, 2]
    assert records[-1]["episodic_length"] == spaces_envs.EPISODE_STEPS
    assert math.isfinite(records[-1]["policy_loss"])


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kind, named", [
    ("Text", r"Text\(1, 5, charset=.*\) is not supported; "),
    ("Graph", r"Graph\(Box\(0\.0, 1\.0, \(2,\), float32\), None\) is not supported; "),
    ("Sequence", r"Sequence\(Discrete\(2\), stack=False\) is not supported; "),
    ("DictWithText", r"Dict\('name': Text\(.*\), 'pos': Box\(.*\)\) is not supported \(its part Text\(.*\) is not\); "),
])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_unsupported_observation_space_is_an_error_naming_it_and_the_allowed_ones(kind, named, mode):
    allowed = re.escape(OBSERVATION_SPACES)
    message = rf"^env\.id='spaces/{kind}-v0': the observation space {named}a policy takes {allowed}$"
    with pytest.raises(ConfigError, match=message):
        make_vector_env(VectorEnvConfig(spaces_envs.IDS[kind], 2, {"vectorization_mode": mode}))


@pytest.mark.parametrize("make_config", [ppo_config, ne_config, sb3_config])
def test_every_learner_gives_a_one_line_error_for_an_unsupported_space(make_config, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(make_config(tmp_path, "Sequence")))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (f"env.id='spaces_envs:spaces/Sequence-v0': the observation space Sequence(Discrete(2), stack=False) is not "
            f"supported; a policy takes {OBSERVATION_SPACES}") in err
    assert not (tmp_path / "Sequence").exists()  # nothing written


# ---------------------------------------------------------------------------------------------- module:EnvId
def test_a_module_env_id_imports_the_module_that_registers_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "spaces_envs")
    for env_id in spaces_envs.IDS.values():
        monkeypatch.delitem(gym.registry, env_id)
    config = from_dict(VectorEnvConfig, {"id": module_id("Tuple"), "num_envs": 1}, "env")
    assert "spaces_envs" in sys.modules and spaces_envs.IDS["Tuple"] in gym.registry
    with make_vector_env(config) as envs:
        assert envs.reset(seed=0).tolist() == [spaces_envs.FLAT_FIRST["Tuple"]]


@pytest.mark.parametrize("env_id, message", [
    ("no_such_module:Env-v0", r"env\.id='no_such_module:Env-v0': module 'no_such_module' cannot be imported: "
                              r"No module named 'no_such_module'$"),
    ("spaces_envs:spaces/Dikt-v0", r"env\.id='spaces_envs:spaces/Dikt-v0': module 'spaces_envs' registers no "
                                   r"Gymnasium id 'spaces/Dikt-v0'; did you mean 'spaces/Dict-v0'"),
])
@pytest.mark.parametrize("config", [VectorEnvConfig, ne.EnvConfig])
def test_a_module_env_id_that_does_not_register_is_an_error_naming_the_module(config, env_id, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(config, {"id": env_id}, "env")


def test_an_unknown_id_names_what_env_id_takes():
    with pytest.raises(ConfigError, match=r"env\.id='NoSuchEnv-v9' is neither 'double_pole', a registered Gymnasium "
                                          r"id nor 'module:EnvId'"):
        from_dict(ne.EnvConfig, {"id": "NoSuchEnv-v9"}, "env")
