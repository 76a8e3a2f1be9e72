"""Neuroevolution resumes exactly: a searcher of every algorithm restored from its state equals the saved one attribute
by attribute and makes the populations the saved one makes; a double pole run stopped and resumed (restarts before and
after the resume point too) ends with the champion, fitness, test and counts of the run never stopped, and so does a
run resumed from the CLI with a larger budget; a Gymnasium run goes on with its episode seeds; what a resume may not
change, and a checkpoint it cannot go on from, are one-line errors."""

from __future__ import annotations

import io

import pytest
import torch
from evotorch import SolutionBatch
from evotorch.distributions import Distribution
from evotorch.optimizers import ClipUp, TorchOptimizer

from fwp_rl.agents import neuroevolution as ne
from fwp_rl.cli import main
from fwp_rl.config import PolicyConfig, RunConfig
from fwp_rl.runs import load_checkpoint, read_metrics, save_checkpoint

DIRECT = dict(hidden_size=1, slow_size=3)  # 43 parameters: quick populations


def make_config(algorithm="cmaes", popsize=8, core="direct", core_options=DIRECT, env_id=ne.DOUBLE_POLE, **search):
    options = {"task": "nonmarkov"} if env_id == ne.DOUBLE_POLE else {}
    return ne.NeuroevolutionConfig(
        name="resume", env=ne.EnvConfig(id=env_id, options=options),
        policy=PolicyConfig(torso="identity", core=core, core_options=core_options, action_squash=True),
        search=ne.SearchConfig(algorithm=algorithm, popsize=popsize, **search), run=RunConfig(wandb="disabled"))


def through_a_file(payload: dict) -> dict:
    """``payload`` saved and loaded back as checkpoints will be: safe loading takes tensors and plain values only."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def resumed(config, payload: dict) -> ne.Evolution:
    """A fresh Evolution of ``config`` that goes on from ``payload``, with torch's global generator moved elsewhere
    (as in a new process): the searchers draw from the problem's generator only."""
    evolution = ne.Evolution(config)
    evolution.load_state_dict(through_a_file(payload))
    torch.manual_seed(12345)
    return evolution


def assert_same(a, b, where: str) -> None:
    """Two searchers' attribute values are equal, where they are state (tensors, populations, distributions,
    optimizers, plain values); objects made from the config (problem, hooks, operators, methods) are not compared."""
    if isinstance(a, SolutionBatch):
        assert torch.equal(a.values, b.values) and torch.equal(a.evals, b.evals), where
    elif isinstance(a, Distribution):
        assert_same(a.parameters, b.parameters, where)
    elif isinstance(a, ClipUp):
        assert_same(a._velocity, b._velocity, where)
    elif isinstance(a, TorchOptimizer):
        assert_same(a.contained_optimizer.state_dict(), b.contained_optimizer.state_dict(), where)
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif a is None or isinstance(a, (bool, int, float, str)):
        assert a == b, where


# Every algorithm, and SNES with an optimizer of the centre set in search.options (PGPE's own is ClipUp).
SEARCHES = [(algorithm, {}) for algorithm in ne.ALGORITHMS] + [("snes", {"optimizer": "adam"})]
IDS = [*ne.ALGORITHMS, "snes-adam"]


@pytest.mark.parametrize("algorithm, options", SEARCHES, ids=IDS)
def test_a_restored_searcher_equals_the_saved_one_attribute_by_attribute(algorithm, options):
    """Every attribute a searcher of EvoTorch holds, whatever SEARCHER_STATE names, is restored (its status cache and
    first step's time aside): an attribute left out of SEARCHER_STATE that a search changes fails here."""
    config = make_config(algorithm, options=options)
    saved = ne.Evolution(config)
    for _ in range(3):
        saved.step()
    restored = resumed(config, saved.state_dict())
    for name, value in vars(saved.searcher).items():
        if not name.startswith("_LazyReporter") and name != "_first_step_datetime":
            assert_same(value, getattr(restored.searcher, name), f"{algorithm}.{name}")


