"""Observation normalization (fwp_rl.normalization): the running statistics against Gymnasium's RunningMeanStd, the
map, the policy option, PPO's updates of the statistics and the learners that refuse it."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.wrappers.utils import RunningMeanStd

from fwp_rl.agents.neuroevolution import NeuroevolutionConfig
from fwp_rl.agents.ppo import PPOConfig, Trainer
from fwp_rl.config import ConfigError, from_dict
from fwp_rl.normalization import ObservationNormalizer
from fwp_rl.policy import RecurrentPolicy


def test_statistics_match_gymnasiums_running_mean_std():
    rng = np.random.default_rng(0)
    ours, reference = ObservationNormalizer((3,)), RunningMeanStd(shape=(3,))
    for n in (1, 7, 64):
        batch = rng.normal([5.0, -2.0, 0.01], [3.0, 0.5, 0.001], size=(n, 3))
        ours.update(torch.as_tensor(batch).reshape(n, 1, 3))  # any leading dimensions
        reference.update(batch)
    np.testing.assert_allclose(ours.mean.numpy(), reference.mean, rtol=1e-12)
    np.testing.assert_allclose(ours.var.numpy(), reference.var, rtol=1e-12)
    assert ours.count.item() == pytest.approx(reference.count)


def test_map_standardizes_and_clips():
    normalizer = ObservationNormalizer((2,))
    normalizer.update(torch.tensor([[1.0, 10.0], [3.0, 10.0]]))
    out = normalizer(torch.tensor([[2.0, 10.0], [1e6, 10.0]], dtype=torch.float32))
    assert out.dtype == torch.float32
    assert out[0, 0].item() == pytest.approx(0.0, abs=1e-3) and out[1, 0].item() == 10.0  # clipped
    assert out[0, 1].item() == pytest.approx(0.0, abs=0.01)  # no variance in the batch: no division by zero


def test_statistics_stay_float64_and_travel_in_the_state_dict():
    space = spaces.Box(-1, 1, (2,), np.float32)
    policy = RecurrentPolicy(space, spaces.Discrete(2), core="lstm", core_options={"hidden_size": 4},
                             normalize_observations=True).to(torch.float32)
    policy.update_observation_statistics(torch.tensor([[0.5, -0.5], [0.25, 0.0]]))
    assert policy.observation_normalizer.mean.dtype == torch.float64
    copy = RecurrentPolicy(space, spaces.Discrete(2), core="lstm", core_options={"hidden_size": 4},
                           normalize_observations=True)
    copy.load_state_dict(policy.state_dict())
    assert torch.equal(copy.observation_normalizer.mean, policy.observation_normalizer.mean)
    obs = torch.tensor([[0.3, 0.2]])
    torch.testing.assert_close(copy(obs, copy.initial_state(1), None)[1], policy(obs, policy.initial_state(1), None)[1])


def test_policy_without_the_option_ignores_updates():
    space = spaces.Box(-1, 1, (2,), np.float32)
    policy = RecurrentPolicy(space, spaces.Discrete(2), core="lstm", core_options={"hidden_size": 4})
    policy.update_observation_statistics(torch.ones(3, 2))
    assert policy.observation_normalizer is None and "observation_normalizer.mean" not in policy.state_dict()


def test_needs_a_floating_box():
    with pytest.raises(ValueError, match="normalize_observations needs a floating-point Box observation space"):
        RecurrentPolicy(spaces.Discrete(3), spaces.Discrete(2), torso="identity", normalize_observations=True)


def _ppo_config(tmp_path, **policy) -> PPOConfig:
    return from_dict(PPOConfig, {
        "learner": "ppo", "name": "n", "env": {"id": "fwp_rl/CartPoleNoVel-v0", "num_envs": 2},
        "policy": {"torso": "mlp", "core": "lstm", "core_options": {"hidden_size": 8}, **policy},
        "ppo": {"total_steps": 64, "num_steps": 16, "num_minibatches": 1, "update_epochs": 1, "device": "cpu"},
        "run": {"root": str(tmp_path), "wandb": "disabled"}})


def test_ppo_updates_the_statistics_with_each_rollout_after_learning(tmp_path, monkeypatch):
    learner = Trainer(_ppo_config(tmp_path, normalize_observations=True))
    normalizer = learner.policy.observation_normalizer
    seen = []
    collect = learner.collect

    def recording_collect():
        rollout, episodes, timing = collect()
        seen.append(rollout.obs.clone())
        assert normalizer.count.item() == pytest.approx(1e-4 + 32 * (len(seen) - 1))  # not yet merged
        return rollout, episodes, timing

    monkeypatch.setattr(learner, "collect", recording_collect)
    learner.update()
    learner.update()
    reference = RunningMeanStd(shape=(2,))
    for obs in seen:
        reference.update(obs.reshape(-1, 2).double().numpy())
    np.testing.assert_allclose(normalizer.mean.numpy(), reference.mean, rtol=1e-10)
    np.testing.assert_allclose(normalizer.var.numpy(), reference.var, rtol=1e-10)
    learner.close()


def test_neuroevolution_refuses_it():
    with pytest.raises(ConfigError, match="policy.normalize_observations=true is not allowed for neuroevolution"):
        from_dict(NeuroevolutionConfig, {"learner": "neuroevolution", "env": {"id": "CartPole-v1"},
                                         "policy": {"torso": "identity", "core": "elman",
                                                    "normalize_observations": True},
                                         "search": {"algorithm": "snes", "popsize": 4}})
