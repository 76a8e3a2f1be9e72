"""``fwp-rl evaluate``: replay what a checkpoint holds and report how it does.

Checkpoints of every learner on any env: PPO (Atari and Gymnasium ids), SB3's recurrent PPO (in the env
SB3 trained in, acting by SB3's own ``predict``) and neuroevolution (the double pole, with its success
test, and Gymnasium ids). Episodes run one after another in a single env, so short episodes are not
over-represented. The figures are printed as a table and written as JSON beside the checkpoint
(``<checkpoint>.eval.json``); ``--video DIR`` writes an mp4 of the first episode, named by run, seed, checkpoint
and episode (``video_path``: a video of that name there already is refused before any episode is played, unless
``overwrite``), at the env's own frame rate (its metadata's "render_fps"; ``fps`` overrides it), and
``memory_view`` puts the agent's memory and its outputs over time (action probabilities; a double pole
controller's output o, its inputs and prediction errors) beside the game (``fwp_rl.memory_view``). A progress
bar follows the episodes and the video. Each learner's entry in ``fwp_rl.learners`` names its evaluation here
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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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


def new_recording(names: list[str], fps: float | None) -> dict:
    """An empty recording of an episode: per step its ``frames``, the ``memories`` (``memory_images``) and the
    ``outputs`` [A] (one per name of ``names``), the ``kind`` of memory, the env's ``fps`` (None: unknown); the
    double pole's also has ``captions`` and ``traces`` (``fwp_rl.memory_view.render_memory_video``)."""
    return {"frames": [], "memories": [], "outputs": [], "kind": "", "names": names, "fps": fps}


DOUBLE_POLE_INPUTS = ("x", "x'", "θ1", "θ1'", "θ2", "θ2'")  # the state variables the Markov inputs scale


def double_pole_episode(policy, env, max_steps: int) -> dict:
    """One episode from the standard start (at most ``max_steps`` control steps) as a recording (``new_recording``):
    its frames, and for each the controller's memory after reading it and its output o in [0, 1]; the captions say
    the time, the cart's position and the poles' angles; the traces are the controller's inputs and, where its
    core reads them out (``error_gain``), the prediction errors of its heads.

    The controller also reads the last frame (the failing state, or the state after ``max_steps``): its
    output there is shown but never acted on.
    """
    from fwp_rl.envs import double_pole
    from fwp_rl.memory_view import memory_images
    from fwp_rl.population import MemoryController

    sim = double_pole.DoublePole(env, policy.device)
    obs = sim.reset(1)
    controller = MemoryController(policy.population(policy.get_flat_parameters()[None]), 1)
    recording = new_recording(["o"], double_pole.DoublePoleEnv.metadata["render_fps"])
    names = DOUBLE_POLE_INPUTS if env.markov else DOUBLE_POLE_INPUTS[::2]
    inputs, errors, captions = [], [], []
    reads_errors = getattr(policy.core, "error_gain", 0) > 0
    with torch.no_grad():
        for t in range(max_steps + 1):
            x, _, theta1, _, theta2, _ = sim.state[0].tolist()
            captions.append(f"t = {t * double_pole.TIME_STEP * double_pole.SUBSTEPS:.2f} s    x = {x:+.3f} m    "
                            f"θ1 = {math.degrees(theta1):+.2f}°    θ2 = {math.degrees(theta2):+.2f}°")
            recording["frames"].append(double_pole.render_frame(sim.state[0].cpu()))
            inputs.append(obs[0, :len(names)].cpu().numpy())
            if reads_errors:
                state = tuple(s[0] for s in controller.state)
                errors.append(policy.core.prediction_errors(policy.torso(obs.to(policy.dtype)), state)[0]
                              .reshape(-1).cpu().numpy())
            outputs = controller(obs)
            recording["kind"], images = memory_images(tuple(s[0, 0] for s in controller.state))
            recording["memories"].append(images)
            recording["outputs"].append(outputs[0].cpu().numpy())
            if t == max_steps or not bool(sim.alive[0]):
                break
            obs, _ = sim.step(outputs)
    recording["captions"] = captions
    recording["traces"] = [("inputs", dict(zip(names, np.array(inputs).T)))]
    if errors:
        recording["traces"].append(("prediction errors", {f"head {i}": e for i, e in enumerate(np.array(errors).T)}))
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


