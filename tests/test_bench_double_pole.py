"""``fwp-rl bench double-pole``: the success table's figures against the runs and the success test, runs in
worker processes equal to runs in this one, the steps/s comparison with EvoTorch's VecGymNE, and bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fwp_rl.agents import neuroevolution as ne
from fwp_rl.bench import double_pole as bench
from fwp_rl.cli import main
from fwp_rl.envs import double_pole
from fwp_rl.envs.double_pole import success

TINY = {"learner": "neuroevolution", "name": "tiny_elman",
        "policy": {"torso": "identity", "core": "elman", "core_options": {"hidden_size": 2}, "action_squash": True},
        "search": {"algorithm": "cmaes", "popsize": 8, "max_evaluations": 400}}


def write_config(tmp_path, name: str, data: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def check_success_test(run: bench.DoublePoleRun) -> None:
    """A run reported solved passes the success test again, with the figures it reported."""
    config = bench.load_double_pole_config(run.config, run.task, run.seed)
    env = double_pole.make_config(**config.env.options)
    test = double_pole.champion_test(ne.make_policy(config), run.flat_params, env)
    assert test.solved(env) and (test.generalization, test.balanced) == (run.generalization, run.balanced)


LONG_STEPS = 1_000  # the 100,000-step part of the success test, shortened
GENERALIZATION_STEPS = 100  # the 1,000 steps per generalization start, shortened


def shorten_success_test(monkeypatch) -> None:
    """Both parts of the success test run, in short: LONG_STEPS steps from the standard start, GENERALIZATION_STEPS
    from each of the 625 starts, so that a run that solves takes seconds."""
    long_balance = success.long_balance
    monkeypatch.setattr(success, "MARKOV_STEPS", LONG_STEPS)
    monkeypatch.setattr(success, "GENERALIZATION_STEPS", GENERALIZATION_STEPS)
    monkeypatch.setattr(success, "long_balance",
                        lambda *args, **kwargs: long_balance(*args, **kwargs, steps=LONG_STEPS))


def write_balancing_start(tmp_path) -> str:
    """CMA-ES started at the hand-made balancing controller, with a spread too small to undo it (its one-step
    differences are read with large gains): it solves the non-Markov task in its first generation."""
    centre = bench.balancing_policy().get_flat_parameters().tolist()
    return write_config(tmp_path, "balancing_start", {
        "learner": "neuroevolution",
        "policy": {"torso": "identity", "core": "elman", "core_options": {"hidden_size": bench.BALANCING_HIDDEN},
                   "action_squash": True},
        "search": {"algorithm": "cmaes", "popsize": 4, "stdev_init": 1e-5, "max_evaluations": 8,
                   "options": {"center_init": centre}}})


def test_success_table_agrees_with_the_runs(tmp_path, monkeypatch):
    """The table's figures against runs that solve (CMA-ES at the balancing controller, the success test shortened)
    and runs that do not (a tiny controller on a budget of 96 evaluations): the rate counts every run, the
    evaluations and generalization only the solved ones, and each solved run passes the success test again with
    the figures it reported."""
    tiny = bench.bench_double_pole([write_config(tmp_path, "tiny_elman", TINY)], tasks=["markov", "nonmarkov"],
                                   seeds=2, max_evaluations=96)
    shorten_success_test(monkeypatch)
    runs = tiny + bench.bench_double_pole([write_balancing_start(tmp_path)], tasks=["nonmarkov"], seeds=1)
    assert [(Path(r.config).stem, r.task, r.seed, r.solved) for r in runs] == [
        ("tiny_elman", "markov", 0, False), ("tiny_elman", "markov", 1, False), ("tiny_elman", "nonmarkov", 0, False),
        ("tiny_elman", "nonmarkov", 1, False), ("balancing_start", "nonmarkov", 0, True)]
    rows = bench.summarize_double_pole(runs)
    assert [(r["name"], r["task"], r["runs"], r["solved"], r["max_evaluations"]) for r in rows] == [
        ("tiny_elman", "markov", 2, 0, 96), ("tiny_elman", "nonmarkov", 2, 0, 96),
        ("balancing_start", "nonmarkov", 1, 1, 8)]
    for row in rows[:2]:
        assert row["success_rate"] == 0.0
        assert row["mean_evaluations"] is row["median_evaluations"] is row["mean_generalization"] is None
    solved = runs[4]
    assert rows[2]["success_rate"] == 1.0 and rows[2]["mean_evaluations"] == rows[2]["median_evaluations"] == 4
    assert rows[2]["mean_generalization"] == solved.generalization
    for row in rows:
        group = [r for r in runs if (r.config, r.task) == (row["config"], row["task"])]
        assert row["mean_seconds"] == pytest.approx(statistics.mean(r.seconds for r in group))
        assert row["mean_seconds"] > 0
    for run in runs:
        assert run.algorithm == "cmaes" and run.controller.startswith("elman, ")
    for run in runs[:4]:
        assert run.evaluations >= 96  # an unsolved run used its whole budget
    # solved in its first generation of 4, both parts of the success test passed
    assert solved.evaluations == 4 and solved.balanced == LONG_STEPS
    assert double_pole.GENERALIZATION_REQUIRED <= solved.generalization <= 625
    check_success_test(solved)


def test_summary_rates_every_run_and_averages_only_the_solved_ones():
    """summarize_double_pole on a group of solved and unsolved runs: the success rate over all of them, the
    evaluations (mean, median) and generalization over the solved ones only."""
    def run(seed, solved, evaluations, generalization):
        return bench.DoublePoleRun("c.yaml", "s", "cmaes", "elman, 79 weights", "nonmarkov", seed, 1000, solved,
                                   evaluations, generalization, LONG_STEPS if solved else 0, 2.0 * seed + 1,
                                   torch.zeros(3))

    runs = [run(0, True, 100, 300), run(1, False, 1000, 150), run(2, True, 300, 500), run(3, True, 800, 250)]
    (row,) = bench.summarize_double_pole(runs)
    assert (row["runs"], row["solved"], row["success_rate"]) == (4, 3, 0.75)
    assert row["mean_evaluations"] == 400 and row["median_evaluations"] == 300
    assert row["mean_generalization"] == 350 and row["mean_seconds"] == 4.0


def test_runs_in_worker_processes_equal_runs_in_this_one(tmp_path):
    path = write_config(tmp_path, "tiny_elman", TINY)
    settings = dict(tasks=["nonmarkov"], seeds=2, max_evaluations=16)
    here = bench.bench_double_pole([path], **settings)
    workers = bench.bench_double_pole([path], parallel=2, **settings)
    for a, b in zip(here, workers, strict=True):
        assert (a.seed, a.solved, a.evaluations, a.generalization, a.balanced) == \
            (b.seed, b.solved, b.evaluations, b.generalization, b.balanced)
        assert a.flat_params.equal(b.flat_params)


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.skipif(
    double_pole.compile_unavailable("cpu") is not None, reason="torch.compile cannot run here"))])
def test_steps_per_second_against_vecgymne(compile):
    rows = bench.bench_double_pole_throughput(popsize=1, repeats=1, devices=["cpu"], compile=compile,
                                              larger_popsizes=(3,))
    ours = ["fwp-rl DoublePoleProblem"] + ["fwp-rl DoublePoleProblem, compiled"] * compile
    assert [(r["side"], r["popsize"]) for r in rows] == [*((side, p) for p in (1, 3) for side in ours),
                                                         ("EvoTorch VecGymNE", 1)]
    *ours, theirs = rows
    # all evaluate the same controller with the same 79 weights, which balances every one of the 1,000 steps
    for row in ours:
        assert row["weights"] == theirs["weights"] == 79
        assert row["steps"] == row["popsize"] * double_pole.NONMARKOV_STEPS
        assert theirs["steps"] == double_pole.NONMARKOV_STEPS
        assert row["steps_per_second"] > 0 and row["vs_vecgymne"] == pytest.approx(
            row["steps_per_second"] / theirs["steps_per_second"])
    assert theirs["steps_per_second"] > 0 and theirs["vs_vecgymne"] == 1.0


def test_cli_prints_ours_beside_the_published_table(tmp_path, capsys):
    path = write_config(tmp_path, "tiny_elman", TINY)
    out = tmp_path / "bench.json"
    assert main(["bench", "double-pole", "--only", "success", "--configs", path, "--tasks", "nonmarkov",
                 "--seeds", "1", "--max-evaluations", "16", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CoSyNE" in printed and "3,416" in printed and "tiny_elman" in printed and "0/1 solved" in printed
    assert ", 1 thread, torch" in " ".join(printed.split())  # what each run had, not what this process has
    figures = json.loads(out.read_text())
    assert figures["rows"][0]["runs"] == 1 and figures["runs"][0]["evaluations"] == 16


def test_each_run_is_kept_as_it_finishes_and_the_same_command_continues(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the second run: the first is in the JSON file and in the table printed; the same command then
    makes only the runs that did not finish, and they equal those of a bench that was never stopped."""
    monkeypatch.setenv("COLUMNS", "400")  # lines that rich does not wrap
    path = write_config(tmp_path, "tiny_elman", TINY)
    out = tmp_path / "bench.json"
    command = ["bench", "double-pole", "--only", "success", "--configs", path, "--tasks", "nonmarkov", "--seeds", "3",
               "--max-evaluations", "16", "--json", str(out)]
    run_seed, made = bench._run_double_pole_seed, []

    def interrupted_at_the_second(path, config):
        if made:
            raise KeyboardInterrupt
        made.append(config.seed)
        return run_seed(path, config)

    monkeypatch.setattr(bench, "_run_double_pole_seed", interrupted_at_the_second)
    assert main(command) == 130
    printed = capsys.readouterr().out
    assert "interrupted: the 1 runs that finished" in printed and "0/1 solved" in printed
    assert "stopped by Ctrl-C" in printed and "continues it from" in printed
    (first,) = json.loads(out.read_text())["runs"]
    assert first["seed"] == 0 and first["evaluations"] == 16

    def counted(path, config):
        made.append(config.seed)
        return run_seed(path, config)

    monkeypatch.setattr(bench, "_run_double_pole_seed", counted)
    assert main(command) == 0
    assert "keeping the 1 finished runs" in capsys.readouterr().out and made == [0, 1, 2]
    figures = json.loads(out.read_text())
    assert figures["runs"][0] == first and figures["rows"][0]["runs"] == 3
    kept = [bench.DoublePoleRun.from_json(r) for r in figures["runs"]]
    fresh = bench.bench_double_pole([path], tasks=["nonmarkov"], seeds=3, max_evaluations=16)
    for a, b in zip(kept, fresh, strict=True):
        assert (a.seed, a.settings, a.evaluations, a.generalization) == (b.seed, b.settings, b.evaluations,
                                                                         b.generalization)
        assert a.flat_params.equal(b.flat_params)


