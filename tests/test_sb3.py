"""sb3-contrib's RecurrentPPO as a learner: a run through the CLI (run directory, metrics, checkpoint that loads
back), the ppo keys as RecurrentPPO arguments, the Atari wrappers, config errors, evaluate on its checkpoints
(episodes, videos, memory view) and resume."""

import json
import tempfile

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3.common.evaluation import evaluate_policy

from fwp_rl.agents import sb3
from fwp_rl.cli import main
from fwp_rl.config import ConfigError, from_dict
from fwp_rl.evaluate import run_episodes
from fwp_rl.learners import load_config
from fwp_rl.memory_view import memory_images
from fwp_rl.runs import NonFiniteError, load_checkpoint, read_metrics, save_checkpoint

from conftest import assert_frames_show_a_moving_picture, coloured_fraction

RECALL = dict(learner="sb3_recurrent_ppo", name="recall", seed=3,
              env=dict(id="fwp_rl/Recall-v0", num_envs=4, options=dict(k=3, delay=5)),
              policy="MlpLstmPolicy", policy_kwargs=dict(lstm_hidden_size=16),
              ppo=dict(total_steps=2 * 96, num_steps=24, num_minibatches=2, learning_rate=1e-3, device="cpu"))


def write_config(tmp_path, **changes):
    data = {**RECALL, "run": dict(root=str(tmp_path / "runs"), wandb="disabled", checkpoint_every=1), **changes}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_writes_a_run_whose_checkpoint_loads_back(tmp_path, monkeypatch):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    assert main(["train", str(write_config(tmp_path))]) == 0
    assert not list(temporary.glob("SB3-*"))  # no folder of SB3's default logger
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
    ("seed=1073741824", "seed=1073741824 is not allowed: it must be an integer from 0 to 1073741823"),
    ("learner=sb3", "learner='sb3' is not allowed; choose one of: neuroevolution, ppo, sb3_recurrent_ppo"),
])
def test_config_errors_name_the_key(tmp_path, capsys, override, message):
    assert main(["train", str(write_config(tmp_path)), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "a failed start must not leave a run directory"


@pytest.fixture(scope="module")
def sb3_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sb3")
    assert main(["train", str(write_config(tmp_path))]) == 0
    return tmp_path / "runs" / "recall"


def test_evaluate_plays_the_episodes_sb3s_evaluate_policy_plays(sb3_run, tmp_path, capsys):
    # Sharpened action logits make each answer hinge on what the LSTM remembers of the cue, so the episodes
    # match only if the LSTM state is carried and reset at episode starts as SB3 does.
    model = sb3.load_model(sb3_run)
    with torch.no_grad():
        model.policy.action_net.weight.mul_(100)
    payload = load_checkpoint(sb3_run)
    payload["policy"] = model.policy.state_dict()
    save_checkpoint(tmp_path / "sharp.pt", payload)

    assert main(["evaluate", str(tmp_path / "sharp.pt"), "--episodes", "8", "--seed", "1", "--deterministic"]) == 0
    figures = json.loads((tmp_path / "sharp.pt.eval.json").read_text())
    assert "episode return" in capsys.readouterr().out
    config = load_config(str(sb3_run / "config.yaml"), [])
    returns, lengths = evaluate_policy(model, sb3.one_env(config, seed=1), n_eval_episodes=8, deterministic=True,
                                       return_episode_rewards=True)
    assert figures["returns"] == returns and 0 < sum(returns) < 8
    assert figures["length_min"] == figures["length_max"] == 7 and lengths == [7] * 8

    # Sampled actions: the same seed gives the same episodes.
    assert main(["evaluate", str(sb3_run), "--episodes", "5", "--seed", "2"]) == 0
    first = json.loads((sb3_run / "checkpoints" / "latest.pt.eval.json").read_text())
    assert main(["evaluate", str(sb3_run), "--episodes", "5", "--seed", "2"]) == 0
    again = json.loads((sb3_run / "checkpoints" / "latest.pt.eval.json").read_text())
    assert first["returns"] == again["returns"] and first["deterministic"] is False


def test_evaluate_carries_the_lstm_state_and_resets_it_at_episode_starts(sb3_run):
    model = sb3.load_model(sb3_run)
    calls = []
    predict = model.predict

    def spy(obs, state=None, episode_start=None, deterministic=False):
        actions, new_state = predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        calls.append((state, bool(episode_start[0]), new_state))
        return actions, new_state

    model.predict = spy
    config = load_config(str(sb3_run / "config.yaml"), [])
    episodes, _ = run_episodes(sb3.EvaluationAgent(model, False), sb3.EvaluationEnvs(config, 0), None, 3, 0)
    assert [e.length for e in episodes] == [7, 7, 7]
    assert [start for _, start, _ in calls] == ([True] + [False] * 6) * 3
    assert all(state is previous for (state, _, _), (_, _, previous) in zip(calls[1:], calls))


def test_evaluation_agent_hands_on_the_actor_lstm_cell_and_the_probabilities_it_acts_by(sb3_run):
    model = sb3.load_model(sb3_run)
    agent = sb3.EvaluationAgent(model, deterministic=True)
    state = None
    for obs, start in ((np.eye(4, dtype=np.float32)[:1], True), (np.zeros((1, 4), dtype=np.float32), False)):
        starts = np.array([start])
        actions, memory, probs = agent.act(obs, starts, record=True)
        expected, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        assert actions == expected and probs.shape == (3,) and probs.sum() == pytest.approx(1, abs=1e-6)
        assert probs.argmax() == actions[0]
        assert len(memory) == 2 and np.array_equal(memory[1].numpy(), state[1][0, 0])  # (h, c) of the one layer
    kind, images = memory_images(memory)
    assert kind == "recurrent state" and images.shape == (1, 16, 1)  # the 16 cell values: a column of the heatmap
    assert agent.act(obs, starts, record=False)[1:] == (None, None)


@pytest.mark.parametrize("memory_view", [False, True])
def test_evaluate_writes_the_video_of_an_sb3_checkpoint(sb3_run, tmp_path, memory_view, first_episode_video):
    video = first_episode_video(sb3_run, tmp_path, memory_view, steps=7)  # the 7-step episode
    if memory_view:
        assert video.name == "recall_seed3_latest_evalseed0_ep0_memory.mp4"


def test_evaluate_refuses_an_sb3_checkpoint_without_its_model(sb3_run, tmp_path, capsys):
    payload = load_checkpoint(sb3_run)
    del payload["policy"]
    save_checkpoint(tmp_path / "empty.pt", payload)
    assert main(["evaluate", str(tmp_path / "empty.pt")]) == 2
    err = capsys.readouterr().err
    assert "does not fit this config's policy: KeyError" in err and "Traceback" not in err


def test_resume_restores_the_model_the_optimizer_the_step_and_the_generators(sb3_run):
    config = load_config(str(sb3_run / "config.yaml"), [])
    payload = load_checkpoint(sb3_run)
    saved = sb3.load_model(sb3_run)
    env = sb3.make_env(config)
    try:
        model = sb3.make_model(config, env)
        sb3.restore(model, payload, config)
        sb3.set_generator_states(payload)
        assert torch.equal(torch.get_rng_state(), payload["torch_rng"])
        assert np.array_equal(np.random.get_state()[1], payload["numpy_rng"][1])
    finally:
        env.close()
    assert model.num_timesteps == 192
    for (name, value), expected in zip(model.policy.state_dict().items(), saved.policy.state_dict().values()):
        assert torch.equal(value, expected), name
    adam, expected = model.policy.optimizer.state_dict()["state"], saved.policy.optimizer.state_dict()["state"]
    assert adam.keys() == expected.keys() and all(adam[k]["step"] == expected[k]["step"] > 0 for k in adam)
    assert all(torch.equal(adam[k]["exp_avg_sq"], expected[k]["exp_avg_sq"]) for k in adam)


def test_resume_continues_the_run(tmp_path, wandb_runs):
    assert main(["train", str(write_config(tmp_path)), "--set", "run.wandb=offline"]) == 0
    run_dir = tmp_path / "runs" / "recall"
    (first,) = wandb_runs
    assert first.history() == read_metrics(run_dir / "metrics.jsonl")
    assert first.finished
    assert load_checkpoint(run_dir)["wandb_id"] == first.id
    # A crash after the checkpoint of update 2 left a metrics line for update 3: resume drops it and trains
    # updates 3 and 4, its W&B run continued with just those.
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 288, "update": 3}) + "\n")
    assert main(["train", "--resume", str(run_dir), "--set", "ppo.total_steps=384"]) == 0
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [96, 192, 288, 384] and [r["update"] for r in records] == [1, 2, 3, 4]
    assert "policy_loss" in records[2]
    # The first two updates annealed over 2 updates; the rest anneals over the 4 of the new total, as our PPO.
    assert [r["learning_rate"] for r in records] == pytest.approx([1e-3, 0.5e-3, 0.5e-3, 0.25e-3])
    payload = load_checkpoint(run_dir)
    assert (payload["update"], payload["global_step"]) == (4, 384) and payload["wandb_id"] == first.id
    assert len(wandb_runs) == 2
    resumed = wandb_runs[1]
    assert (resumed.init["id"], resumed.init["resume"], resumed.init["dir"]) == (first.id, "allow", str(run_dir))
    assert resumed.init["config"]["ppo"]["total_steps"] == 384
    assert resumed.history() == records[2:]
    assert resumed.finished


