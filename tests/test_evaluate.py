"""fwp-rl evaluate on PPO checkpoints: the figures and their JSON, videos with and without the memory view,
and the errors for paths and checkpoints that cannot be evaluated."""

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from fwp_rl.agents import ppo
from fwp_rl.cli import main
from fwp_rl.config import from_dict
from fwp_rl.memory_view import memory_images
from fwp_rl.runs import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def recall_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    config = from_dict(ppo.PPOConfig, dict(
        name="recall", env=dict(id="fwp_rl/Recall-v0", num_envs=4, options=dict(k=3, delay=2)),
        policy=dict(torso="mlp", core="delta", core_options=dict(hidden_size=8, num_heads=2)),
        ppo=dict(total_steps=96, num_steps=24, num_minibatches=2, device="cpu"),
        run=dict(root=str(root), wandb="disabled")))
    return ppo.train(config)


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
def test_video_of_the_first_episode(recall_run, tmp_path, memory_view):
    args = ["evaluate", str(recall_run), "--episodes", "1", "--video", str(tmp_path)]
    assert main(args + (["--memory-view"] if memory_view else [])) == 0
    (video,) = tmp_path.glob("*.mp4")
    frames = imageio.mimread(video)
    assert len(frames) == 4  # one frame per step of the 4-step episode
    if memory_view:  # the memory panel makes the frame wider than the env's own picture (48 x 192)
        assert frames[0].shape[1] > 192
    else:
        assert frames[0].shape[:2] == (48, 192)


def test_memory_images_show_each_heads_fast_weights_or_the_recurrent_state():
    kind, images = memory_images((torch.arange(2 * 3 * 4.).reshape(2, 3, 4),))
    assert kind == "fast weights per head" and images.shape == (2, 3, 4) and images[1, 0, 0] == 12
    kind, images = memory_images((torch.zeros(5), torch.arange(5.)))  # LSTM (h, c): the cell
    assert kind == "recurrent state" and images.shape == (1, 2, 3)
    assert images[0, 1, 1] == 4 and np.isnan(images[0, 1, 2])


def test_evaluate_errors(recall_run, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["evaluate", str(recall_run), "--memory-view"]) == 2
    assert "--video" in capsys.readouterr().err
    payload = load_checkpoint(recall_run)
    payload["config"]["env"]["id"] = "NotHere-v0"
    save_checkpoint(tmp_path / "foreign.pt", payload)
    assert main(["evaluate", str(tmp_path / "foreign.pt")]) == 2
    err = capsys.readouterr().err
    assert "env cannot be built here" in err and "NotHere-v0" in err and "Traceback" not in err