@pytest.mark.parametrize("algorithm, options", SEARCHES, ids=IDS)
def test_a_resumed_search_makes_the_populations_of_the_saved_one(algorithm, options):
    config = make_config(algorithm, options=options)
    saved = ne.Evolution(config)
    for _ in range(3):
        saved.step()
    restored = resumed(config, saved.state_dict())
    for _ in range(4):
        a, b = saved.step(), restored.step()
        assert torch.equal(saved.searcher.population.values, restored.searcher.population.values)
        assert torch.equal(saved.searcher.population.evals, restored.searcher.population.evals)
        assert (a.generation, a.evaluations, a.best, a.mean) == (b.generation, b.evaluations, b.best, b.mean)
        assert torch.equal(a.best_ever_params, b.best_ever_params)


def report_figures(r: ne.GenerationReport) -> tuple:
    return r.generation, r.evaluations, r.best, r.mean, r.best_ever, r.champion_steps, r.test, r.restarts


@pytest.mark.parametrize("restarts, stop_after, restarted", [
    (dict(restart_unbalanced_after=18), 3, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]),
    (dict(restart_unbalanced_after=18), 5, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]),
    (dict(restart_after=12), 6, [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]),
])
def test_a_double_pole_run_stopped_and_resumed_ends_as_the_run_never_stopped(restarts, stop_after, restarted):
    """Ten generations of CMA-ES with restarts (``restarted``: the restarts so far after each generation); the run
    stopped after generation 3 resumes where a restart is due, the others between two. Stopping, as Ctrl-C does,
    tests the solution kept before the checkpoint."""
    config = make_config(core="elman", core_options=dict(hidden_size=3), popsize=6, max_generations=10, **restarts)
    whole = []
    expected = ne.evolve(config, on_generation=whole.append)
    assert [r.restarts for r in whole] == restarted
    stopped = ne.Evolution(config)
    for _ in range(stop_after):
        stopped.step()
    stopped.finish()
    evolution, rest = resumed(config, stopped.state_dict()), []
    while not evolution.done:
        rest.append(evolution.step())
    result = evolution.finish()
    assert [report_figures(r) for r in rest] == [report_figures(r) for r in whole[stop_after:]]
    assert torch.equal(result.flat_params, expected.flat_params)
    assert (result.fitness, result.generations, result.evaluations, result.solved, result.test, result.restarts) == (
        expected.fitness, expected.generations, expected.evaluations, expected.solved, expected.test, expected.restarts)
    assert result.test is not None and result.seconds > 0


def test_a_gymnasium_run_goes_on_with_its_episode_seeds():
    config = make_config("snes", popsize=6, core="elman", core_options=dict(hidden_size=3), env_id="CartPole-v1")
    config.env.episodes = 2
    saved = ne.Evolution(config)
    for _ in range(2):
        saved.step()
    restored = resumed(config, saved.state_dict())
    assert restored.problem._episode_seed == saved.problem._episode_seed == config.seed + 2 * 2  # 2 generations
    for _ in range(3):
        assert report_figures(saved.step()) == report_figures(restored.step())
        assert torch.equal(saved.searcher.population.evals, restored.searcher.population.evals)


TINY = ("learner: neuroevolution\nname: tiny\nenv: {options: {task: nonmarkov}}\n"
        "policy: {torso: identity, core: direct, core_options: {hidden_size: 1, slow_size: 3}}\n"
        "search: {algorithm: cmaes, popsize: 8, max_evaluations: %d}\n"
        "run: {root: %s, wandb: disabled, checkpoint_every: 2}\n")


@pytest.fixture
def wide(monkeypatch):
    """A console wide enough that no line it prints (each naming a run directory) is wrapped."""
    monkeypatch.setenv("COLUMNS", "400")


