"""fwp-rl evaluate on PPO checkpoints: the figures and their JSON, videos with and without the memory view,
and the errors for paths and checkpoints that cannot be evaluated; the double pole's memory view.
(SB3 checkpoints: tests/test_sb3.py.)"""

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from fwp_rl.agents import neuroevolution as ne
from fwp_rl import evaluate as evaluate_module
from fwp_rl.agents import ppo
from fwp_rl.cli import main
from fwp_rl.config import PolicyConfig, from_dict
from fwp_rl.envs import double_pole
from fwp_rl.evaluate import double_pole_episode, write_video
from fwp_rl.memory_view import WINDOW, memory_images, render_memory_video
from fwp_rl.runs import load_checkpoint, save_checkpoint

from conftest import assert_frames_show_a_moving_picture, coloured_fraction


@pytest.fixture(scope="module")
def recall_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    config = from_dict(ppo.PPOConfig, dict(
        name="recall", env=dict(id="fwp_rl/Recall-v0", num_envs=4, options=dict(k=3, delay=2)),
        policy=dict(torso="mlp", core="delta", core_options=dict(hidden_size=8, num_heads=2)),
        ppo=dict(total_steps=96, num_steps=24, num_minibatches=2, device="cpu"),
        run=dict(root=str(root), wandb="disabled")))
    return ppo.train(config).run_dir


def test_evaluate_prints_and_writes_the_figures_of_its_episodes(recall_run, capsys):
    assert main(["evaluate", str(recall_run), "--episodes", "5", "--seed", "1"]) == 0
    figures = json.loads((recall_run / "checkpoints" / "latest.pt.eval.json").read_text())
    returns = np.array(figures["returns"])
    assert figures["episodes"] == 5 and len(returns) == 5 and set(returns) <= {0.0, 1.0}
    assert figures["return_mean"] == pytest.approx(returns.mean())
    assert figures["return_std"] == pytest.approx(returns.std())
    assert figures["length_min"] == figures["length_max"] == 4  # delay + 2 steps
    assert "episode return" in capsys.readouterr().out
    # Same seed, same episodes.
    assert main(["evaluate", str(recall_run), "--episodes", "5", "--seed", "1"]) == 0
    again = json.loads((recall_run / "checkpoints" / "latest.pt.eval.json").read_text())
    assert again["returns"] == figures["returns"]


@pytest.mark.parametrize("memory_view", [False, True])
def test_video_of_the_first_episode(recall_run, tmp_path, memory_view, first_episode_video):
    """The video of the first episode: a frame per step, a picture that moves, and with the memory view the fast
    weights of each head changing beside it."""
    first_episode_video(recall_run, tmp_path, memory_view, steps=4)  # the 4-step episode


def test_memory_images_show_each_heads_fast_weights_or_the_recurrent_state():
    kind, images = memory_images((torch.arange(2 * 3 * 4.).reshape(2, 3, 4),))
    assert kind == "fast weights per head" and images.shape == (2, 3, 4) and images[1, 0, 0] == 12
    kind, images = memory_images((torch.zeros(5), torch.arange(5.)))  # LSTM (h, c): the cell, one column
    assert kind == "recurrent state" and images.shape == (1, 5, 1) and images[0, 4, 0] == 4
    kind, images = memory_images((torch.zeros(3), torch.arange(10.).reshape(2, 5)))  # direct FWP (h, W)
    assert kind == "fast net weights" and images.shape == (1, 2, 5) and images[0, 1, 0] == 5


def test_evaluate_errors(recall_run, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["evaluate", str(recall_run), "--memory-view"]) == 2
    assert "--video" in capsys.readouterr().err
    assert main(["evaluate", str(recall_run), "--episodes", "0"]) == 2
    assert "--episodes=0 is not allowed: it must be >= 1" in capsys.readouterr().err
    assert main(["evaluate", str(recall_run), "--seed", "-1"]) == 2
    assert "--seed=-1 is not allowed: it must be an integer from 0 to 1073741823" in capsys.readouterr().err
    payload = load_checkpoint(recall_run)
    payload["config"]["env"]["id"] = "NotHere-v0"
    save_checkpoint(tmp_path / "foreign.pt", payload)
    assert main(["evaluate", str(tmp_path / "foreign.pt")]) == 2
    err = capsys.readouterr().err
    assert "env cannot be built here" in err and "NotHere-v0" in err and "Traceback" not in err


