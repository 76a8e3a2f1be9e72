"""The learners, each named once: the ``learner`` key of a config picks its entry in ``LEARNERS``.

An entry says everything the rest of the code asks of a learner:

- ``module``: where it lives; the module has its config class and ``train(config, console=...)``, which
  trains one run (``fwp_rl.harness``) and returns a ``fwp_rl.harness.Trained``;
- ``config_class``: the schema ``load_config`` checks a file with this learner against;
- ``resumes``: whether its ``train`` also takes ``resume=RUN_DIR`` and continues that run (``train --resume``);
- ``data_parallel``: whether its ``train`` also takes ``ranks=`` and trains one run in several processes together
  (``fwp_rl.distributed``: ``train --nproc``, torchrun);
- ``resume_may_change``: the config keys (dotted, e.g. ``ppo.total_steps``) whose values a resumed run may take from
  its config (the run's config.yaml plus ``--set``) where they differ from its checkpoint's: the budget, the device
  and the ``RUN_SETTINGS``, none of which changes what is learned. A change of any other key is refused
  (``Learner.refused_changes``, checked by ``fwp_rl.harness.Run``);
- ``evaluation``: the function of ``fwp_rl.evaluate`` that replays its checkpoints;
- ``step_unit``: what the ``step`` of its metrics counts, and so its progress line and the x axis of
  ``fwp-rl compare`` (runs whose steps count different things are not compared);
- ``default_metric``: the logged value ``fwp-rl compare`` compares unless told otherwise;
- ``core``: the core of its runs when its config names none (else policy.core; ``core_of``): what ``fwp-rl compare``
  files its runs under, and their W&B config field and tag ``core``;
- ``task``: what its runs learn, from its config as plain data (the env id; for the double pole with its task): the
  W&B config field ``task`` and a tag of its runs (``fwp_rl.runs.start_run_wandb``).

A learner's module imports torch and more, which takes seconds: an entry names it, and it is imported
only when a config of that learner is loaded, trained or evaluated (``fwp-rl --help`` needs none).
Adding a learner is adding its entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fwp_rl.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict

if TYPE_CHECKING:
    from rich.console import Console

    from fwp_rl.distributed import Ranks
    from fwp_rl.harness import Trained


def _env_id(config: dict) -> str:
    return config["env"]["id"]


def _env_id_and_double_pole_task(config: dict) -> str:
    """The env id, and for the double pole its task too: its Markov and non-Markov runs sit apart."""
    from fwp_rl.agents.neuroevolution import DOUBLE_POLE
    from fwp_rl.envs import double_pole

    env = config["env"]
    if env["id"] != DOUBLE_POLE:
        return env["id"]
    return f"{DOUBLE_POLE}-{double_pole.make_config(**(env.get('options') or {})).task}"


RUN_SETTINGS = ("run.root", "run.wandb", "run.project", "run.entity", "run.tags", "run.tensorboard",
                "run.checkpoint_every", "run.eval_every", "run.eval_video_every")
"""The run.* keys a resume may change: where new runs go, W&B's mode, project, entity and tags, whether TensorBoard logs
too (from the resume on), how often to save, to evaluate and to record an evaluation's video. Not run.group: it names
the experiment the run belongs to (its W&B group; a --seeds group's directory); nor run.eval_episodes and
run.eval_deterministic: they make the score that checkpoints/best.pt is the best of (``fwp_rl.harness``)."""

_ABSENT = object()  # a key one config has and the other lacks


def _flat(data, prefix: str = "") -> dict:
    """Nested mappings as {dotted key: value} (an empty mapping adds no key)."""
    if not isinstance(data, dict):
        return {prefix: data}
    flat = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


@dataclass(frozen=True)
class Learner:
    """One learner (module docstring)."""

    name: str
    module: str
    config_class: str
    resumes: bool
    evaluation: str
    step_unit: str
    default_metric: str
    core: str | None = None
    task: Callable[[dict], str] = _env_id
    resume_may_change: tuple[str, ...] = RUN_SETTINGS
    data_parallel: bool = False

    def core_of(self, config: dict) -> str:
        """The core of a run of this learner, from its config as plain data: ``core``, else policy.core."""
        return self.core or config["policy"]["core"]

    @property
    def config(self) -> type:
        return getattr(importlib.import_module(self.module), self.config_class)

    def train(self, config, resume: str | Path | None = None, console: Console | None = None,
              ranks: Ranks | None = None) -> Trained:
        """Train ``config`` (a config of this learner) in a new run directory, or continue the run in ``resume``; with
        ``ranks`` (a ``data_parallel`` learner), as one of several processes that train it together."""
        train = importlib.import_module(self.module).train
        together = {} if ranks is None else {"ranks": ranks}
        if resume is None:
            return train(config, console=console, **together)
        if not self.resumes:
            raise ConfigError(f"--resume works for {' and '.join(map(repr, RESUMABLE))} runs; {str(resume)!r} is a "
                              f"{self.name!r} run")
        return train(config, resume=resume, console=console, **together)

    def refused_changes(self, saved: dict, config: dict) -> list[str]:
        """The changes from ``saved`` (a checkpoint's config, plain data) to ``config`` that a resume may not make,
        each as "key old -> new" (``resume_may_change``). A key that ``saved`` lacks (a checkpoint written before
        the key was added) counts as holding its default."""
        before, after, defaults = _flat(saved), _flat(config), _flat(to_dict(self.config()))
        refused = []
        for key in [*before, *(k for k in after if k not in before)]:
            old, new = before.get(key, defaults.get(key, _ABSENT)), after.get(key, _ABSENT)
            if old == new or any(key == k or key.startswith(k + ".") for k in self.resume_may_change):
                continue
            refused.append(f"{key} {'(absent)' if old is _ABSENT else repr(old)} -> "
                           f"{'(absent)' if new is _ABSENT else repr(new)}")
        return refused

    def evaluate(self, payload: dict, replay) -> dict:
        """Replay a checkpoint of this learner (``fwp_rl.evaluate.Replay``) -> the figures."""
        return getattr(importlib.import_module("fwp_rl.evaluate"), self.evaluation)(payload, replay)


LEARNERS: dict[str, Learner] = {entry.name: entry for entry in (
    Learner("neuroevolution", "fwp_rl.agents.neuroevolution", "NeuroevolutionConfig", resumes=True,
            evaluation="evaluate_neuroevolution", step_unit="evaluations", default_metric="best",
            task=_env_id_and_double_pole_task,
            # how the populations are evaluated may change (not search.device: the saved generator is the device's own)
            resume_may_change=("search.max_evaluations", "search.max_generations", "search.num_actors",
                               "search.compile", *RUN_SETTINGS)),
    Learner("ppo", "fwp_rl.agents.ppo", "PPOConfig", resumes=True, evaluation="evaluate_ppo",
            step_unit="agent steps", default_metric="episodic_return",
            resume_may_change=("ppo.total_steps", "ppo.device", *RUN_SETTINGS), data_parallel=True),
    # SB3's policy is its own LSTM: its runs are the "sb3_lstm" core, beside our cores' PPO runs.
    Learner("sb3_recurrent_ppo", "fwp_rl.agents.sb3", "SB3Config", resumes=True, evaluation="evaluate_sb3",
            step_unit="agent steps", default_metric="episodic_return", core="sb3_lstm",
            resume_may_change=("ppo.total_steps", "ppo.device", *RUN_SETTINGS)),
)}
RESUMABLE = tuple(name for name, entry in LEARNERS.items() if entry.resumes)


def learner(name, where: str = "") -> Learner:
    """The entry of learner ``name``; for anything else a ConfigError that starts with ``where`` and names the
    learners allowed."""
    if not isinstance(name, str) or name not in LEARNERS:
        raise ConfigError(f"{where}learner={name!r} is not allowed; choose one of: {', '.join(LEARNERS)}")
    return LEARNERS[name]


def load_config(path: str, overrides: list[str]):
    """The validated config of a YAML file plus ``--set`` overrides; its ``learner`` key picks the schema."""
    data = apply_overrides(load_yaml(path), overrides)
    return from_dict(learner(data.get("learner")).config, data)