def start_endless_bench(tmp_path) -> subprocess.Popen:
    """fwp-rl bench double-pole in 2 worker processes, with runs that would take hours, started as a terminal starts
    a command: in a process group of its own, Ctrl-C not ignored."""
    path = write_config(tmp_path, "tiny_elman", {**TINY, "search": {**TINY["search"], "max_evaluations": 10**7}})
    command = [sys.executable, "-m", "fwp_rl.cli", "bench", "double-pole", "--only", "success", "--configs", path,
               "--tasks", "nonmarkov", "--seeds", "4", "--parallel", "2", "--json", str(tmp_path / "bench.json")]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def children(pid: int, marker: bytes = b"") -> list[int]:
    """The processes whose parent is ``pid`` and whose command line holds ``marker``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended while we looked
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid and marker in (
                    stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # user and system time


def started_workers(bench_process: subprocess.Popen, cpu: float) -> list[int]:
    """The bench's two worker processes, once each has used ``cpu`` seconds of CPU time (their imports take about
    4: 0.5 catches them importing, 8 in a run)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = children(bench_process.pid, b"spawn_main")
        with contextlib.suppress(OSError):
            if len(workers) == 2 and min(map(cpu_seconds, workers)) >= cpu:
                return workers
        time.sleep(0.1)
    raise AssertionError(f"the bench's workers did not start: {children(bench_process.pid)}")


