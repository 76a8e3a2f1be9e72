"""``fwp-rl evaluate``: replay what a checkpoint holds and report how it does.

Checkpoints of every learner on any env: PPO (Atari and Gymnasium ids), SB3's recurrent PPO (in the env
SB3 trained in, acting by SB3's own ``predict``) and neuroevolution (the double pole, with its success
test, and Gymnasium ids). Episodes run one after another in a single env, so short episodes are not
over-represented. The figures are printed as a table and written as JSON beside the checkpoint
(``<checkpoint>.eval.json``); ``--video DIR`` writes an mp4 of the first episode (``video_path``: a video there
already is refused before any episode is played, unless ``overwrite``), and ``memory_view`` puts
the agent's memory and its action probabilities (a double pole controller's output o) beside the game
(``fwp_rl.memory_view``). Each learner's entry in ``fwp_rl.learners`` names its evaluation here
(``evaluate_ppo``, ``evaluate_sb3``, ``evaluate_neuroevolution``), which plays the episodes and hands
them to ``Replay.report``.

Of a run directory it replays checkpoints/latest.pt, or with ``--checkpoint`` best.pt (the best evaluation during
training), previous.pt or another checkpoint file (``checkpoint_source``).

The episode loop (``run_episodes``) takes an agent, anything with ``action_names`` and
``act(obs [1, ...], episode_start [1] bool, record)`` -> (env actions [1, ...], and with ``record`` the
memory after this step as state tensors without the batch dimension and the action probabilities [A]
(Box actions: their means), else None and None); ``PolicyAgent`` is ours, ``fwp_rl.agents.sb3.EvaluationAgent``
SB3's. The evaluations during training (``run.eval_every``, ``fwp_rl.harness.Run.evaluate``) play their episodes
with it too, and summarise them with ``episode_figures``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fwp_rl.config import ConfigError, check_seed, from_dict
from fwp_rl.files import atomic_write_text, replacing
from fwp_rl.learners import LEARNERS, learner
from fwp_rl.runs import CheckpointError, checkpoint_file, load_checkpoint


def _neuroevolution_policy(payload: dict):
    from fwp_rl.agents.neuroevolution import NeuroevolutionConfig, make_policy

    try:
        saved = payload["config"]
        if str(saved.get("search", {}).get("device", "cpu")).startswith("cuda") and not torch.cuda.is_available():
            saved = dict(saved, search=dict(saved["search"], device="cpu"))  # a run evolved on a GPU replays here
        config = from_dict(NeuroevolutionConfig, saved)
    except (ConfigError, KeyError, AttributeError) as e:
        raise CheckpointError(f"the checkpoint's config cannot be used here: {e}") from None
    policy = make_policy(config)
    policy.load_state_dict(payload["policy"])
    return config, policy


def double_pole_episode(policy, env, max_steps: int) -> dict:
    """One episode from the standard start (at most ``max_steps`` control steps) as a recording: its frames,
    and for each the controller's memory after reading it (``memory_images``) and its output o in [0, 1].

    The controller also reads the last frame (the failing state, or the state after ``max_steps``): its
    output there is shown but never acted on.
    """
    from fwp_rl.envs import double_pole
    from fwp_rl.memory_view import memory_images
    from fwp_rl.population import MemoryController

    sim = double_pole.DoublePole(env, policy.device)
    obs = sim.reset(1)
    controller = MemoryController(policy.population(policy.get_flat_parameters()[None]), 1)
    recording = {"frames": [], "memories": [], "outputs": [], "kind": "", "names": ["o"]}
    with torch.no_grad():
        for t in range(max_steps + 1):
            recording["frames"].append(double_pole.render_frame(sim.state[0].cpu()))
            outputs = controller(obs)
            recording["kind"], images = memory_images(tuple(s[0, 0] for s in controller.state))
            recording["memories"].append(images)
            recording["outputs"].append(outputs[0].cpu().numpy())
            if t == max_steps or not bool(sim.alive[0]):
                break
            obs, _ = sim.step(outputs)
    return recording


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


class PolicyAgent:
    """Our ``RecurrentPolicy`` in ``run_episodes``, in one env, its memory carried from step to step."""

    def __init__(self, policy, deterministic: bool):
        self.policy, self.deterministic = policy, deterministic
        n = policy.actor.out_features
        self.action_names = [str(i) for i in range(n)] if policy.discrete else [f"a{i}" for i in range(n)]
        self.state = policy.initial_state(1)

    def act(self, obs: np.ndarray, episode_start: np.ndarray, record: bool):
        policy = self.policy
        head, _, self.state = policy(torch.as_tensor(obs, device=policy.device), self.state,
                                     torch.as_tensor(episode_start, device=policy.device), with_values=False)
        actions = policy.mode(head) if self.deterministic else policy.distribution(head).sample()
        env_actions = policy.env_actions(actions).cpu().numpy()
        if not record:
            return env_actions, None, None
        outputs = torch.softmax(head[0][0], -1) if policy.discrete else head[0][0].reshape(-1)
        return env_actions, tuple(s[0] for s in self.state), outputs.cpu().numpy()


def run_episodes(agent, envs, frame, episodes: int, seed: int, record: bool = False) -> tuple[list, dict]:
    """``episodes`` whole episodes of ``agent`` (module docstring), one after another in ``envs`` (an ``Envs``
    of one env, closed at the end; the memory reset at every done, as in training) -> (their ``Episode``s,
    and with ``record`` the first episode's frames (``frame(obs)`` at each step), memory images and action
    probabilities)."""
    from fwp_rl.memory_view import memory_images

    recording = {"frames": [], "memories": [], "outputs": [], "kind": "", "names": agent.action_names}
    finished: list = []
    torch.manual_seed(seed)
    try:
        obs = envs.reset(seed=seed)
        start = np.ones(1, dtype=bool)
        with torch.no_grad():
            while len(finished) < episodes:
                recording_now = record and not finished
                actions, memory, outputs = agent.act(obs, start, recording_now)
                if recording_now:
                    recording["frames"].append(frame(obs))
                    recording["kind"], images = memory_images(memory)
                    recording["memories"].append(images)
                    recording["outputs"].append(outputs)
                step = envs.step(actions)
                finished.extend(step.episodes)
                obs, start = step.obs, step.done
    finally:
        envs.close()
    return finished[:episodes], recording


def policy_episodes(policy, env_id: str, options: dict, episodes: int, deterministic: bool, seed: int,
                    record: bool = False) -> tuple[list, dict]:
    """``run_episodes`` of our policy in env ``env_id`` (``fwp_rl.envs.vector``): for Atari the frames are
    what the agent sees, for Gymnasium ids the env's own picture."""
    from fwp_rl.envs.vector import VectorEnvConfig, make_vector_env

    agent = PolicyAgent(policy, deterministic)
    config = VectorEnvConfig(env_id, 1, dict(options))
    if record and not config.atari:
        config.options["render_mode"] = "rgb_array"
    envs = make_vector_env(config, seed=seed)
    return run_episodes(agent, envs, lambda obs: _frame(envs, obs, config.atari), episodes, seed, record)


