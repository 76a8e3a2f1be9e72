"""The fault suite: every bad input of fwp_rl.bench.bad_inputs gives a clear one-line error with exit code 2, and runs
killed (SIGKILL) at random moments and resumed lose nothing (fwp_rl.bench.faults), the double pole's exactly."""

import pytest

from fwp_rl.bench import bad_inputs, faults
from fwp_rl.bench.bad_inputs import BAD_INPUTS, Case, try_case


def test_the_table_holds_at_least_100_distinct_cases():
    assert len(BAD_INPUTS) >= 100
    assert len({case.argv for case in BAD_INPUTS if case.setup is None}) == sum(c.setup is None for c in BAD_INPUTS)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.name)
def test_a_bad_input_gives_a_clear_error(case, tmp_path):
    outcome = try_case(case, tmp_path)
    assert outcome.clear, outcome.stderr
    assert case.expected in outcome.stderr


def test_the_bench_counts_an_unclear_case_and_fails(monkeypatch, capsys):
    monkeypatch.setattr(faults, "BAD_INPUTS", [BAD_INPUTS[0], Case(("train", "{dir}/ppo.yaml", "--set",
                                                                       "ppo.gamma=0.5"), "never said")])
    monkeypatch.setattr(bad_inputs, "CONFIGS", {"ppo": bad_inputs.CONFIGS["ppo"]})
    options = faults.FaultsOptions(learners=None, kills=1, seed=0, max_delay=1.0, only="inputs", json=None)
    assert faults.run_faults_bench(options) == 1
    out = capsys.readouterr().out
    assert "2 cases tried, 1 clear one-line errors (exit code 2), 0 tracebacks, 1 not clear" in out
    assert "not clear: train ppo.yaml --set ppo.gamma=0.5: exit code 0" in out


@pytest.mark.parametrize("learner", ["ppo", "sb3_recurrent_ppo", "neuroevolution"])
def test_a_run_killed_three_times_and_resumed_loses_nothing(learner, tmp_path):
    report = faults.kill_and_resume(learner, tmp_path, kills=3, seed=1)
    assert report.kills == 3
    assert report.kept, report