def finish(bench_process: subprocess.Popen) -> str:
    try:
        return bench_process.communicate(timeout=30)[0]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench_process.pid, signal.SIGKILL)


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes in /proc")


@needs_proc
@pytest.mark.parametrize("cpu", [0.5, 8.0], ids=["workers-starting", "runs-under-way"])
def test_ctrl_c_stops_the_workers_and_the_bench_at_once(tmp_path, cpu):
    """Ctrl-C from a terminal reaches every process of its group: the bench, with worker processes still importing
    or in runs that would take minutes, stops within seconds, with its message, no traceback, exit status 130 and
    no process left behind."""
    bench_process = start_endless_bench(tmp_path)
    started = started_workers(bench_process, cpu) + children(bench_process.pid)
    os.killpg(bench_process.pid, signal.SIGINT)
    printed = finish(bench_process)
    assert bench_process.returncode == 130 and "Traceback" not in printed
    assert "stopped by Ctrl-C" in printed
    deadline = time.monotonic() + 10  # multiprocessing's resource tracker ends once it sees the bench gone
    while any(Path(f"/proc/{pid}").exists() for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]


@needs_proc
def test_a_worker_that_dies_stops_the_bench_with_a_message(tmp_path):
    """A worker process killed during a run (by the system, for memory): the bench does not wait for that run
    forever; it stops within seconds with the table of the finished runs, a message naming the worker and exit
    status 1."""
    bench_process = start_endless_bench(tmp_path)
    dead = started_workers(bench_process, 8.0)[0]
    os.kill(dead, signal.SIGKILL)
    printed = " ".join(finish(bench_process).split())
    assert bench_process.returncode == 1 and "Traceback" not in printed
    assert f"stopped by an error: worker process {dead} ended during a run" in printed
    assert "the same command continues it" in printed