def episode_figures(episodes: list) -> dict:
    """The figures of ``episodes`` (``run_episodes``): how many, the mean, std, min and max of their returns and of
    their lengths, and the returns."""
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
    height, width = frames[0].shape[:2]
    # H.264 in yuv420p needs even sizes: an odd one gets its last row or column repeated.
    frames = [np.pad(f, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge") for f in frames]
    with replacing(out) as tmp:  # encoding takes seconds: a Ctrl-C in them leaves no broken video
        imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1)


@dataclass
class Replay:
    """What ``evaluate_checkpoint`` was asked to do with a checkpoint: a learner's evaluation (``fwp_rl.learners``)
    plays its episodes and hands them to ``report``."""

    checkpoint: Path
    episodes: int
    deterministic: bool
    seed: int
    video_dir: str | None
    memory_view: bool
    video_steps: int
    console: Console

    @property
    def record(self) -> bool:
        return self.video_dir is not None

    def play_policy(self, config, policy) -> dict:
        """``report`` the ``policy_episodes`` of our policy in the env of ``config``."""
        return self.report(config, *policy_episodes(policy, config.env.id, config.env.options, self.episodes,
                                                    self.deterministic, self.seed, self.record))

    def report(self, config, episodes: list, recording: dict) -> dict:
        """Print the figures of ``episodes`` (``run_episodes``), write them as JSON beside the checkpoint and the
        recorded first episode as a video -> the figures."""
        env_id = config.env.id
        figures = {"checkpoint": str(self.checkpoint), "env": env_id, "deterministic": self.deterministic,
                   "seed": self.seed, **episode_figures(episodes)}
        _print_table(figures, f"{config.name}: {self.episodes} episodes of {env_id}"
                     f"{' (deterministic)' if self.deterministic else ''}", self.console)
        _save_figures(self.checkpoint, figures, self.console)
        if self.record:
            _episode_video(recording, Path(self.video_dir), config.name, self.memory_view, 30, self.console)
        return figures


def evaluate_ppo(payload: dict, replay: Replay) -> dict:
    """A PPO checkpoint: its policy in one env of the run's env id."""
    return replay.play_policy(*_ppo_policy(payload))


def evaluate_neuroevolution(payload: dict, replay: Replay) -> dict:
    """A neuroevolution checkpoint: on the double pole its fitness episode and success test; on a Gymnasium id its
    policy's episodes, acting by its mode as in its fitness episodes."""
    from fwp_rl.agents.neuroevolution import DOUBLE_POLE

    config, policy = _neuroevolution_policy(payload)
    if config.env.id == DOUBLE_POLE:
        return _evaluate_double_pole(config, policy, replay.checkpoint, replay.video_dir, replay.memory_view,
                                     replay.video_steps, replay.console)
    return dataclasses.replace(replay, deterministic=True).play_policy(config, policy)


def evaluate_sb3(payload: dict, replay: Replay) -> dict:
    """An SB3 recurrent PPO checkpoint: episodes in the env SB3 trained in, acting by SB3's own ``predict``."""
    from fwp_rl.agents import sb3
    from fwp_rl.agents.ppo import resolve_device

    try:
        config = from_dict(sb3.SB3Config, payload["config"])
        envs = sb3.EvaluationEnvs(config, replay.seed)
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"the checkpoint's env cannot be built here: {e}") from None
    agent = sb3.EvaluationAgent(sb3.model_from_payload(payload, config, envs.venv, str(resolve_device("auto"))),
                                replay.deterministic)
    return replay.report(config, *run_episodes(agent, envs, lambda obs: envs.render(), replay.episodes, replay.seed,
                                               replay.record))


