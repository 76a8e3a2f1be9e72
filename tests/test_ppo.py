"""Recurrent PPO: GAE against its definition, sequence splitting, the first learning pass replaying the rollout
exactly (states at sequence starts, resets inside sequences), the loss and the step of one minibatch against the
formulas computed by hand, the learning-rate schedule, target_kl, a nan that stops the update or skips its step,
runs, resume and config errors."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Categorical

from fwp_rl.agents import ppo
from fwp_rl.cli import main
from fwp_rl.config import dump_yaml, from_dict
from fwp_rl.runs import NonFiniteError, load_checkpoint, read_metrics, save_checkpoint


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


# ---------------------------------------------------------------------------------------------- the loss
# A policy whose log-prob, entropy and value at every rollout entry are free parameters makes the PPO loss
# and its gradient computable by hand: entry i (obs value i) has its own logits [A] and value.
class TablePolicy(nn.Module):
    """Logits [n, A] and values [n] as parameters; the observation of an entry is its index."""

    def __init__(self, logits: np.ndarray, values: np.ndarray):
        super().__init__()
        self.logits = nn.Parameter(torch.as_tensor(logits, dtype=torch.float64).clone())
        self.values = nn.Parameter(torch.as_tensor(values, dtype=torch.float64).clone())

    def evaluate(self, obs_seq, actions, state0, episode_starts):
        idx = obs_seq.long()
        dist = Categorical(logits=self.logits[idx])
        return dist.log_prob(actions), dist.entropy(), self.values[idx]


CLIP = 0.2
# One entry each (flattened [T=3, N=4]): the ratio new / old probability of its action, its advantage, and
# how far its value moved from the stored one. Ratios below 1 - CLIP and above 1 + CLIP meet advantages of
# both signs; value moves beyond CLIP go towards the return (the clipped error is the larger) and away.
RATIOS = np.array([0.5, 0.6, 1.3, 1.6, 0.9, 1.1, 0.7, 1.25, 0.95, 1.05, 0.75, 1.5])
ADVANTAGES = np.array([1.5, -1.0, 2.0, -0.8, 0.4, -1.2, 0.9, -1.7, -0.3, 0.7, -0.5, 1.1])
VALUE_MOVES = np.array([0.5, -0.3, 0.1, 0.4, -0.6, -0.05, 0.35, 0.15, -0.45, 0.25, 0.3, -0.1])


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def table_rollout(T=3, N=4, A=3, seed=0):
    """A TablePolicy and a rollout whose stored log-probs and values differ from the policy's by RATIOS and
    VALUE_MOVES. gamma = 0 makes the advantages rewards - stored values (= ADVANTAGES), the returns the rewards."""
    g = np.random.default_rng(seed)
    n = T * N
    logits, actions = g.normal(size=(n, A)), g.integers(A, size=n)
    old_values = g.normal(size=n)
    policy = TablePolicy(logits, old_values + VALUE_MOVES)
    log_probs = log_softmax(logits)[np.arange(n), actions]
    old = dict(log_probs=log_probs - np.log(RATIOS), values=old_values, rewards=old_values + ADVANTAGES)
    rollout = ppo.Rollout(
        obs=torch.arange(n, dtype=torch.float64).reshape(T, N), actions=torch.as_tensor(actions).reshape(T, N),
        log_probs=torch.as_tensor(old["log_probs"]).reshape(T, N), values=torch.as_tensor(old_values).reshape(T, N),
        rewards=torch.as_tensor(old["rewards"]).reshape(T, N), starts=torch.zeros(T, N, dtype=torch.bool),
        sequence_states=(), next_value=torch.zeros(N, dtype=torch.float64),
        next_start=torch.zeros(N, dtype=torch.bool))
    return policy, rollout, dict(old, logits=logits, actions=actions, values=old_values + VALUE_MOVES)


def reference_loss(logits, actions, values, log_probs, old_values, rewards, clip, norm_adv, clip_vloss, vf_coef,
                   ent_coef):
    """The PPO figures and the gradient of loss = policy loss - ent_coef entropy + vf_coef value loss with respect
    to the logits and values, from the formulas (means over the n entries; gamma = 0)."""
    n, A = logits.shape
    logp_all = log_softmax(logits)
    p = np.exp(logp_all)
    onehot = np.eye(A)[actions]
    ratio = np.exp(logp_all[np.arange(n), actions] - log_probs)
    adv = rewards - old_values
    returns = rewards
    if norm_adv:
        adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    unclipped, clipped = -adv * ratio, -adv * np.clip(ratio, 1 - clip, 1 + clip)
    policy_loss = np.maximum(unclipped, clipped).mean()
    # The clipped term is constant in the ratio outside the range; inside it equals the unclipped one.
    d_ratio = np.where(unclipped >= clipped, -adv, 0.0) / n
    entropy = -(p * logp_all).sum(-1)
    d_entropy = -p * (logp_all + entropy[:, None]) / n
    grad_logits = (d_ratio * ratio)[:, None] * (onehot - p) - ent_coef * d_entropy
    if clip_vloss:
        v_clipped = old_values + np.clip(values - old_values, -clip, clip)
        err, err_clipped = (values - returns) ** 2, (v_clipped - returns) ** 2
        value_loss = 0.5 * np.maximum(err, err_clipped).mean()
        d_values = np.where(err >= err_clipped, values - returns, 0.0) / n
    else:
        value_loss = 0.5 * ((values - returns) ** 2).mean()
        d_values = (values - returns) / n
    figures = dict(policy_loss=policy_loss, value_loss=value_loss, entropy=entropy.mean(),
                   approx_kl=((ratio - 1) - np.log(ratio)).mean(), clipfrac=(np.abs(ratio - 1) > clip).mean())
    return figures, grad_logits, vf_coef * d_values


def table_hp(**fields) -> ppo.PPOHyperparameters:
    hp = dict(update_epochs=1, num_minibatches=1, gamma=0.0, gae_lambda=0.7, clip_coef=CLIP, vf_coef=0.7,
              ent_coef=0.05, max_grad_norm=1e6, device="cpu")
    hp.update(fields)
    return from_dict(ppo.PPOHyperparameters, hp)


def test_the_table_rollout_meets_every_case_of_the_clips():
    """The loss tests below see every branch: both clip sides with both advantage signs, and value moves
    beyond the clip range where the clipped error is the larger and where it is the smaller."""
    assert {(a > 0, r > 1) for a, r in zip(ADVANTAGES, RATIOS) if abs(r - 1) > CLIP} == {
        (True, True), (True, False), (False, True), (False, False)}
    normalized = (ADVANTAGES - ADVANTAGES.mean()) / ADVANTAGES.std(ddof=1)
    assert (np.sign(normalized) == np.sign(ADVANTAGES)).all()
    _, _, data = table_rollout()
    returns, old = data["rewards"], data["values"] - VALUE_MOVES
    outside = np.abs(VALUE_MOVES) > CLIP
    clipped_larger = (old + np.clip(VALUE_MOVES, -CLIP, CLIP) - returns) ** 2 > (data["values"] - returns) ** 2
    assert (outside & clipped_larger).any() and (outside & ~clipped_larger).any()


@pytest.mark.parametrize("norm_adv", [True, False])
@pytest.mark.parametrize("clip_vloss", [True, False])
def test_one_minibatch_loss_and_step_match_the_formulas(norm_adv, clip_vloss):
    """The figures of one minibatch and the SGD step they cause match the clipped surrogate, the (clipped)
    value loss, the entropy bonus and their weights computed by hand: a flipped advantage sign, a wrong clip,
    a dropped value clip or advantage normalization, or a wrong coefficient each changes them."""
    policy, rollout, data = table_rollout()
    hp = table_hp(norm_adv=norm_adv, clip_vloss=clip_vloss)
    lr = 0.1
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    figures = ppo.ppo_update(policy, optimizer, rollout, hp, torch.Generator().manual_seed(0))
    expected, grad_logits, grad_values = reference_loss(
        data["logits"], data["actions"], data["values"], data["log_probs"], data["values"] - VALUE_MOVES,
        data["rewards"], CLIP, norm_adv, clip_vloss, hp.vf_coef, hp.ent_coef)
    for key, value in expected.items():
        assert figures[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
    assert expected["clipfrac"] == 8 / 12 and expected["approx_kl"] > 0
    np.testing.assert_allclose(policy.logits.detach().numpy() - data["logits"], -lr * grad_logits, rtol=1e-9,
                               atol=1e-14)
    np.testing.assert_allclose(policy.values.detach().numpy() - data["values"], -lr * grad_values, rtol=1e-9,
                               atol=1e-14)


def test_the_step_is_clipped_to_max_grad_norm():
    """With a small max_grad_norm the step is the hand-computed gradient scaled to that norm."""
    policy, rollout, data = table_rollout()
    hp = table_hp(max_grad_norm=0.01)
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    ppo.ppo_update(policy, optimizer, rollout, hp, torch.Generator().manual_seed(0))
    _, grad_logits, grad_values = reference_loss(
        data["logits"], data["actions"], data["values"], data["log_probs"], data["values"] - VALUE_MOVES,
        data["rewards"], CLIP, True, True, hp.vf_coef, hp.ent_coef)
    norm = np.sqrt((grad_logits ** 2).sum() + (grad_values ** 2).sum())
    assert norm > 0.1  # the clip is active
    scale = 0.01 / norm
    # rtol: torch divides by the norm plus 1e-6.
    np.testing.assert_allclose(policy.logits.detach().numpy() - data["logits"], -scale * grad_logits, rtol=1e-4,
                               atol=1e-14)
    np.testing.assert_allclose(policy.values.detach().numpy() - data["values"], -scale * grad_values, rtol=1e-4,
                               atol=1e-14)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_loss_that_is_not_finite_stops_the_update_or_skips_its_step(bad):
    policy, rollout, _ = table_rollout()
    rollout.rewards[1, 2] = bad
    before = [p.detach().clone() for p in policy.parameters()]
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    with pytest.raises(NonFiniteError, match=r"the loss or its gradient is not finite \(policy_loss nan"):
        ppo.ppo_update(policy, optimizer, rollout, table_hp(), torch.Generator().manual_seed(0))
    figures = ppo.ppo_update(policy, optimizer, rollout, table_hp(nonfinite="skip"), torch.Generator().manual_seed(0))
    assert figures["skipped_minibatches"] == 1 and math.isnan(figures["policy_loss"])
    assert all(torch.equal(p, q) for p, q in zip(policy.parameters(), before))


def test_a_run_stops_at_the_update_that_spoils_a_parameter_and_keeps_the_checkpoints_before(tmp_path, monkeypatch,
                                                                                            capsys):
    config = recall_config(tmp_path)
    update = ppo.ppo_update

    def spoiling(policy, *args):
        figures = update(policy, *args)
        if len(read_metrics_of(tmp_path)) == 2:
            with torch.no_grad():
                next(policy.parameters())[0] = float("nan")
        return figures

    monkeypatch.setattr(ppo, "ppo_update", spoiling)
    path = tmp_path / "recall.yaml"
    dump_yaml(config, path)
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "update 3 of 3: parameter torso.net.1.weight is not finite" in err
    checkpoints = tmp_path / "recall" / "checkpoints"
    assert load_checkpoint(checkpoints / "latest.pt")["update"] == 2
    assert load_checkpoint(checkpoints / "previous.pt")["update"] == 1
    assert [r["update"] for r in read_metrics_of(tmp_path)] == [1, 2]


def read_metrics_of(tmp_path):
    path = tmp_path / "recall" / "metrics.jsonl"
    return read_metrics(path) if path.exists() else []


def count_steps(optimizer) -> list[float]:
    """Wrap optimizer.step: the returned list gets the learning rate of every step taken."""
    steps, step = [], optimizer.step

    def counted(*args, **kwargs):
        steps.append(optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    optimizer.step = counted
    return steps


@pytest.mark.parametrize("target_kl, epochs", [(1e-3, 1), (None, 4), (10.0, 4)])
def test_target_kl_stops_after_the_epoch_that_passes_it(target_kl, epochs):
    """The first epoch's approximate KL (the stored log-probs are off by RATIOS) is far above 1e-3: that target
    stops the update after that whole epoch (both minibatches); None, or a target never reached, runs all."""
    policy, rollout, _ = table_rollout()
    optimizer = torch.optim.SGD(policy.parameters(), lr=1e-3)
    steps = count_steps(optimizer)
    figures = ppo.ppo_update(policy, optimizer, rollout, table_hp(update_epochs=4, num_minibatches=2,
                                                                  target_kl=target_kl), torch.Generator())
    assert figures["approx_kl"] > 1e-2
    assert len(steps) == 2 * epochs


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("anneal_lr", [True, False])
def test_learning_rate_anneals_linearly_over_the_updates(tmp_path, one_thread, anneal_lr):
    """Update i (from 0) of n steps at (1 - i / n) x learning_rate with anneal_lr, at learning_rate without."""
    config = recall_config(tmp_path, "memoryless", total_steps=4 * 96, learning_rate=0.01, anneal_lr=anneal_lr,
                           update_epochs=2)
    trainer = ppo.Trainer(config)
    steps = count_steps(trainer.optimizer)
    try:
        reported = [trainer.update()["learning_rate"] for _ in range(config.num_updates)]
    finally:
        trainer.close()
    assert config.num_updates == 4
    expected = [0.01 * (1 - i / 4) if anneal_lr else 0.01 for i in range(4)]
    assert reported == pytest.approx(expected, rel=1e-12)
    assert steps == pytest.approx([lr for lr in expected for _ in range(2 * 2)], rel=1e-12)


def test_a_trainer_restored_from_a_checkpoint_learns_exactly_as_the_one_saved(tmp_path):
    """What a checkpoint keeps of the learner (weights, Adam's moments, the minibatch order's generator) is all
    its next learning phase depends on: from the same rollout, the restored trainer makes the same steps."""
    config = recall_config(tmp_path)
    saved = ppo.Trainer(config)
    saved.update()  # moves the weights, Adam and the generator off their starting values
    path = tmp_path / "latest.pt"
    save_checkpoint(path, saved.state_dict())
    restored = ppo.Trainer(config)
    restored.load_state_dict(load_checkpoint(path))
    rollout, _, _ = saved.collect()
    figures = [ppo.ppo_update(t.policy, t.optimizer, rollout, config.ppo, t.generator) for t in (saved, restored)]
    assert figures[0] == figures[1]
    for a, b in zip(saved.policy.parameters(), restored.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    restored.close(), saved.close()


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
    assert "the config differs from the checkpoint's: policy.core_options.hidden_size 16 -> 32" in \
        capsys.readouterr().err
    # A checkpoint whose config says what the run's says but whose weights do not fit it.
    latest = run_dir / "checkpoints" / "latest.pt"
    payload = load_checkpoint(latest)
    payload["config"]["policy"]["core_options"]["hidden_size"] = 32
    from fwp_rl.runs import save_checkpoint
    save_checkpoint(latest, payload)
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
    from rich.console import Console

    from fwp_rl.bench.ppo import bench_ppo, print_ppo_table

    path = tmp_path / "recall_lstm.yaml"
    path.write_text("learner: ppo\nenv: {id: fwp_rl/Recall-v0, num_envs: 4}\npolicy: {torso: mlp, core: lstm}\n"
                    "ppo: {num_steps: 24, num_minibatches: 2}\n")
    (row,) = bench_ppo([path], updates=2, device="cpu")
    assert row["core"] == "lstm" and row["steps_per_update"] == 96 and row["num_envs"] == 4
    assert row["steps_per_second"] == pytest.approx(96 / row["seconds"])
    assert row["env_steps_per_second"] == pytest.approx(96 / row["env_seconds"])
    assert row["env_steps_per_second"] > row["steps_per_second"]  # the envs alone: faster than training
    parts = row["env_seconds"] + row["inference_seconds"] + row["learn_seconds"]
    assert 0 < parts <= row["seconds"] * 1.01
    print_ppo_table([row], "t", Console(width=160))
    assert "recall_lstm" in capsys.readouterr().out
    (row,) = bench_ppo([path], updates=1, device="cpu", num_envs=8)  # --num-envs
    assert row["num_envs"] == 8 and row["steps_per_update"] == 8 * 24
