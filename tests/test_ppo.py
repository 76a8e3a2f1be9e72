"""Recurrent PPO: GAE against its definition, sequence splitting, the first learning pass replaying the rollout
exactly (states at sequence starts, resets inside sequences), runs, resume and config errors."""

import numpy as np
import pytest
import torch

from fwp_rl.agents import ppo
from fwp_rl.cli import main
from fwp_rl.config import from_dict
from fwp_rl.runs import load_checkpoint, read_metrics


def reference_gae(rewards, values, starts, next_value, next_start, gamma, lam):
    """Advantages from their definition: A_t = sum_l (gamma lam)^l delta_{t+l}, summed until the episode ends."""
    T, N = rewards.shape
    ended = np.concatenate([starts[1:], next_start[None]], 0)  # ended[t]: step t was its episode's last
    following = np.concatenate([values[1:], next_value[None]], 0)
    delta = rewards + gamma * following * (1 - ended) - values
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for u in range(t, T):
                total += discount * delta[u, n]
                if ended[u, n]:
                    break
                discount *= gamma * lam
            adv[t, n] = total
    return adv


def test_gae_matches_its_definition_with_episode_ends():
    g = np.random.default_rng(0)
    T, N = 12, 3
    rewards, values = g.normal(size=(T, N)), g.normal(size=(T, N))
    starts, next_start = g.random((T, N)) < 0.2, np.array([True, False, False])
    next_value = g.normal(size=N)
    adv, returns = ppo.compute_gae(*(torch.as_tensor(a) for a in (rewards, values, starts, next_value, next_start)),
                                   0.9, 0.8)
    expected = reference_gae(rewards, values, starts, next_value, next_start, 0.9, 0.8)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(returns.numpy(), expected + values, rtol=1e-12)


def test_split_sequences_keeps_each_env_stretch_in_order():
    x = torch.arange(8 * 3).reshape(8, 3)  # x[t, n] = 3 t + n
    s = ppo._split_sequences(x, 4)
    assert s.shape == (4, 6)
    for j in range(2):
        for n in range(3):
            assert s[:, j * 3 + n].tolist() == [3 * (4 * j + i) + n for i in range(4)]


def recall_config(tmp_path, core="delta", **ppo_fields) -> ppo.PPOConfig:
    hp = dict(total_steps=4 * 24 * 3, num_steps=24, sequence_length=12, num_minibatches=2, device="cpu")
    hp.update(ppo_fields)
    return from_dict(ppo.PPOConfig, dict(
        name="recall", seed=3, env=dict(id="fwp_rl/Recall-v0", num_envs=4, options=dict(k=3, delay=5)),
        policy=dict(torso="mlp", core=core, core_options=dict(hidden_size=16), dtype="float64"),
        ppo=hp, run=dict(root=str(tmp_path), wandb="disabled", checkpoint_every=1)))