NAMED_CHECKPOINTS = ("latest", "previous", "best")  # checkpoints/<name>.pt of a run directory (fwp_rl.harness)


def checkpoint_source(path: str, which: str | None = None) -> Path:
    """What ``fwp-rl evaluate PATH --checkpoint WHICH`` replays: ``path`` itself, a checkpoint file or a run directory
    (which stands for its checkpoints/latest.pt), when ``which`` is None; else in run directory ``path`` its
    checkpoints/<which>.pt for one of ``NAMED_CHECKPOINTS``, or the checkpoint file ``which``, a path relative to the
    run directory (an absolute one as it is). A ConfigError or CheckpointError when there is no such checkpoint."""
    run = Path(path)
    if which is None or which == "latest" and run.is_dir():
        return run
    if not run.is_dir():
        raise ConfigError(f"--checkpoint {which} picks a checkpoint of a run directory, and {str(path)!r} is not one: "
                          "give the run directory, or the checkpoint file alone")
    if which not in NAMED_CHECKPOINTS:
        return run / which
    file = run / "checkpoints" / f"{which}.pt"
    if not file.is_file():
        why = ("the run had no evaluation (set run.eval_every)" if which == "best" else
               "the run has written one checkpoint only")
        raise CheckpointError(f"{str(path)!r} has no checkpoints/{which}.pt: {why}")
    return file


