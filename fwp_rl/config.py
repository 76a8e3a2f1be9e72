"""Run configs: YAML files plus ``--set key=value`` overrides, validated against dataclasses.

Every section is a dataclass; ``from_dict`` builds one from plain data and rejects what does not fit
with a ``ConfigError`` that names the key, the bad value and what is allowed. Sections hold their own
defaults, so a config file only says what differs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fwp_rl.files import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A user mistake in a config: reported as one line, without a traceback."""


def parse_device(what: str, name: str, auto: bool = False, here: bool = True):
    """The torch.device ``name`` names ('auto' too where ``auto``: CUDA when there is one, else the CPU), or a
    ConfigError that starts with ``what`` (say "search.device='gpu'"): not a CPU or CUDA device, or (where
    ``here``) a CUDA device this machine does not have."""
    import torch  # here, not at the top: the CLI reads configs before it needs torch

    if auto and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    allowed = "'auto', 'cpu', 'cuda', 'cuda:1', ..." if auto else "'cpu', 'cuda', 'cuda:1', ..."
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{what} is not allowed: {allowed}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{what} is not allowed: {allowed}")
    if not here or device.type == "cpu":
        return device
    count = torch.cuda.device_count()
    if count == 0:
        raise ConfigError(f"{what} but CUDA is not available here; use 'cpu'" + " or 'auto'" * auto)
    if (device.index or 0) >= count:
        raise ConfigError(f"{what} but this machine has {count} CUDA device{'s' * (count > 1)}: "
                          f"{', '.join(f'cuda:{i}' for i in range(count))}")
    return device


MAX_SEED = 2**30 - 1
"""The largest run seed. ale-py takes 32-bit signed seeds, env i of a vector env gets seed + i and PPO restarts
its envs from seed + update: 2**30 leaves room for both."""


MAX_TAG_LENGTH = 64
"""The longest W&B tag (``RunConfig.tags``)."""