def test_resume_refuses_a_checkpoint_of_another_policy_and_writes_nothing(sb3_run, capsys):
    metrics_before = (sb3_run / "metrics.jsonl").read_bytes()
    checkpoint_before = (sb3_run / "checkpoints" / "latest.pt").read_bytes()
    assert main(["train", "--resume", str(sb3_run), "--set", "policy_kwargs.lstm_hidden_size=32"]) == 2
    err = capsys.readouterr().err
    assert "the config differs from the checkpoint's: policy_kwargs.lstm_hidden_size 16 -> 32" in err
    assert "Traceback" not in err
    assert (sb3_run / "metrics.jsonl").read_bytes() == metrics_before
    assert (sb3_run / "checkpoints" / "latest.pt").read_bytes() == checkpoint_before


def test_evaluate_plays_atari_in_sb3s_wrappers_and_films_the_colour_screen(tmp_path):
    # 100 frames per game, without no-ops: FireResetEnv's FIRE and UP (8 frames, not agent steps), then 23 agent
    # steps of 4 frames; then the game is cut, and Monitor ends the episode.
    env = dict(id="atari:pong", num_envs=1, options=dict(preset="cleanrl_lstm", max_num_frames_per_episode=100,
                                                         noop_max=0))
    path = write_config(tmp_path, env=env, policy="CnnLstmPolicy", ppo=dict(
        total_steps=8, num_steps=8, num_minibatches=1, device="cpu"))
    assert main(["train", str(path)]) == 0
    run_dir = tmp_path / "runs" / "recall"
    assert main(["evaluate", str(run_dir), "--episodes", "2", "--video", str(tmp_path / "video")]) == 0
    figures = json.loads((run_dir / "checkpoints" / "latest.pt.eval.json").read_text())
    assert figures["episodes"] == 2 and figures["length_min"] == figures["length_max"] == 23
    frames = imageio.mimread(tmp_path / "video" / "recall_seed3_latest_evalseed0_ep0.mp4")
    assert len(frames) == 23 and frames[0].shape == (210, 160, 3)
    assert_frames_show_a_moving_picture(frames)  # the game played, not one screen over and over
    assert min(coloured_fraction(f) for f in frames) > 0.5  # the colour screen, not the grey observation