def test_kept_runs_of_other_settings_or_another_file_are_refused(tmp_path, capsys):
    path = write_config(tmp_path, "tiny_elman", TINY)
    out = tmp_path / "bench.json"
    command = ["bench", "double-pole", "--only", "success", "--configs", path, "--tasks", "nonmarkov", "--seeds", "1",
               "--json", str(out)]
    assert main([*command, "--max-evaluations", "16"]) == 0
    capsys.readouterr()
    assert main([*command, "--max-evaluations", "24"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the kept run of {path} (nonmarkov, seed 0) is not one of this bench's runs" in err
    out.write_text(json.dumps({"runs": [{"seed": 0}]}))
    assert main([*command, "--max-evaluations", "16"]) == 2
    err = capsys.readouterr().err
    message = f"--json {str(out)!r} exists but is not a file of fwp-rl bench double-pole (a run lacks config, settings"
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("arguments, message", [
    (["--tasks", "markov,hard"], "--tasks 'markov,hard' is not allowed; choose from: markov, nonmarkov"),
    (["--seeds", "0"], "--seeds 0 is not allowed: it must be >= 1"),
    (["--parallel", "0"], "--parallel 0 is not allowed: it must be >= 1"),
    (["--popsize", "0"], "--popsize 0 is not allowed: it must be >= 1"),
    (["--devices", "cpu,gpu"], "--devices cpu,gpu: 'gpu' is not allowed: 'cpu', 'cuda', 'cuda:1', ..."),
    (["--configs", "missing.yaml"], "--configs: config file 'missing.yaml' does not exist; give files of a "
                                    "neuroevolution double pole config (learner: neuroevolution, env.id: double_pole)"),
    (["--configs", "{ppo}"], "(learner: 'ppo', env.id: 'fwp_rl/Recall-v0') is not a neuroevolution double pole "
                             "config"),
    (["--configs", "{cartpole}"], "(learner: 'neuroevolution', env.id: 'CartPole-v1') is not a neuroevolution"),
    (["--configs", "{bad_key}"], "bad_key.yaml': search: unknown key 'stepsize'"),
])
def test_bad_input_is_one_line_naming_it_and_what_is_allowed(tmp_path, capsys, arguments, message):
    configs = dict(ppo={"learner": "ppo", "env": {"id": "fwp_rl/Recall-v0"}},
                   cartpole=dict(TINY, env={"id": "CartPole-v1"}),
                   bad_key=dict(TINY, search={"algorithm": "cmaes", "stepsize": 1}))
    arguments = [a.format(**{name: write_config(tmp_path, name, data) for name, data in configs.items()})
                 for a in arguments]
    tiny = write_config(tmp_path, "tiny_elman", TINY)
    assert main(["bench", "double-pole", "--configs", tiny, *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fwp-rl: error: ") and err.count("\n") == 1 and message in err