def run_episodes(agent, envs, frame, episodes: int, seed: int, record: bool = False, progress: Progress | None = None
                 ) -> tuple[list, dict]:
    """``episodes`` whole episodes of ``agent`` (module docstring), one after another in ``envs`` (an ``Envs``
    of one env, closed at the end; the memory reset at every done, as in training) -> (their ``Episode``s,
    and with ``record`` the first episode's recording (``new_recording``: frames ``frame(obs)`` at each step,
    memory images and action probabilities)). ``progress`` (``fwp_rl.progress.run_progress``) gets a line that
    counts the episodes."""
    from fwp_rl.memory_view import memory_images

    recording = new_recording(agent.action_names, envs.render_fps)
    finished: list = []
    task = None if progress is None else progress.add_task("episodes", total=episodes, status="")
    torch.manual_seed(seed)
    try:
        obs = envs.reset(seed=seed)
        start = np.ones(1, dtype=bool)
        steps = 0
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
                steps += 1
                if task is not None:
                    progress.update(task, completed=min(len(finished), episodes), status=f"{steps:,} steps")
    finally:
        envs.close()
    return finished[:episodes], recording


def policy_episodes(policy, env_id: str, options: dict, episodes: int, deterministic: bool, seed: int,
                    record: bool = False, progress: Progress | None = None) -> tuple[list, dict]:
    """``run_episodes`` of our policy in env ``env_id`` (``fwp_rl.envs.vector``): for Atari the frames are
    what the agent sees, for Gymnasium ids the env's own picture."""
    from fwp_rl.envs.vector import VectorEnvConfig, make_vector_env

    agent = PolicyAgent(policy, deterministic)
    config = VectorEnvConfig(env_id, 1, dict(options))
    if record and not config.atari:
        config.options["render_mode"] = "rgb_array"
    envs = make_vector_env(config, seed=seed)
    return run_episodes(agent, envs, lambda obs: _frame(envs, obs, config.atari), episodes, seed, record, progress)


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


def write_video(out: Path, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Write ``frames`` (RGB [H, W, 3] uint8, all of one size; taken one by one) as the mp4 ``out`` at ``fps`` frames
    a second, replacing a file there only once the video is whole -> ``out``."""
    with replacing(out) as tmp:  # encoding takes seconds: a Ctrl-C in them leaves no broken video
        writer = imageio.get_writer(tmp, fps=fps, macro_block_size=1)
        try:
            for f in frames:
                # H.264 in yuv420p needs even sizes: an odd one gets its last row or column repeated.
                writer.append_data(np.pad(f, ((0, f.shape[0] % 2), (0, f.shape[1] % 2), (0, 0)), mode="edge"))
        finally:  # also after an error (the writer's own exit leaves ffmpeg writing to tmp when one ends its block)
            writer.close()
    return out


DEFAULT_FPS = 30  # of a video of an env whose metadata names no "render_fps"


def video_fps(recording: dict, fps: float | None = None) -> float:
    """The frame rate of the video of ``recording`` (``new_recording``): ``fps``, else the env's, else
    ``DEFAULT_FPS``."""
    return fps or recording["fps"] or DEFAULT_FPS


def check_fps(fps) -> float | None:
    """``--fps``: None (the env's own) or a positive finite number of frames a second."""
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps)
                            or fps <= 0):
        raise ConfigError(f"--fps {fps} is not allowed: it must be a positive number of frames a second")
    return fps


def check_shared_scale(scale) -> float | None:
    """``--shared-scale``: None (each video's own) or a positive finite colour scale."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):
        raise ConfigError(f"--shared-scale {scale} is not allowed: it must be a positive number, the largest |value| "
                          "of the memory's colours")
    return scale


def evaluation_progress(console: Console) -> Progress:
    """The live lines of ``fwp-rl evaluate``: what it does, a bar, how much of it is done, a status, the time."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=True)


