import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gymnasium as gym
import pytest
import torch

from fwp_rl.agents import neuroevolution as ne
from fwp_rl.agents import ppo
from fwp_rl.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_device
from fwp_rl.learners import load_config


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    kind: Literal["a", "b"] = "a"
    options: dict = field(default_factory=dict)

    def validate(self, prefix):
        if self.steps > 100:
            raise ConfigError(f"{prefix}.steps={self.steps} is too many: at most 100")


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    seeds: list[int] = field(default_factory=list)
    group: str | None = None


def test_defaults_and_nested_values():
    cfg = from_dict(Outer, {"name": "x", "inner": {"lr": 1, "options": {"z": 1}}, "seeds": [1, 2]})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.steps == 10 and cfg.seeds == [1, 2] and cfg.inner.options == {"z": 1}


@pytest.mark.parametrize("data,message", [
    ({"name": "x", "inner": {"lrr": 1}}, r"inner: unknown key 'lrr'; allowed keys: lr, steps, kind, options"),
    ({"name": "x", "inner": {"steps": "many"}}, r"inner.steps='many' is not allowed: expected int"),
    ({"name": "x", "inner": {"steps": True}}, r"inner.steps=True is not allowed: expected int"),
    ({"name": "x", "inner": {"kind": "c"}}, r"inner.kind='c' is not allowed; choose one of: 'a', 'b'"),
    ({"name": "x", "seeds": [1, "two"]}, r"seeds\[1\]='two' is not allowed: expected int"),
    ({"inner": {}}, r"config: missing required key 'name'"),
    ({"name": "x", "inner": {"steps": 1000}}, r"inner.steps=1000 is too many"),
])
def test_errors_name_key_value_and_allowed(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_overrides_parse_values_as_yaml():
    data = apply_overrides({"name": "x"}, ["inner.lr=3e-4", "inner.kind=b", "seeds=[0, 1]", "group=null"])
    cfg = from_dict(Outer, data)
    assert cfg.inner.lr == 3e-4 and cfg.inner.kind == "b" and cfg.seeds == [0, 1] and cfg.group is None


def test_bad_override_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="must look like key=value"):
        apply_overrides({}, ["inner.lr"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(bad)


SHIPPED_CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads_and_is_named_after_its_file(path):
    config = load_config(str(path), [])
    assert config.name == path.stem  # its run directory is runs/<file name>
    if config.learner == "neuroevolution":
        assert ne.make_policy(config).num_flat_parameters > 0  # its core options fit the core


SUITE_TASKS = {"symbols": ["RepeatPrevious", "CountCards", "RepeatSequence", "Recall"],
               "control": ["CartPoleNoVel", "PendulumNoVel"]}


@pytest.mark.parametrize("kind", sorted(SUITE_TASKS))
def test_the_memory_suite_configs_have_the_lstm_policys_parameter_count_on_every_task(kind):
    def parameters(core: str, task: str, difficulty: str) -> int:
        config = load_config(f"configs/memory/suite_{kind}_{core}.yaml", [])
        env = gym.make(f"fwp_rl/{task}-v0", difficulty=difficulty)
        return ppo.make_policy(config, env.observation_space, env.action_space, torch.device("cpu")
                               ).num_flat_parameters

    cores = {p.stem.removeprefix(f"suite_{kind}_") for p in SHIPPED_CONFIGS if p.stem.startswith(f"suite_{kind}_")}
    assert cores == {"memoryless", "lstm", "gru", "rdn", "delta", "gated_delta"}
    for task in SUITE_TASKS[kind]:
        for difficulty in ("easy", "medium"):
            lstm = parameters("lstm", task, difficulty)
            for core in cores:
                ratio = parameters(core, task, difficulty) / lstm
                assert abs(ratio - 1) <= (0.09 if core == "memoryless" else 0.04), (core, task, difficulty, ratio)


def test_configs_are_shipped():
    assert {p.parent.name for p in SHIPPED_CONFIGS} == {"atari", "double_pole", "gym", "memory"}


@pytest.mark.parametrize("name, auto, here, message", [
    ("gpu", False, True, "--device gpu is not allowed: 'cpu', 'cuda', 'cuda:1', ..."),
    ("meta", True, True, "--device meta is not allowed: 'auto', 'cpu', 'cuda', 'cuda:1', ..."),
    ("auto", False, True, "--device auto is not allowed: 'cpu', 'cuda', 'cuda:1', ..."),
    ("cuda:a", False, False, "--device cuda:a is not allowed: 'cpu', 'cuda', 'cuda:1', ..."),
])
def test_parse_device_names_what_is_allowed(name, auto, here, message):
    with pytest.raises(ConfigError) as e:
        parse_device(f"--device {name}", name, auto=auto, here=here)
    assert str(e.value) == message


def test_parse_device_checks_the_cuda_devices_of_this_machine(monkeypatch):
    assert parse_device("d", "cpu") == torch.device("cpu")
    assert parse_device("d", "cuda:3", here=False) == torch.device("cuda:3")  # a config read where it will not run
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_device("d", "auto", auto=True) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^d but CUDA is not available here; use 'cpu' or 'auto'$"):
        parse_device("d", "cuda", auto=True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parse_device("d", "auto", auto=True) == torch.device("cuda")
    assert parse_device("d", "cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"^d but this machine has 2 CUDA devices: cuda:0, cuda:1$"):
        parse_device("d", "cuda:2")


@pytest.mark.parametrize("learner_name", ["ppo", "sb3_recurrent_ppo", "neuroevolution"])
@pytest.mark.parametrize("key, value", [("name", "../escape"), ("name", "a/b"), ("name", ""), ("name", ".hidden"),
                                        ("name", ".."), ("name", "a\\b"), ("run.group", "../up"), ("run.group", "")])
def test_a_run_name_that_is_not_one_plain_directory_name_is_refused(tmp_path, learner_name, key, value):
    """config.name (and run.group) name a directory inside run.root: a path, a hidden name or none is refused."""
    path = tmp_path / "c.yaml"
    path.write_text(f"learner: {learner_name}\n" + ("policy: MlpLstmPolicy\nppo: {sequence_length: null}\n"
                                                    if learner_name == "sb3_recurrent_ppo" else ""))
    with pytest.raises(ConfigError, match=r"it names the run's directory inside run\.root") as error:
        load_config(str(path), [f"{key}={json.dumps(value)}"])  # a YAML string
    assert str(error.value).startswith(f"{key}={value!r} is not allowed")
    assert load_config(str(path), [f"{key}=seed_1-2.b"])  # dots, dashes and underscores inside are fine
