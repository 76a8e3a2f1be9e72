"""Recurrent PPO learns: short seeded runs that reach a set return, and fail when the learner is broken (a
flipped surrogate drives the return below where it started).

The networks are tiny, so the runs use one CPU thread: more only adds synchronisation between threads.
"""

import numpy as np
import pytest
import torch

from fwp_rl.agents import ppo
from fwp_rl.config import from_dict


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_returns(tmp_path, env: dict, policy: dict, **hp) -> list[float]:
    """The mean episodic return of every update of a seeded run (nan where no episode ended). The settings
    are all given here, so that a change of the defaults does not change what these runs reach."""
    config = from_dict(ppo.PPOConfig, dict(
        name="learn", seed=0, env=env, policy=dict(policy, torso="mlp", dtype="float64"),
        ppo=dict(hp, update_epochs=4, num_minibatches=4, clip_coef=0.2, clip_vloss=True, vf_coef=0.5,
                 max_grad_norm=0.5, norm_adv=True, anneal_lr=True, gamma=0.99, gae_lambda=0.95, target_kl=None,
                 device="cpu"),
        run=dict(root=str(tmp_path), wandb="disabled")))
    trainer = ppo.Trainer(config)
    try:
        return [trainer.update().get("episodic_return", np.nan) for _ in range(config.num_updates)]
    finally:
        trainer.close()


def test_memoryless_policy_learns_to_balance_cartpole(tmp_path):
    """A feed-forward policy on CartPole-v1 goes from about 22 steps per episode (random actions) to a mean of
    over 100 in its last 4 of 16 updates (16,384 steps); a flipped surrogate falls to about 10."""
    returns = train_returns(
        tmp_path, dict(id="CartPole-v1", num_envs=8),
        dict(torso_options=dict(hidden_sizes=[64]), core="memoryless", core_options=dict(hidden_size=64)),
        total_steps=16 * 1024, num_steps=128, learning_rate=2.5e-3, ent_coef=0.0)
    assert len(returns) == 16
    assert returns[0] < 30
    assert np.nanmean(returns[-4:]) > 100


def test_delta_core_learns_to_recall_a_cue(tmp_path):
    """A delta-rule fast-weight core recalls which of 2 cues it saw 2 blank steps before the question: a mean
    return over 0.9 in the last 4 of 16 updates (8,192 steps). Without memory every question looks the same,
    so no policy gets more than 0.5; a flipped surrogate falls towards 0."""
    returns = train_returns(
        tmp_path, dict(id="fwp_rl/Recall-v0", num_envs=16, options=dict(k=2, delay=2)),
        dict(torso_options=dict(hidden_sizes=[32]), core="delta", core_options=dict(hidden_size=32)),
        total_steps=16 * 512, num_steps=32, learning_rate=3e-3, ent_coef=0.01)
    assert len(returns) == 16
    assert np.mean(returns[:2]) < 0.6
    assert np.mean(returns[-4:]) > 0.9