def check_seed(seed: int, name: str = "seed") -> None:
    """A ConfigError naming ``name`` unless ``seed`` is a run seed (0 to MAX_SEED)."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{name}={seed} is not allowed: it must be an integer from 0 to {MAX_SEED}")


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's error in one line: what is wrong, and where."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return problem if mark is None else f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def check_run_name(name: str, key: str = "name") -> None:
    """A ConfigError naming ``key`` unless ``name`` names one directory inside run.root: not empty, no path separator
    (/ or \\), not starting with a dot (nor . or ..: hidden, or a way out of run.root), no NUL."""
    if not name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise ConfigError(f"{key}={name!r} is not allowed: it names the run's directory inside run.root, so it must "
                          "be a plain name, not empty, without / or \\ and not starting with '.'")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not a text file (UTF-8)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} must look like key=value (for example ppo.learning_rate=3e-4)")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        try:
            node[leaf] = yaml.safe_load(text)
        except yaml.YAMLError:
            node[leaf] = text
    return data


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _check_value(value: Any, tp, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [v if item_tp is Any else _check_value(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(repr, allowed))}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads 3e-4 (no dot) as a string.
        try:
            return float(value)
        except ValueError:
            pass
    if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{key}={value!r} is not allowed: expected {_type_name(tp)}")


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking every key and value type."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {', '.join(repr(k) for k in unknown)}; allowed keys: {', '.join(fields)}"
        )
    values = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _check_value(value, hints[name], key)
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key {', '.join(map(repr, missing))}")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def to_dict(obj) -> dict:
    """A config dataclass as plain data (what gets written into a run directory)."""
    return dataclasses.asdict(obj)


def dump_yaml(obj, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


# ---------------------------------------------------------------------------------------------- shared sections
@dataclasses.dataclass
class PolicyConfig:
    """The policy both learners train (``fwp_rl.policy.RecurrentPolicy``). normalize_observations: normalize
    observations by running statistics that the PPO learner keeps up to date (``fwp_rl.normalization``); neuroevolution
    refuses it. core_output: what the actor and critic heads read, the core's output (``core``) or that and the torso's
    features beside it (``core_and_features``, a skip connection around the core). torso_autocast: ``bfloat16`` runs the
    torso under bfloat16 autocast (``fwp_rl.policy.TORSO_AUTOCASTS``)."""

    torso: str = "mlp"
    torso_options: dict = dataclasses.field(default_factory=dict)
    core: str = "delta"
    core_options: dict = dataclasses.field(default_factory=dict)
    action_squash: bool = False
    normalize_observations: bool = False
    dtype: typing.Literal["float32", "float64"] = "float32"
    core_output: typing.Literal["core", "core_and_features"] = "core"
    torso_autocast: typing.Literal["none", "bfloat16"] = "none"


@dataclasses.dataclass
class RunConfig:
    """Where a run writes and how it logs.

    wandb, project, entity, tags: where and how the run logs to Weights & Biases (``fwp_rl.runs.start_run_wandb``):
    offline (the files stay in the run directory until ``wandb sync``), online or disabled; the project, the entity
    (a user or team; None: the account's default) and tags added to the run's own (learner, core, task).

    group: the experiment the run belongs to, its W&B group (None: the config's ``name``), so that W&B draws the runs
    of one experiment as one line; ``fwp-rl train --seeds`` sets it to the name of the group directory that holds
    the seeds' run directories (``fwp_rl.seeds``), so it is checked as a directory name, like a config's ``name``
    (``check_run_name``).

    tensorboard: also write every metrics record as TensorBoard scalars, at its step, into runs/<name>/tensorboard/
    (``fwp_rl.runs.MetricsLog``).

    eval_every: evaluate the policy every this many updates (or generations) and at the end of the run (None or 0:
    never): ``eval_episodes`` whole episodes in an env of their own, acting by the most likely action
    (``eval_deterministic``) or sampling; the best evaluation's checkpoint is kept as checkpoints/best.pt
    (``fwp_rl.harness``). eval_video_every: every this many evaluations' worth of updates (None or 0: never), and at
    the last evaluation, the evaluation's first episode is also recorded, runs/<name>/videos/<update>.mp4, and logged
    to W&B as a video.
    """

    root: str = "runs"
    wandb: typing.Literal["offline", "online", "disabled"] = "offline"
    project: str = "fwp-rl"
    entity: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    tensorboard: bool = False
    checkpoint_every: int = 10
    group: str | None = None
    eval_every: int | None = None
    eval_episodes: int = 10
    eval_deterministic: bool = True
    eval_video_every: int | None = None

    def validate(self, prefix: str) -> None:
        if self.checkpoint_every < 1:
            raise ConfigError(f"{prefix}.checkpoint_every={self.checkpoint_every} is not allowed: it must be >= 1")
        if self.eval_every is not None and self.eval_every < 0:
            raise ConfigError(f"{prefix}.eval_every={self.eval_every} is not allowed: it must be >= 1, or 0 or null "
                              "for no evaluation")
        if self.eval_episodes < 1:
            raise ConfigError(f"{prefix}.eval_episodes={self.eval_episodes} is not allowed: it must be >= 1")
        if self.group is not None:
            check_run_name(self.group, f"{prefix}.group")
        if self.entity is not None and not self.entity.strip():
            raise ConfigError(f"{prefix}.entity={self.entity!r} is not allowed: name a W&B user or team, or leave it "
                              "null for the account's default")
        for i, tag in enumerate(self.tags):
            if not tag.strip() or len(tag) > MAX_TAG_LENGTH:
                raise ConfigError(f"{prefix}.tags[{i}]={tag!r} is not allowed: a W&B tag has 1 to {MAX_TAG_LENGTH} "
                                  "characters")
        if self.eval_video_every is not None and self.eval_video_every < 0:
            raise ConfigError(f"{prefix}.eval_video_every={self.eval_video_every} is not allowed: it must be >= 1, or "
                              "0 or null for no video")
        if self.eval_video_every and not self.eval_every:
            raise ConfigError(f"{prefix}.eval_video_every={self.eval_video_every} records the video of an evaluation: "
                              "set run.eval_every too")