@dataclass
class Replay:
    """What ``evaluate_checkpoint`` was asked to do with a checkpoint: a learner's evaluation (``fwp_rl.learners``)
    plays its episodes and hands them to ``report``."""

    checkpoint: Path
    episodes: int
    deterministic: bool
    seed: int
    video: Path | None  # the video's file (``video_path``), None for none
    memory_view: bool
    video_steps: int
    console: Console
    progress: Progress
    fps: float | None = None  # of the video; None: the env's own
    shared_scale: float | None = None  # of the memory view's colours; None: each video's own

    @property
    def record(self) -> bool:
        return self.video is not None

    def play_policy(self, config, policy) -> dict:
        """``report`` the ``policy_episodes`` of our policy in the env of ``config``."""
        return self.report(config, *policy_episodes(policy, config.env.id, config.env.options, self.episodes,
                                                    self.deterministic, self.seed, self.record, self.progress))

    def write_episode(self, recording: dict, output_label: str = "p(action)") -> Path:
        """Write the recorded episode (``new_recording``) as the video ``video``, with ``memory_view`` its frames
        with the memory and the outputs beside them -> its path."""
        from fwp_rl.memory_view import memory_scale, render_memory_video

        frames = recording["frames"]
        if self.memory_view:
            scale = self.shared_scale or memory_scale(recording["memories"])
            self.console.print(f"memory view: colours from -{scale:.4g} to {scale:.4g} "
                               f"({'--shared-scale' if self.shared_scale else 'the largest |value| of this episode'})")
            frames = render_memory_video(frames, recording["memories"], recording["outputs"], recording["kind"],
                                         recording["names"], output_label, scale, recording.get("captions"),
                                         recording.get("traces", ()))
        fps = video_fps(recording, self.fps)
        steps = len(recording["frames"])
        task = self.progress.add_task("video", total=steps, status=f"{fps:g} fps")
        out = write_video(self.video, self.progress.track(frames, total=steps, task_id=task), fps)
        self.console.print(f"video: {out} ({steps} frames, {fps:g} a second)")
        return out

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
            self.write_episode(recording)
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
        return _evaluate_double_pole(config, policy, replay)
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
                                               replay.record, replay.progress))


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
                        console: Console | None = None, overwrite: bool = False, which: str | None = None,
                        fps: float | None = None, shared_scale: float | None = None,
                        wandb_mode: str | None = None) -> dict:
    """Replay the checkpoint at ``path`` (a file or a run directory; with ``which``, that checkpoint of the run
    directory: ``checkpoint_source``) by its learner's evaluation; print the figures, write them as JSON beside the
    checkpoint and return them; with ``video_dir``, write an mp4 of the first episode (``video_path``; a ConfigError,
    before any episode, when that video exists and not ``overwrite``) at ``fps`` frames a second (None: the env's
    own), its memory view's colours from -``shared_scale`` to ``shared_scale`` (None: the episode's own range); with
    ``wandb_mode`` (online or offline), also log the figures and the video to W&B (``_log_to_wandb``)."""
    if episodes < 1:
        raise ConfigError(f"--episodes={episodes} is not allowed: it must be >= 1")
    check_seed(seed, "--seed")
    check_fps(fps)
    check_shared_scale(shared_scale)
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
    video = None
    if video_dir is not None:
        config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        video = video_path(Path(video_dir), run_label(checkpoint, config), config.get("seed"), checkpoint, seed,
                           memory_view)
        if video.exists() and not overwrite:
            raise ConfigError(f"--video {video_dir}: {video} exists already; give --overwrite to replace it, or "
                              "another directory")
    console = console or Console()
    with evaluation_progress(console) as progress:
        figures = entry.evaluate(payload, Replay(checkpoint, episodes, deterministic, seed, video, memory_view,
                                                 video_steps, console, progress, fps, shared_scale))
    if wandb_mode is not None:
        _log_to_wandb(payload, checkpoint, figures, video, wandb_mode, console)
    return figures