def evaluate_checkpoint(path: str, episodes: int = 10, deterministic: bool = False, video_dir: str | None = None,
                        seed: int = 0, memory_view: bool = False, video_steps: int = 1_000,
                        console: Console | None = None, overwrite: bool = False, which: str | None = None) -> dict:
    """Replay the checkpoint at ``path`` (a file or a run directory; with ``which``, that checkpoint of the run
    directory: ``checkpoint_source``) by its learner's evaluation; print the figures, write them as JSON beside the
    checkpoint and return them; with ``video_dir``, write an mp4 of the first episode (a ConfigError, before any
    episode, when that video exists and not ``overwrite``)."""
    if episodes < 1:
        raise ConfigError(f"--episodes={episodes} is not allowed: it must be >= 1")
    check_seed(seed, "--seed")
    if video_dir is not None and Path(video_dir).exists() and not Path(video_dir).is_dir():
        raise ConfigError(f"--video {video_dir}: that is a file; --video names the directory to write the video into")
    source = checkpoint_source(path, which)
    payload = load_checkpoint(source)
    checkpoint = checkpoint_file(source)
    try:
        entry = learner(payload.get("learner"))
    except ConfigError:
        raise CheckpointError(f"{str(path)!r} is a checkpoint of learner {payload.get('learner')!r}; supported: "
                              f"{', '.join(map(repr, LEARNERS))}") from None
    name = payload.get("config", {}).get("name") if isinstance(payload.get("config"), dict) else None
    if video_dir is not None and isinstance(name, str) and not overwrite:
        out = video_path(Path(video_dir), name, memory_view)
        if out.exists():
            raise ConfigError(f"--video {video_dir}: {out} exists already; give --overwrite to replace it, or "
                              "another directory")
    return entry.evaluate(payload, Replay(checkpoint, episodes, deterministic, seed, video_dir, memory_view,
                                          video_steps, console or Console()))


def video_path(video_dir: Path, name: str, memory_view: bool) -> Path:
    """Where ``--video`` writes the video of a run called ``name``."""
    return video_dir / f"{name}{'_memory' if memory_view else ''}.mp4"


def _episode_video(recording: dict, video_dir: Path, name: str, memory_view: bool, fps: int, console: Console,
                   output_label: str = "p(action)", trace: bool = False) -> None:
    """Write the recorded episode as <video_dir>/<name>.mp4, or with ``memory_view`` its frames with the memory
    and the outputs beside them as <name>_memory.mp4."""
    from fwp_rl.memory_view import render_memory_video

    frames = recording["frames"]
    if memory_view:
        frames = render_memory_video(frames, recording["memories"], recording["outputs"], recording["kind"],
                                     recording["names"], output_label, trace)
    out = video_path(video_dir, name, memory_view)
    _write_video(out, frames, fps)
    console.print(f"video: {out} ({len(frames)} frames)")


def _save_figures(checkpoint: Path, figures: dict, console: Console) -> None:
    out = checkpoint.with_name(checkpoint.name + ".eval.json")
    text = json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in figures.items()},
                      indent=2)
    atomic_write_text(out, text)
    console.print(f"figures: {out}")


def _evaluate_double_pole(config, policy, checkpoint: Path, video_dir, memory_view: bool, video_steps: int,
                          console: Console) -> dict:
    from fwp_rl.envs import double_pole

    env = double_pole.make_config(**config.env.options)
    flat = policy.get_flat_parameters()
    # the rollouts of the run (compiled or eager), whose last bits a chaotic trajectory can depend on
    compile = config.search.compile
    fitness, steps = double_pole.population_fitness(policy, flat[None], env, compile)
    # a Markov fitness episode is the 100,000-step test itself: it is not run twice
    test = double_pole.champion_test(policy, flat, env, int(steps[0]), compile)
    figures = {"checkpoint": str(checkpoint), "task": env.task, "fitness": float(fitness[0]),
               "fitness_episode_steps": int(steps[0]), "balanced_of_100000": test.balanced,
               "generalization_of_625": test.generalization, "solved": test.solved(env)}
    for key, value in figures.items():
        console.print(f"{key}: {value}")
    _save_figures(checkpoint, figures, console)
    if video_dir is not None:
        recording = double_pole_episode(policy, env, video_steps)
        # o is the force: 0 pushes with -10 N, 1 with +10 N, 0.5 (dashed) not at all.
        _episode_video(recording, Path(video_dir), config.name, memory_view,
                       double_pole.DoublePoleEnv.metadata["render_fps"], console, "output o (force)", trace=True)
    return figures