def test_cli_resume_of_a_finished_run_with_a_larger_budget_ends_as_the_run_with_that_budget(tmp_path, capsys, wide):
    for name, budget in (("short", 40), ("long", 80)):
        (tmp_path / f"{name}.yaml").write_text(TINY % (budget, tmp_path / name))
        assert main(["train", str(tmp_path / f"{name}.yaml")]) == 0
    short, long = tmp_path / "short" / "tiny", tmp_path / "long" / "tiny"
    assert load_checkpoint(short)["evaluations"] == 40
    assert main(["train", "--resume", str(short), "--set", "search.max_evaluations=80"]) == 0
    assert "resuming" in capsys.readouterr().out
    got, expected = load_checkpoint(short), load_checkpoint(long)
    for key in ("update", "global_step", "generation", "evaluations", "solved", "fitness", "test"):
        assert got[key] == expected[key], key
    assert torch.equal(got["flat_params"], expected["flat_params"])
    assert all(torch.equal(got["policy"][k], v) for k, v in expected["policy"].items())
    records = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(short / "metrics.jsonl")]
    assert records == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(long / "metrics.jsonl")]
    assert [r["step"] for r in records] == [8 * g for g in range(1, 11)]
    # Again: nothing to continue, said in one line; the run directory stays as it is.
    metrics = (short / "metrics.jsonl").read_text()
    assert main(["train", "--resume", str(short), "--set", "search.max_evaluations=80"]) == 0
    assert capsys.readouterr().out == (f"nothing to continue in {short}: its budget is spent (raise "
                                       "search.max_evaluations or search.max_generations with --set)\n")
    assert (short / "metrics.jsonl").read_text() == metrics


def test_cli_resume_of_a_solved_run_has_nothing_to_continue(tmp_path, capsys, wide):
    (tmp_path / "cartpole.yaml").write_text(
        "learner: neuroevolution\nname: cartpole\nenv: {id: CartPole-v1}\n"
        "policy: {torso: identity, core: elman, core_options: {hidden_size: 3}}\n"
        "search: {algorithm: cmaes, popsize: 20, max_generations: 40, target: 300}\n"
        f"run: {{root: {tmp_path / 'runs'}, wandb: disabled}}\n")
    assert main(["train", str(tmp_path / "cartpole.yaml")]) == 0
    run_dir = tmp_path / "runs" / "cartpole"
    assert load_checkpoint(run_dir)["solved"]
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "search.max_generations=80"]) == 0
    assert capsys.readouterr().out == f"nothing to continue in {run_dir}: it solved its task\n"


@pytest.mark.parametrize("override, message", [
    ("search.popsize=10", "search.popsize 8 -> 10"),
    ("search.algorithm=snes", "search.algorithm 'cmaes' -> 'snes'"),
    ("policy.core_options.slow_size=4", "policy.core_options.slow_size 3 -> 4"),
    ("seed=3", "seed 0 -> 3"),
])
def test_cli_resume_refuses_what_would_make_another_search_in_one_line(tmp_path, capsys, override, message):
    (tmp_path / "tiny.yaml").write_text(TINY % (16, tmp_path / "runs"))
    assert main(["train", str(tmp_path / "tiny.yaml")]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    before = (run_dir / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", override, "--set", "search.max_evaluations=32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fwp-rl: error: --resume {str(run_dir)}: the config differs from the checkpoint's: ")
    assert message in err and "search.max_evaluations" not in err.split(";")[0]
    assert len(err.strip().splitlines()) == 1 and (run_dir / "metrics.jsonl").read_text() == before


def test_cli_resume_of_a_checkpoint_without_search_state_is_a_one_line_error(tmp_path, capsys):
    """A neuroevolution checkpoint written before these runs could resume holds no update count nor search state."""
    (tmp_path / "tiny.yaml").write_text(TINY % (16, tmp_path / "runs"))
    assert main(["train", str(tmp_path / "tiny.yaml")]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    payload = load_checkpoint(run_dir)
    for key in ("update", "global_step", "search_state"):
        del payload[key]
    save_checkpoint(run_dir / "checkpoints" / "latest.pt", payload)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "search.max_evaluations=32"]) == 2
    assert capsys.readouterr().err == (f"fwp-rl: error: {str(run_dir)!r} has a checkpoint written before "
                                       "neuroevolution runs could resume: it holds no state to go on from\n")
