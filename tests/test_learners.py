"""The learner registry (fwp_rl.learners): every entry complete, load_config picking the schema by the learner
key, the errors naming the learners allowed, and the learners' modules imported only when one is needed."""

import dataclasses
import importlib
import inspect
import subprocess
import sys

import pytest

from fwp_rl import evaluate, learners
from fwp_rl.cli import main
from fwp_rl.config import ConfigError, to_dict
from fwp_rl.learners import LEARNERS, RESUMABLE, _flat, learner, load_config

ALLOWED = "choose one of: neuroevolution, ppo, sb3_recurrent_ppo"


@pytest.mark.parametrize("name", LEARNERS)
def test_every_entry_is_complete(name):
    entry = learner(name)
    assert entry.name == name
    assert dataclasses.is_dataclass(entry.config) and entry.config().learner == name
    train = inspect.signature(importlib.import_module(entry.module).train).parameters
    assert "console" in train and ("resume" in train) == entry.resumes == (name in RESUMABLE)
    assert callable(getattr(evaluate, entry.evaluation))
    assert entry.step_unit and entry.default_metric and entry.core in (None, "sb3_lstm")
    assert isinstance(entry.task(to_dict(entry.config())), str)
    flat = _flat(to_dict(entry.config()))
    assert entry.resume_may_change and all(key in flat for key in entry.resume_may_change)
    assert {"run.wandb", "run.project", "run.checkpoint_every"} <= set(entry.resume_may_change)
    assert not {"seed", "name", "run.group"} & set(entry.resume_may_change)


def test_a_resume_may_change_the_budget_the_ppo_device_and_run_settings_and_nothing_else():
    ppo = learner("ppo")
    saved = to_dict(ppo.config())
    changed = to_dict(ppo.config())
    changed["ppo"].update(total_steps=5, device="cpu")
    changed["run"].update(wandb="disabled", checkpoint_every=3, entity="team", tags=["long"], tensorboard=True,
                          eval_every=5, eval_video_every=2)
    assert ppo.refused_changes(saved, changed) == []
    changed["policy"]["core"] = "lstm"
    changed["policy"]["core_options"] = {"hidden_size": 8}
    changed["run"]["group"] = "g"
    del changed["ppo"]["gamma"]
    assert ppo.refused_changes(saved, changed) == ["policy.core 'delta' -> 'lstm'", "ppo.gamma 0.99 -> (absent)",
                                                   "run.group None -> 'g'",
                                                   "policy.core_options.hidden_size (absent) -> 8"]
    # a checkpoint written before a key was added: the key counts as its default
    del saved["ppo"]["nonfinite"]
    assert ppo.refused_changes(saved, to_dict(ppo.config())) == []
    assert ppo.refused_changes(saved, to_dict(ppo.config(ppo=ppo.config().ppo.__class__(nonfinite="skip")))) == [
        "ppo.nonfinite 'stop' -> 'skip'"]
    ne = learner("neuroevolution")
    saved = to_dict(ne.config())
    changed = to_dict(ne.config())
    changed["search"].update(max_evaluations=7, max_generations=2)
    assert ne.refused_changes(saved, changed) == []
    changed["search"].update(popsize=8, device="cuda")  # the saved generators are the device's own kind
    assert ne.refused_changes(saved, changed) == ["search.popsize None -> 8", "search.device 'cpu' -> 'cuda'"]


@pytest.mark.parametrize("name", LEARNERS)
def test_load_config_checks_a_file_against_its_learners_schema(tmp_path, name):
    path = tmp_path / "c.yaml"
    path.write_text(f"learner: {name}\n")
    assert type(load_config(str(path), [])) is LEARNERS[name].config
    other = "search" if name != "neuroevolution" else "ppo"  # a section of another learner's schema
    with pytest.raises(ConfigError, match=f"unknown key '{other}'"):
        load_config(str(path), [f"{other}.device=cpu"])


@pytest.mark.parametrize("text, shown", [("learner: sb3\n", "'sb3'"), ("name: x\n", "None"),
                                         ("learner: [ppo]\n", "['ppo']")])
def test_any_other_learner_is_an_error_naming_the_learners_allowed(tmp_path, text, shown):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(path), [])
    assert str(e.value) == f"learner={shown} is not allowed; {ALLOWED}"


def test_resume_of_a_learner_that_does_not_resume_names_those_that_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(LEARNERS, "ppo", dataclasses.replace(LEARNERS["ppo"], resumes=False))
    monkeypatch.setattr(learners, "RESUMABLE", ("neuroevolution", "sb3_recurrent_ppo"))
    (tmp_path / "config.yaml").write_text("learner: ppo\n")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"fwp-rl: error: --resume works for 'neuroevolution' and 'sb3_recurrent_ppo' "
                                       f"runs; {str(tmp_path)!r} is a 'ppo' run\n")


def test_the_registry_names_its_learners_without_importing_them():
    code = ("import sys\nfrom fwp_rl.learners import learner\nlearner('ppo')\n"
            "print(sorted(m for m in ('torch', 'fwp_rl.agents.ppo', 'fwp_rl.evaluate') if m in sys.modules))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert child.stdout.strip() == "[]"
