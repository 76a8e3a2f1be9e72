"""sb3-contrib's RecurrentPPO as a learner: a run through the CLI (run directory, metrics, checkpoint that loads
back), the ppo keys as RecurrentPPO arguments, the Atari wrappers, and config errors."""

import numpy as np
import pytest
import yaml

from fwp_rl.agents import sb3
from fwp_rl.cli import load_config, main
from fwp_rl.config import from_dict
from fwp_rl.runs import load_checkpoint, read_metrics

RECALL = dict(learner="sb3_recurrent_ppo", name="recall", seed=3,
              env=dict(id="fwp_rl/Recall-v0", num_envs=4, options=dict(k=3, delay=5)),
              policy="MlpLstmPolicy", policy_kwargs=dict(lstm_hidden_size=16),
              ppo=dict(total_steps=2 * 96, num_steps=24, num_minibatches=2, learning_rate=1e-3, device="cpu"))


def write_config(tmp_path, **changes):
    data = {**RECALL, "run": dict(root=str(tmp_path / "runs"), wandb="disabled", checkpoint_every=1), **changes}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_writes_a_run_whose_checkpoint_loads_back(tmp_path):
    assert main(["train", str(write_config(tmp_path))]) == 0
    run_dir = tmp_path / "runs" / "recall"
    config = load_config(str(run_dir / "config.yaml"), [])
    assert isinstance(config, sb3.SB3Config) and config.policy_kwargs == {"lstm_hidden_size": 16}

    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [96, 192]
    assert [r["update"] for r in records] == [1, 2]
    assert {"episodic_return", "episodic_length", "episodes", "policy_loss", "value_loss", "entropy", "approx_kl",
            "steps_per_second"} <= set(records[-1])
    assert records[-1]["episodic_length"] == 7  # delay + 2 agent steps
    assert 0 <= records[-1]["episodic_return"] <= 1
    assert [r["learning_rate"] for r in records] == pytest.approx([1e-3, 0.5e-3])  # annealed as our PPO

    payload = load_checkpoint(run_dir)
    assert payload["learner"] == "sb3_recurrent_ppo"
    assert (payload["update"], payload["global_step"]) == (2, 192)
    model = sb3.load_model(run_dir)
    assert model.num_timesteps == 192 and model.batch_size == 48
    obs = np.zeros((4, 4), dtype=np.float32)
    actions, state = model.predict(obs, episode_start=np.ones(4, dtype=bool))
    actions, state = model.predict(obs, state=state, episode_start=np.zeros(4, dtype=bool))
    assert actions.shape == (4,) and state[0].shape == (1, 4, 16)


def test_ppo_keys_map_onto_recurrent_ppo_arguments():
    config = from_dict(sb3.SB3Config, {**RECALL, "ppo": dict(
        total_steps=960, num_steps=24, num_minibatches=3, update_epochs=3, learning_rate=3e-4, gamma=0.9,
        gae_lambda=0.8, clip_coef=0.15, ent_coef=0.02, vf_coef=0.6, max_grad_norm=0.7, norm_adv=False,
        target_kl=0.05, device="cpu")})
    env = sb3.make_env(config)
    try:
        model = sb3.make_model(config, env)
    finally:
        env.close()
    assert (model.n_envs, model.n_steps, model.batch_size, model.n_epochs) == (4, 24, 32, 3)
    assert (model.gamma, model.gae_lambda, model.ent_coef, model.max_grad_norm) == (0.9, 0.8, 0.02, 0.7)
    assert model.vf_coef == pytest.approx(0.3)  # SB3's value loss has no factor 0.5
    assert model.clip_range(1.0) == model.clip_range_vf(1.0) == 0.15
    assert (model.normalize_advantage, model.target_kl, str(model.device)) == (False, 0.05, "cpu")
    assert model.policy.lstm_actor.hidden_size == 16
    # 10 updates: update k learns at 3e-4 (1 - k / 10); SB3 asks after counting update k's rollout.
    rates = [model.lr_schedule(1 - (k + 1) / 10) for k in range(10)]
    assert rates == pytest.approx([3e-4 * (1 - k / 10) for k in range(10)])

    constant = sb3.model_arguments(from_dict(sb3.SB3Config, {
        **RECALL, "ppo": dict(num_steps=24, num_minibatches=2, anneal_lr=False, clip_vloss=False, device="cpu")}))
    assert constant["learning_rate"] == 2.5e-4 and constant["clip_range_vf"] is None


def test_atari_runs_through_sb3_wrappers_and_logs_whole_games_with_raw_scores():
    config = from_dict(sb3.SB3Config, {**RECALL, "policy": "CnnLstmPolicy", "env": dict(
        id="atari:space_invaders", num_envs=1, options=dict(preset="cleanrl_lstm"))})
    env = sb3.make_env(config)
    try:
        assert env.observation_space.shape == (84, 84, 1)
        ale = env.envs[0].unwrapped.ale
        assert ale.getFloat("repeat_action_probability") == 0.0
        env.reset()
        rng = np.random.default_rng(0)
        clipped = lost_lives = 0
        while True:
            _, reward, done, infos = env.step(rng.integers(env.action_space.n, size=1))
            clipped += reward[0]
            lost_lives += done[0]
            if "episode" in infos[0]:
                break
    finally:
        env.close()
    # One Monitor episode is the whole game (3 lives, each a training episode), with the raw score.
    assert lost_lives == 3
    assert infos[0]["episode"]["r"] > clipped > 0

    v5 = from_dict(sb3.SB3Config, {**RECALL, "env": dict(id="atari:pong", num_envs=1)})
    env = sb3.make_env(v5)
    try:
        assert env.observation_space.shape == (84, 84, 4)  # VecFrameStack of 4 frames
        assert env.venv.envs[0].unwrapped.ale.getFloat("repeat_action_probability") == 0.25
    finally:
        env.close()


@pytest.mark.parametrize("override, message", [
    ("ppo.sequence_length=12", "ppo.sequence_length=12"),
    ("ppo.num_minibatches=5", "ppo.num_minibatches=5"),
    ("policy=LstmPolicy", "'MlpLstmPolicy', 'CnnLstmPolicy'"),
    ("env.options.vectorization_mode=async", "env.options.vectorization_mode='async'"),
    ('env={id: "atari:pong", num_envs: 2, options: {grayscale: false}}', "env.options.grayscale=false"),
    ('env={id: "atari:pong", num_envs: 2, options: {batch_size: 1}}', "env.options.batch_size=1"),
    ('env={id: "atari:combat", num_envs: 2}', "ALE/Combat-v5"),
    ('env={id: "atari:pong", num_envs: 2, options: {img_width: 64}}', "img_width=64"),
    ("policy_kwargs.bogus=1", "policy_kwargs={'lstm_hidden_size': 16, 'bogus': 1}"),
    ("policy=CnnLstmPolicy", "policy='CnnLstmPolicy'"),
    ("learner=sb3", "learner='sb3' is not allowed; choose one of: neuroevolution, ppo, sb3_recurrent_ppo"),
])
def test_config_errors_name_the_key(tmp_path, capsys, override, message):
    assert main(["train", str(write_config(tmp_path)), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "a failed start must not leave a run directory"