def _log_to_wandb(payload: dict, checkpoint: Path, figures: dict, video: Path | None, mode: str,
                  console: Console) -> None:
    """``evaluate --wandb``: the figures (and the video) as a W&B run of job type "evaluate", filed as the training
    run is (``fwp_rl.runs.start_run_wandb``: its group, core and task), its files beside the checkpoint's run."""
    import wandb

    from fwp_rl.runs import start_run_wandb

    run_dir = run_directory(checkpoint) or checkpoint.parent
    config = payload["config"]
    run = start_run_wandb(config, run_dir, f"{run_dir.name} evaluate {checkpoint.stem}", console, mode=mode,
                          job_type="evaluate")
    values = {f"evaluate/{k}": v for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if video is not None and video.is_file():
        values["evaluate/video"] = wandb.Video(str(video), format="mp4")
    run.log(values, step=0)
    run.finish()


def run_directory(checkpoint: Path) -> Path | None:
    """The run directory of ``checkpoint`` (a file): the one above its checkpoints/, None for a file elsewhere."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def run_label(checkpoint: Path, config: dict) -> str:
    """What names the run of ``checkpoint`` (a file) in a video's name: the group of a ``train --seeds`` seed (its
    seed follows in the name), else its run directory's name (runs/<name>-2 is "<name>-2"), else its config's name."""
    run_dir = run_directory(checkpoint)
    return ((config.get("run") or {}).get("group") or (run_dir.name if run_dir else None) or str(config.get("name")))


def video_path(video_dir: Path, name, run_seed, checkpoint: Path, seed: int, memory_view: bool, episode: int = 0
               ) -> Path:
    """Where ``--video`` writes episode ``episode`` (from 0) of ``fwp-rl evaluate --seed seed`` of ``checkpoint``
    (a file), of run ``name`` (``run_label``) trained with seed ``run_seed``: video_dir /
    <name>_seed<run_seed>_<checkpoint's stem>_evalseed<seed>_ep<episode>[_memory].mp4."""
    return video_dir / (f"{name}_seed{run_seed}_{checkpoint.stem}_evalseed{seed}_ep{episode}"
                        f"{'_memory' if memory_view else ''}.mp4")


def _save_figures(checkpoint: Path, figures: dict, console: Console) -> None:
    out = checkpoint.with_name(checkpoint.name + ".eval.json")
    text = json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in figures.items()},
                      indent=2)
    atomic_write_text(out, text)
    console.print(f"figures: {out}")


def _evaluate_double_pole(config, policy, replay: Replay) -> dict:
    from fwp_rl.envs import double_pole

    env = double_pole.make_config(**config.env.options)
    flat = policy.get_flat_parameters()
    # the rollouts of the run (compiled or eager), whose last bits a chaotic trajectory can depend on
    compile = config.search.compile
    task = replay.progress.add_task("fitness episode, then the success test", total=2, status="")
    fitness, steps = double_pole.population_fitness(policy, flat[None], env, compile)
    replay.progress.update(task, completed=1, status=f"balanced {int(steps[0]):,} steps")
    # a Markov fitness episode is the 100,000-step test itself: it is not run twice
    test = double_pole.champion_test(policy, flat, env, int(steps[0]), compile)
    replay.progress.update(task, completed=2)
    checkpoint, console = replay.checkpoint, replay.console
    figures = {"checkpoint": str(checkpoint), "task": env.task, "fitness": float(fitness[0]),
               "fitness_episode_steps": int(steps[0]), "balanced_of_100000": test.balanced,
               "generalization_of_625": test.generalization, "solved": test.solved(env)}
    for key, value in figures.items():
        console.print(f"{key}: {value}")
    _save_figures(checkpoint, figures, console)
    if replay.record:
        # o is the force: 0 pushes with -10 N, 1 with +10 N, 0.5 not at all.
        replay.write_episode(double_pole_episode(policy, env, replay.video_steps), "output o (force)")
    return figures