def test_a_video_already_there_is_a_one_line_error_before_any_episode_unless_overwrite(recall_run, tmp_path, capsys,
                                                                                      monkeypatch):
    old = tmp_path / "recall_seed0_latest_evalseed0_ep0.mp4"
    old.write_bytes(b"an earlier video")
    played, episodes = [], evaluate_module.policy_episodes
    monkeypatch.setattr(evaluate_module, "policy_episodes", lambda *a, **k: (played.append(1), episodes(*a, **k))[1])
    for argv, message in [(["--video", str(tmp_path)], f"--video {tmp_path}: {old} exists already; give --overwrite "
                                                       "to replace it, or another directory"),
                          (["--video", str(old)], f"--video {old}: that is a file; --video names the directory to "
                                                  "write the video into"),
                          (["--overwrite"], "--overwrite replaces a video already there: give --video DIR too")]:
        assert main(["evaluate", str(recall_run), "--episodes", "1", *argv]) == 2
        err = capsys.readouterr().err
        assert err == f"fwp-rl: error: {message}\n"
    assert played == [] and old.read_bytes() == b"an earlier video"
    assert main(["evaluate", str(recall_run), "--episodes", "1", "--video", str(tmp_path), "--overwrite"]) == 0
    assert played == [1] and len(imageio.mimread(old)) == 4  # the 4-step episode


@pytest.fixture(scope="module")
def double_pole_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("double_pole")
    config_file = root / "run.yaml"
    config_file.write_text("learner: neuroevolution\nname: tiny\nenv: {options: {task: nonmarkov}}\n"
                           "policy: {torso: identity, action_squash: true, core: direct,\n"
                           "         core_options: {hidden_size: 1, slow_size: 2}}\n"
                           "search: {algorithm: snes, popsize: 6, max_generations: 3}\n"
                           f"run: {{root: {root / 'runs'}, wandb: disabled}}\n")
    assert main(["train", str(config_file), "--set", "seed=1"]) == 0
    return root / "runs" / "tiny"