@pytest.mark.parametrize("core", ["delta", "lstm", "rdn", "linear"])
def test_learning_replays_the_rollout_exactly(tmp_path, core):
    """Before any gradient step, the sequence form started from the kept states gives the rollout's own
    log-probs and values: the states at sequence starts and the resets inside sequences are right."""
    trainer = ppo.Trainer(recall_config(tmp_path, core))
    try:
        trainer.collect()  # a second rollout starts mid-episode, from a carried state
        rollout, episodes, _ = trainer.collect()
    finally:
        trainer.close()
    # Episodes of 7 steps: they end inside sequences of 12, and some sequences start mid-episode.
    assert episodes and rollout.starts[1:].any() and not rollout.starts[::12].all()
    assert rollout.sequence_states[0].shape[:2] == (2, 4)
    seq = {k: ppo._split_sequences(getattr(rollout, k), 12) for k in ("obs", "actions", "log_probs", "values",
                                                                       "starts")}
    states = tuple(s.reshape(-1, *s.shape[2:]) for s in rollout.sequence_states)
    with torch.no_grad():
        log_probs, _, values = trainer.policy.evaluate(seq["obs"], seq["actions"], states, seq["starts"])
    torch.testing.assert_close(log_probs, seq["log_probs"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(values, seq["values"], rtol=1e-10, atol=1e-10)


def test_first_epoch_starts_at_ratio_one_and_losses_are_finite(tmp_path):
    trainer = ppo.Trainer(recall_config(tmp_path, update_epochs=1, num_minibatches=1))
    try:
        rollout, _, _ = trainer.collect()
        figures = ppo.ppo_update(trainer.policy, trainer.optimizer, rollout, trainer.config.ppo, trainer.generator)
    finally:
        trainer.close()
    assert figures["approx_kl"] == pytest.approx(0.0, abs=1e-12)  # one minibatch: measured before its step
    assert figures["clipfrac"] == 0.0
    assert all(np.isfinite(v) for k, v in figures.items() if k != "explained_variance")


def test_train_writes_a_run_and_resume_continues_it(tmp_path):
    config = recall_config(tmp_path)
    run_dir = ppo.train(config).run_dir
    payload = load_checkpoint(run_dir)
    assert payload["update"] == config.num_updates == 3
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [96, 192, 288]
    assert {"episodic_return", "policy_loss", "steps_per_second", "env_seconds"} <= set(records[-1])

    # An interruption after the checkpoint of update 2 left a metrics line for update 3: resume drops it
    # and trains update 3 and 4 again from the checkpoint.
    payload["update"], payload["global_step"] = 2, 192
    from fwp_rl.runs import save_checkpoint
    save_checkpoint(run_dir / "checkpoints" / "latest.pt", payload)
    assert main(["train", "--resume", str(run_dir), "--set", "ppo.total_steps=384"]) == 0
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [96, 192, 288, 384]
    assert load_checkpoint(run_dir)["update"] == 4


def test_resume_refuses_a_checkpoint_of_another_policy(tmp_path, capsys):
    run_dir = ppo.train(recall_config(tmp_path, total_steps=96)).run_dir
    assert main(["train", "--resume", str(run_dir), "--set", "policy.core_options.hidden_size=32"]) == 2
    assert "does not fit this config's policy" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("ppo.num_minibatches=3", "ppo.num_minibatches=3"),
    ("ppo.sequence_length=5", "ppo.sequence_length=5"),
    ("ppo.gamma=1.5", "ppo.gamma=1.5"),
    ("ppo.bogus=1", "unknown key 'bogus'"),
    ("env.id=NoSuchEnv-v0", "env.id='NoSuchEnv-v0'"),
    ("env.id=atari:pongg", "did you mean 'pong'"),
    ("env={id: \"atari:pong\", num_envs: 4, options: {batch_size: 2}}", "env.options.batch_size=2"),
])
def test_config_errors_name_the_key(tmp_path, capsys, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("learner: ppo\nenv: {id: fwp_rl/Recall-v0, num_envs: 4}\npolicy: {torso: mlp}\n"
                    "ppo: {num_steps: 24, sequence_length: 12, num_minibatches: 2}\n")
    assert main(["train", str(path), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_torso_that_cannot_take_the_observations_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(f"learner: ppo\nenv: {{id: CartPole-v1, num_envs: 4}}\npolicy: {{torso: nature_cnn}}\n"
                    f"run: {{root: {str(tmp_path)!r}, wandb: disabled}}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "policy:" in err and "nature_cnn" in err and "Traceback" not in err
    assert not list(tmp_path.glob("ppo*")), "a failed start must not leave a run directory"


def test_resume_from_a_truncated_checkpoint_fails_cleanly_and_writes_nothing(tmp_path, capsys):
    run_dir = ppo.train(recall_config(tmp_path, total_steps=96)).run_dir
    latest = run_dir / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:200])
    metrics_before = (run_dir / "metrics.jsonl").read_bytes()
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics_before and len(latest.read_bytes()) == 200


def test_bench_ppo_reports_speed_and_where_the_time_goes(tmp_path, capsys):
    from fwp_rl.bench import bench_ppo, print_ppo_table

    path = tmp_path / "recall_lstm.yaml"
    path.write_text("learner: ppo\nenv: {id: fwp_rl/Recall-v0, num_envs: 4}\npolicy: {torso: mlp, core: lstm}\n"
                    "ppo: {num_steps: 24, num_minibatches: 2}\n")
    (row,) = bench_ppo([path], updates=2, device="cpu")
    assert row["core"] == "lstm" and row["steps_per_update"] == 96
    assert row["steps_per_second"] == pytest.approx(96 / row["seconds"])
    parts = row["env_seconds"] + row["inference_seconds"] + row["learn_seconds"]
    assert 0 < parts <= row["seconds"] * 1.01
    print_ppo_table([row], "t")
    assert "recall_lstm" in capsys.readouterr().out