def test_an_update_with_a_nan_loss_or_parameter_stops_the_run(sb3_run):
    model = sb3.load_model(sb3_run)
    figures = dict(policy_loss=0.1, value_loss=0.2, entropy=1.0, approx_kl=0.01)
    sb3.check_update(figures, model, 3)
    with pytest.raises(NonFiniteError, match="update 3: value_loss, approx_kl not finite. No checkpoint holds it"):
        sb3.check_update(dict(figures, value_loss=float("inf"), approx_kl=float("nan")), model, 3)
    with torch.no_grad():
        model.policy.value_net.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="update 4: parameter value_net.bias is not finite"):
        sb3.check_update(figures, model, 4)


def test_sb3_has_no_skipping_of_nonfinite_minibatches(tmp_path, capsys):
    assert main(["train", str(write_config(tmp_path)), "--set", "ppo.nonfinite=skip"]) == 2
    assert "ppo.nonfinite='skip' is not allowed for sb3_recurrent_ppo" in capsys.readouterr().err


def test_normalize_observations_is_vec_normalize_saved_in_the_checkpoint_and_frozen_in_replays(tmp_path):
    path = write_config(tmp_path, normalize_observations=True, run=dict(
        root=str(tmp_path / "runs"), wandb="disabled", checkpoint_every=1, eval_every=1, eval_episodes=2))
    assert main(["train", str(path)]) == 0
    run_dir = tmp_path / "runs" / "recall"
    statistics = load_checkpoint(run_dir)["observation_statistics"]
    assert statistics["count"].item() == pytest.approx(4 + 192, abs=1e-3)  # the 4 envs' first resets, 2 rollouts
    cue_rate = statistics["mean"][:3].sum().item()  # one cue shown at one step of each 7-step episode
    assert 0 < cue_rate < 0.5 and statistics["var"][:3].min().item() > 0

    model = sb3.load_model(run_dir)
    venv = model.get_vec_normalize_env()
    assert not venv.training and venv.norm_obs and not venv.norm_reward
    np.testing.assert_array_equal(venv.obs_rms.mean, statistics["mean"].numpy())
    config = load_config(str(run_dir / "config.yaml"), [])
    envs = sb3.EvaluationEnvs(config, 0, sb3.observation_statistics(venv))
    first = envs.reset()
    expected = np.clip((envs.venv.get_original_obs() - venv.obs_rms.mean) / np.sqrt(venv.obs_rms.var + 1e-8), -10, 10)
    np.testing.assert_allclose(first, expected, rtol=1e-5)
    count = envs.venv.obs_rms.count
    envs.send(np.zeros(1, dtype=np.int64))
    envs.recv()
    assert envs.venv.obs_rms.count == count  # frozen
    envs.close()


def test_normalize_observations_is_refused_for_atari_frames():
    with pytest.raises(ConfigError, match="normalize_observations=true is not allowed for 'atari:pong'"):
        from_dict(sb3.SB3Config, {**RECALL, "normalize_observations": True, "policy": "CnnLstmPolicy",
                                  "env": dict(id="atari:pong", num_envs=2)})
