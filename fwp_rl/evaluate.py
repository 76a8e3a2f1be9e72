"""``fwp-rl evaluate``: replay what a checkpoint holds and report how it does.

Checkpoints of either learner on any env: PPO (Atari and Gymnasium ids) and neuroevolution (the double
pole, with its success test, and Gymnasium ids). Episodes run one after another in a single env, so
short episodes are not over-represented. The figures are printed as a table and written as JSON beside
the checkpoint (``<checkpoint>.eval.json``); ``--video`` writes an mp4 of the first episode, and
``memory_view`` puts the agent's memory and action probabilities beside the game (``fwp_rl.memory_view``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fwp_rl.config import ConfigError, from_dict
from fwp_rl.runs import CheckpointError, atomic_write_bytes, load_checkpoint


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


def _ppo_policy(payload: dict):
    from fwp_rl.agents.ppo import PPOConfig, make_policy, resolve_device
    from fwp_rl.envs.vector import make_vector_env

    try:
        config = from_dict(PPOConfig, payload["config"])
        env = make_vector_env(config.env)
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"the checkpoint's env cannot be built here: {e}") from None
    try:
        policy = make_policy(config, env.single_observation_space, env.single_action_space, resolve_device("auto"))
    finally:
        env.close()
    policy.load_state_dict(payload["policy"])
    return config, policy


def _frame(envs, obs: np.ndarray, atari: bool) -> np.ndarray:
    """The picture of env 0: for Atari the newest frame the agent sees, enlarged 3x; else the env's render."""
    if not atari:
        return envs.render()
    frame = obs[0][-1][..., None].repeat(3, -1) if envs.config.grayscale else obs[0][-3:].transpose(1, 2, 0)
    return frame.repeat(3, 0).repeat(3, 1)


def run_episodes(policy, env_id: str, options: dict, episodes: int, deterministic: bool, seed: int,
                 record: bool = False) -> tuple[list, dict]:
    """``episodes`` whole episodes, one after another in one env (memory reset at every done, as in training)
    -> (their ``Episode``s, and with ``record`` the first episode's frames, memory images and action
    probabilities)."""
    from fwp_rl.envs.vector import VectorEnvConfig, make_vector_env
    from fwp_rl.memory_view import memory_images

    config = VectorEnvConfig(env_id, 1, dict(options))
    atari = config.atari
    if record and not atari:
        config.options["render_mode"] = "rgb_array"
    envs = make_vector_env(config, seed=seed)
    recording = {"frames": [], "memories": [], "probs": [], "kind": ""}
    finished: list = []
    torch.manual_seed(seed)
    try:
        obs = envs.reset(seed=seed)
        state = policy.initial_state(1)
        start = torch.ones(1, dtype=torch.bool, device=policy.device)
        with torch.no_grad():
            while len(finished) < episodes:
                obs_t = torch.as_tensor(obs, device=policy.device)
                head, _, new_state = policy(obs_t, state, start, with_values=False)
                if record and not finished:
                    recording["frames"].append(_frame(envs, obs, atari))
                    recording["kind"], images = memory_images(tuple(s[0] for s in new_state))
                    recording["memories"].append(images)
                    recording["probs"].append(torch.softmax(head[0][0], -1).cpu().numpy() if policy.discrete
                                              else head[0][0].reshape(-1).cpu().numpy())
                dist = policy._distribution(head)
                actions = policy._mode(head) if deterministic else dist.sample()
                step = envs.step(policy.env_actions(actions).cpu().numpy())
                finished.extend(step.episodes)
                obs, state = step.obs, new_state
                start = torch.as_tensor(step.done, device=policy.device)
    finally:
        envs.close()
    return finished[:episodes], recording


def _summary(episodes: list) -> dict:
    returns = np.array([e.raw_return for e in episodes], dtype=np.float64)
    lengths = np.array([e.length for e in episodes], dtype=np.float64)
    figures = {"episodes": len(episodes)}
    for name, values in (("return", returns), ("length", lengths)):
        figures.update({f"{name}_mean": float(values.mean()), f"{name}_std": float(values.std()),
                        f"{name}_min": float(values.min()), f"{name}_max": float(values.max())})
    figures["returns"] = returns.tolist()
    return figures


def _print_table(figures: dict, title: str, console: Console) -> None:
    table = Table(title=title)
    for column in ("", "mean", "std", "min", "max"):
        table.add_column(column, justify="right")
    for name in ("return", "length"):
        table.add_row(f"episode {name}", *(f"{figures[f'{name}_{k}']:.4g}" for k in ("mean", "std", "min", "max")))
    console.print(table)


