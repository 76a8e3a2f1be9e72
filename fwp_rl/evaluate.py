"""``fwp-rl evaluate``: replay what a checkpoint holds and report how it does."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import torch
from rich.console import Console

from fwp_rl.config import ConfigError, from_dict
from fwp_rl.runs import CheckpointError, load_checkpoint


def _neuroevolution_policy(payload: dict):
    from fwp_rl.agents.neuroevolution import NeuroevolutionConfig, make_policy

    try:
        config = from_dict(NeuroevolutionConfig, payload["config"])
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"the checkpoint's config cannot be used here: {e}") from None
    policy = make_policy(config)
    policy.load_state_dict(payload["policy"])
    return config, policy


def double_pole_frames(policy, env, max_steps: int) -> list:
    """The frames of one episode from the standard start (at most ``max_steps`` control steps)."""
    from fwp_rl.envs import double_pole

    sim = double_pole.DoublePole(env, policy.device)
    obs = sim.reset(1)
    population = policy.population(policy.get_flat_parameters()[None])
    state = population.initial_state(1)
    frames = [double_pole.render_frame(sim.state[0].cpu())]
    with torch.no_grad():
        for _ in range(max_steps):
            actions, state = population.act(obs[None].to(policy.dtype), state)
            obs, alive = sim.step(actions[0])
            frames.append(double_pole.render_frame(sim.state[0].cpu()))
            if not bool(alive[0]):
                break
    return frames


def evaluate_checkpoint(path: str, video_dir: str | None = None, video_steps: int = 1_000,
                        console: Console | None = None) -> dict:
    """Replay the checkpoint at ``path``; print and return the figures; with ``video_dir``, write an mp4."""
    console = console or Console()
    payload = load_checkpoint(path)
    if payload.get("learner") != "neuroevolution":
        raise CheckpointError(f"{path!r}: evaluating checkpoints of learner {payload.get('learner')!r} is not "
                              "supported yet; supported: 'neuroevolution'")
    from fwp_rl.agents import neuroevolution
    from fwp_rl.envs import double_pole

    config, policy = _neuroevolution_policy(payload)
    if config.env.id != neuroevolution.DOUBLE_POLE:
        raise CheckpointError(f"{path!r}: evaluating {config.env.id!r} checkpoints is not supported yet")
    env = double_pole.make_config(**config.env.options)
    flat = policy.get_flat_parameters()
    fitness, steps = neuroevolution.population_fitness(policy, flat[None], env)
    test = neuroevolution.champion_test(policy, flat, env)
    figures = {"task": env.task, "fitness": float(fitness[0]), "fitness_episode_steps": int(steps[0]),
               "balanced_of_100000": test.balanced, "generalization_of_625": test.generalization,
               "solved": test.solved(env)}
    for key, value in figures.items():
        console.print(f"{key}: {value}")
    if video_dir is not None:
        frames = double_pole_frames(policy, env, video_steps)
        out = Path(video_dir) / f"{config.name}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        imageio.mimwrite(out, frames, fps=double_pole.DoublePoleEnv.metadata["render_fps"], macro_block_size=1)
        console.print(f"video: {out} ({len(frames)} frames)")
    return figures