def test_a_run_evolved_on_a_gpu_replays_on_the_cpu(double_pole_run, tmp_path, monkeypatch, capsys):
    payload = torch.load(double_pole_run / "checkpoints" / "latest.pt", weights_only=True)
    payload["config"]["search"]["device"] = "cuda"
    torch.save(payload, tmp_path / "gpu.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["evaluate", str(tmp_path / "gpu.pt")]) == 0
    assert "generalization" in capsys.readouterr().out


def test_double_pole_video_with_the_memory_view(double_pole_run, tmp_path):
    """The double pole's video shows the cart and poles moving at 50 frames a second; with the memory view, beside
    them, the fast net's weights as the slow net rewrites them, in colour, on one colour scale for the episode."""
    assert main(["evaluate", str(double_pole_run), "--video", str(tmp_path)]) == 0
    plain = imageio.mimread(tmp_path / "tiny_seed1_latest_evalseed0_ep0.mp4")
    assert main(["evaluate", str(double_pole_run), "--video", str(tmp_path), "--memory-view"]) == 0
    video = tmp_path / "tiny_seed1_latest_evalseed0_ep0_memory.mp4"
    frames = imageio.mimread(video)
    assert imageio.get_reader(video).get_meta_data()["fps"] == 50
    steps = json.loads((double_pole_run / "checkpoints" / "latest.pt.eval.json").read_text())["fitness_episode_steps"]
    # The start, every balanced step and the step that failed; the same frames in both videos.
    assert len(frames) == len(plain) == steps + 2
    assert plain[0].shape == (300, 600, 3)
    assert_frames_show_a_moving_picture(plain)
    height, width = frames[0].shape[:2]
    assert {f.shape for f in frames} == {frames[0].shape} and width > 1000
    assert_frames_show_a_moving_picture(frames, (slice(40, None), slice(0, 480)))  # the cart and poles, no title
    # The fast net panel (upper right, left of the colour bar) changes: the slow net rewrites W every step.
    panel = (slice(60, 200), slice(700, 1050))
    assert_frames_show_a_moving_picture(frames, panel)
    assert all(np.abs(b[panel].astype(float) - a[panel]).mean() > 1 for a, b in zip(frames[1:-1], frames[2:]))
    assert min(coloured_fraction(f[panel]) for f in frames) > 0.05  # the weights in colour, not a blank panel


@pytest.mark.parametrize("core, options, kind", [
    ("direct", dict(hidden_size=1, slow_size=3), "fast net weights"),
    ("delta", dict(hidden_size=4, num_heads=2), "fast weights per head"),
    ("lstm", dict(hidden_size=3), "recurrent state"),
])
def test_double_pole_episode_records_the_controllers_memory_and_output(core, options, kind):
    config = ne.NeuroevolutionConfig(env=ne.EnvConfig(options={"task": "nonmarkov"}), policy=PolicyConfig(
        torso="identity", core=core, core_options=options, action_squash=True))
    policy = ne.make_policy(config)
    env = double_pole.make_config(task="nonmarkov")
    recording = double_pole_episode(policy, env, max_steps=30)
    n = len(recording["frames"])
    assert 2 <= n <= 31 and len(recording["memories"]) == len(recording["outputs"]) == n
    outputs = np.array(recording["outputs"])
    assert recording["kind"] == kind and outputs.shape == (n, 1) and ((outputs >= 0) & (outputs <= 1)).all()
    # Step 0 is the plain policy's step on the start: its output o and its memory after reading it.
    sim = double_pole.DoublePole(env)
    obs = sim.reset(1).to(policy.dtype)
    with torch.no_grad():
        actions, state, _, _ = policy.act(obs, policy.initial_state(1), torch.ones(1, dtype=torch.bool), True)
    np.testing.assert_allclose(outputs[0], policy.env_actions(actions)[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(recording["memories"][0], memory_images(tuple(s[0] for s in state))[1], rtol=1e-6)
    assert not np.allclose(recording["memories"][1], recording["memories"][0])


def test_videos_of_odd_sized_frames_are_padded_to_even_sizes(tmp_path):
    frames = [np.full((5, 7, 3), v, dtype=np.uint8) for v in (0, 255)]
    # H.264 in yuv420p refuses odd sizes
    assert write_video(tmp_path / "odd.mp4", frames, fps=4) == tmp_path / "odd.mp4"
    assert [f.shape for f in imageio.mimread(tmp_path / "odd.mp4")] == [(6, 8, 3)] * 2


def test_an_interrupted_video_leaves_the_previous_one_whole(tmp_path):
    """Ctrl-C while ffmpeg encodes (seconds for a long episode): the video written before is still there, whole."""
    out = tmp_path / "run.mp4"
    write_video(out, [np.full((8, 8, 3), 50, dtype=np.uint8)] * 3, fps=4)
    before = out.read_bytes()

    def frames():
        yield np.full((8, 8, 3), 200, dtype=np.uint8)
        raise KeyboardInterrupt  # while the frames are made and encoded, one by one

    with pytest.raises(KeyboardInterrupt):
        write_video(out, frames(), fps=4)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["run.mp4"]


def test_videos_play_at_the_envs_frame_rate_or_fps_and_runs_seeds_and_checkpoints_never_share_a_name(
        recall_run, tmp_path, capsys):
    """Recall's 4 steps a second (its render_fps), or --fps; a name per run, seed, checkpoint and episode."""
    video = tmp_path / "recall_seed0_latest_evalseed0_ep0.mp4"
    assert main(["evaluate", str(recall_run), "--episodes", "1", "--video", str(tmp_path)]) == 0
    assert imageio.get_reader(video).get_meta_data()["fps"] == 4
    assert main(["evaluate", str(recall_run), "--episodes", "1", "--video", str(tmp_path), "--fps", "2.5",
                 "--overwrite"]) == 0
    assert imageio.get_reader(video).get_meta_data()["fps"] == 2.5
    payload = load_checkpoint(recall_run)
    payload["config"]["seed"] = 1  # another seed's run of the same name
    save_checkpoint(tmp_path / "other" / "latest.pt", payload)
    assert main(["evaluate", str(tmp_path / "other" / "latest.pt"), "--episodes", "1", "--video", str(tmp_path)]) == 0
    assert main(["evaluate", str(recall_run), "--episodes", "1", "--seed", "3", "--video", str(tmp_path)]) == 0
    for group in ("recall_lstm", "recall_delta"):  # seed 0 of two train --seeds groups: run.group names the run
        payload["config"].update(name="seed_0", seed=0, run={**payload["config"]["run"], "group": group})
        save_checkpoint(tmp_path / group / "seed_0" / "checkpoints" / "latest.pt", payload)
        assert main(["evaluate", str(tmp_path / group / "seed_0"), "--episodes", "1", "--video", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == [
        "recall_delta_seed0_latest_evalseed0_ep0.mp4", "recall_lstm_seed0_latest_evalseed0_ep0.mp4",
        "recall_seed0_latest_evalseed0_ep0.mp4", "recall_seed0_latest_evalseed3_ep0.mp4",
        "recall_seed1_latest_evalseed0_ep0.mp4"]
    capsys.readouterr()
    for argv, message in [(["--fps", "0"], "--fps 0.0 is not allowed: it must be a positive number"),
                          (["--fps", "nan"], "--fps nan is not allowed: it must be a positive number"),
                          (["--memory-view", "--shared-scale", "-1"], "--shared-scale -1.0 is not allowed"),
                          (["--shared-scale", "2"], "--shared-scale colours the memory view: give --video DIR "
                                                    "--memory-view too")]:
        assert main(["evaluate", str(recall_run), "--episodes", "1", "--video", str(tmp_path / "new"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_the_recurrent_state_scrolls_by_as_a_units_x_time_heatmap_in_frames_of_one_size():
    steps, units = WINDOW + 30, 6
    frames = [np.full((40, 80, 3), 10 * (t % 20), dtype=np.uint8) for t in range(steps)]
    memories = [np.full((1, units, 1), np.sin(t / 5)) for t in range(steps)]
    outputs = [np.array([0.2, 0.8]) for _ in range(steps)]
    video = list(render_memory_video(frames, memories, outputs, "recurrent state", ["0", "1"], scale=2.0))
    assert len(video) == steps and len({f.shape for f in video}) == 1
    # Past the window the heatmap scrolls: each frame shows a new column, so it differs from the one before.
    height, width = video[0].shape[:2]
    board = (slice(int(0.1 * height), int(0.55 * height)), slice(int(0.45 * width), int(0.85 * width)))
    assert_frames_show_a_moving_picture(video[WINDOW:], board, level=10)


def test_evaluate_wandb_logs_the_figures_and_the_video_in_the_training_runs_group(recall_run, tmp_path, wandb_runs,
                                                                                  capsys):
    """`evaluate --wandb`: one W&B run of job type "evaluate", grouped, tagged and configured as the training run
    (fwp_rl.runs.start_run_wandb), with the figures of eval.json and the video, its files in the run directory."""
    import wandb

    assert main(["evaluate", str(recall_run), "--episodes", "3", "--video", str(tmp_path), "--wandb", "offline"]) == 0
    (run,) = wandb_runs
    init = run.init
    assert init["mode"] == "offline" and init["job_type"] == "evaluate" and init["dir"] == str(recall_run)
    assert init["group"] == "recall" and init["name"] == f"{recall_run.name} evaluate latest"
    assert init["config"]["core"] == "delta" and init["config"]["task"] == "fwp_rl/Recall-v0"
    assert {"ppo", "delta", "fwp_rl/Recall-v0"} <= set(init["tags"])
    ((values, step),) = run.logged
    figures = json.loads((recall_run / "checkpoints" / "latest.pt.eval.json").read_text())
    assert step == 0 and values["evaluate/return_mean"] == figures["return_mean"]
    assert values["evaluate/episodes"] == 3 and "evaluate/returns" not in values
    assert isinstance(values["evaluate/video"], wandb.Video)
    assert run.finished
    assert f"upload with: wandb sync {run.settings.sync_dir}" in capsys.readouterr().out