def _write_video(out: Path, frames: list, fps: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(out, frames, fps=fps, macro_block_size=1)


def evaluate_checkpoint(path: str, episodes: int = 10, deterministic: bool = False, video_dir: str | None = None,
                        seed: int = 0, memory_view: bool = False, video_steps: int = 1_000,
                        console: Console | None = None) -> dict:
    """Replay the checkpoint at ``path`` (a file or a run directory); print the figures, write them as JSON
    beside the checkpoint and return them; with ``video_dir``, write an mp4 of the first episode."""
    console = console or Console()
    if episodes < 1:
        raise ConfigError(f"--episodes={episodes} is not allowed: it must be >= 1")
    payload = load_checkpoint(path)
    checkpoint = Path(path) / "checkpoints" / "latest.pt" if Path(path).is_dir() else Path(path)
    learner = payload.get("learner")
    if learner == "ppo":
        config, policy = _ppo_policy(payload)
        env_id, options = config.env.id, config.env.options
    elif learner == "neuroevolution":
        from fwp_rl.agents.neuroevolution import DOUBLE_POLE

        config, policy = _neuroevolution_policy(payload)
        if config.env.id == DOUBLE_POLE:
            return _evaluate_double_pole(config, policy, checkpoint, video_dir, memory_view, video_steps, console)
        env_id, options = config.env.id, config.env.options
        deterministic = True  # evolved controllers act by their mode, as in their fitness episodes
    else:
        raise CheckpointError(f"{str(path)!r} is a checkpoint of learner {learner!r}; supported: 'ppo', "
                              "'neuroevolution'")
    record = video_dir is not None
    found, recording = run_episodes(policy, env_id, options, episodes, deterministic, seed, record)
    figures = {"checkpoint": str(checkpoint), "env": env_id, "deterministic": deterministic, "seed": seed,
               **_summary(found)}
    _print_table(figures, f"{config.name}: {episodes} episodes of {env_id}"
                 f"{' (deterministic)' if deterministic else ''}", console)
    _save_figures(checkpoint, figures, console)
    if record:
        frames = recording["frames"]
        if memory_view:
            frames = _memory_view_frames(policy, recording)
        out = Path(video_dir) / f"{config.name}{'_memory' if memory_view else ''}.mp4"
        _write_video(out, frames, fps=30)
        console.print(f"video: {out} ({len(frames)} frames)")
    return figures


def _memory_view_frames(policy, recording: dict) -> list:
    from fwp_rl.memory_view import render_memory_video

    n = recording["probs"][0].shape[0]
    names = [str(i) for i in range(n)] if policy.discrete else [f"a{i}" for i in range(n)]
    return render_memory_video(recording["frames"], recording["memories"], recording["probs"], recording["kind"],
                               names)


def _save_figures(checkpoint: Path, figures: dict, console: Console) -> None:
    out = checkpoint.with_name(checkpoint.name + ".eval.json")
    text = json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in figures.items()},
                      indent=2)
    atomic_write_bytes(out, lambda f: f.write(text.encode()))
    console.print(f"figures: {out}")


def _evaluate_double_pole(config, policy, checkpoint: Path, video_dir, memory_view: bool, video_steps: int,
                          console: Console) -> dict:
    from fwp_rl.agents import neuroevolution
    from fwp_rl.envs import double_pole

    if memory_view:
        raise ConfigError("--memory-view is not available for double pole checkpoints: their video shows the cart")
    env = double_pole.make_config(**config.env.options)
    flat = policy.get_flat_parameters()
    fitness, steps = neuroevolution.population_fitness(policy, flat[None], env)
    test = neuroevolution.champion_test(policy, flat, env)
    figures = {"checkpoint": str(checkpoint), "task": env.task, "fitness": float(fitness[0]),
               "fitness_episode_steps": int(steps[0]), "balanced_of_100000": test.balanced,
               "generalization_of_625": test.generalization, "solved": test.solved(env)}
    for key, value in figures.items():
        console.print(f"{key}: {value}")
    _save_figures(checkpoint, figures, console)
    if video_dir is not None:
        frames = double_pole_frames(policy, env, video_steps)
        out = Path(video_dir) / f"{config.name}.mp4"
        _write_video(out, frames, fps=double_pole.DoublePoleEnv.metadata["render_fps"])
        console.print(f"video: {out} ({len(frames)} frames)")
    return figures
