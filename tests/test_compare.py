"""fwp-rl compare: the table's numbers against the metrics files worked by hand, bootstrap intervals and the IQM,
groups (configs never pooled unseen), curves over seeds of different lengths, x in env frames for Atari,
neuroevolution's success figures, partial and missing runs, real tiny PPO runs of two cores and two seeds, the W&B
report (online, offline, or nothing), and the errors (nothing written over)."""

from __future__ import annotations

import csv
import json
import statistics

import imageio.v2 as imageio
import numpy as np
import pytest
import yaml

from fwp_rl import compare as compare_module
from fwp_rl.cli import main
from fwp_rl.learners import load_config
from fwp_rl.compare import build_comparison, estimate, iqm, mean_curve, run_scores, seed_list, trailing_mean
from fwp_rl.runs import read_metrics
from fwp_rl.seeds import train_seeds


def write_run(path, core, values=(), seed=0, learner="ppo", env_id="fwp_rl/Recall-v0", options=None,
              metric="episodic_return", every=10, wandb="disabled", project="fwp-rl", tail="", policy=None,
              extra=None, records=None):
    """A hand-made run directory: config.yaml, and metrics.jsonl with one record per value every ``every``
    steps (a None value: a record without the metric, as an update in which no episode ended), each updated with
    the dict of ``records`` at its index, then ``tail`` as written (a cut line); values None: no metrics file at all.
    policy: the config's policy section, {"core": core} unless given; extra: more config sections. A seed_<k>
    directory is a seed of the group of its parent's name, as ``train --seeds`` makes it."""
    path.mkdir(parents=True)
    group = path.parent.name if path.name.startswith("seed_") else None
    config = {"learner": learner, "name": path.name, "seed": seed,
              "env": {"id": env_id, "num_envs": 4, "options": options or {}},
              "policy": {"core": core} if policy is None else policy,
              "run": {"root": str(path.parent), "wandb": wandb, "project": project, "group": group}, **(extra or {})}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    if values is None:
        return path
    records = [{"step": every * (i + 1), "update": i + 1, **({} if v is None else {metric: v}),
                **(records or {}).get(i, {})} for i, v in enumerate(values)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


@pytest.fixture
def hand_runs(tmp_path):
    """Two lstm seeds (one with an update without episodes), three delta seeds (a cut last line, a single
    record, no metrics file yet) and a gru run that logged no episode."""
    runs = tmp_path / "runs"
    write_run(runs / "lstm" / "seed_0", "lstm", [1, 3, 5, 7], seed=0)
    write_run(runs / "lstm" / "seed_1", "lstm", [2, 2, None, 8], seed=1)
    write_run(runs / "delta" / "seed_0", "delta", [4, 12, 2], seed=0, tail='{"step": 40, "episodic_ret')
    write_run(runs / "delta" / "seed_1", "delta", [9], seed=1)
    write_run(runs / "delta" / "seed_2", "delta", None, seed=2)
    write_run(runs / "gru", "gru", [None, None])
    return runs


def test_trailing_mean_and_scores():
    np.testing.assert_allclose(trailing_mean(np.array([1.0, 3, 5, 7]), 2), [1, 2, 4, 6])
    np.testing.assert_allclose(trailing_mean(np.array([1.0, 3, 5, 7]), 10), [1, 2, 3, 4])
    assert run_scores(np.array([4.0, 12, 2]), 2) == (7.0, 8.0)  # the first, partial window does not count
    assert run_scores(np.array([4.0, 12, 2]), 1) == (2.0, 12.0)
    assert run_scores(np.array([9.0]), 10) == (9.0, 9.0)  # fewer records than the window: best = final
    assert run_scores(np.array([]), 10) is None


def test_mean_curve_averages_the_runs_that_reach_each_x():
    x, mean, low, high, count = mean_curve([(np.array([0.0, 10, 20]), np.array([0.0, 1, 2])),
                                            (np.array([5.0, 15]), np.array([1.0, 1]))])
    np.testing.assert_allclose(x, [0, 5, 10, 15, 20])
    np.testing.assert_allclose(mean, [0, 0.75, 1, 1.25, 2])
    # the band: the bootstrap interval of the mean of two curves spans them; none where one curve is left
    np.testing.assert_allclose(low, [np.nan, 0.5, 1, 1, np.nan])
    np.testing.assert_allclose(high, [np.nan, 1, 1, 1.5, np.nan])
    assert count.tolist() == [1, 2, 2, 2, 1]


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.array([1.0, 2, 3, 4, 100])) == 3.0  # int(5 / 4) = 1 cut at each end: the outlier goes
    assert iqm(np.array([8.0, 1, 7, 2, 6, 3, 5, 4])) == 4.5  # 2 cut at each end: mean of 3, 4, 5, 6
    assert iqm(np.array([1.0, 2, 9])) == 4.0  # fewer than 4: nothing cut, the mean
    np.testing.assert_allclose(iqm(np.array([[1.0, 10], [2, 20], [3, 30], [400, 40]]), axis=0), [2.5, 25])


def test_bootstrap_intervals_hold_the_true_mean_and_shrink_with_more_seeds():
    draws = np.random.default_rng(0).normal(10.0, 2.0, 200)
    few, many = estimate(list(draws[:5])), estimate(list(draws))
    for e in (few, many):
        assert e.low < 10.0 < e.high and e.low < e.value < e.high
    assert many.high - many.low < (few.high - few.low) / 2  # sqrt(40) times narrower, give or take
    # over many sets of 10 seeds the interval holds the true mean about 95 % of the time (the percentile bootstrap
    # falls a little short with so few seeds)
    sets = np.random.default_rng(1).normal(10.0, 2.0, (200, 10))
    held = sum(e.low < 10.0 < e.high for e in map(estimate, map(list, sets)))
    assert 0.85 * 200 <= held <= 0.99 * 200
    assert estimate(list(draws[:5])) == few  # a fixed generator: the same runs, the same interval
    assert estimate([4.0, 4.0, 4.0]) == compare_module.Estimate(4.0, 4.0, 4.0)
    assert estimate([3.0]) == compare_module.Estimate(3.0, None, None)  # one seed: no interval
    assert estimate([]) == compare_module.Estimate()
    outlier = estimate([1.0, 2, 3, 4, 100], iqm)
    assert outlier.value == 3.0 and outlier.low >= 1 and outlier.high < 100


def test_seed_list():
    assert seed_list([5, 0, 1, 2, 7, 8]) == "0-2, 5, 7-8"
    assert seed_list([3]) == "3" and seed_list([1, 1]) == "1, 1"


def test_table_numbers_are_the_metrics_worked_by_hand(hand_runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["compare", str(hand_runs / "lstm"), str(hand_runs / "delta"), str(hand_runs / "gru"),
                 "--window", "2", "--out", str(out)]) == 0
    report = json.loads((out / "table.json").read_text())
    rows = {row["group"]: row for row in report["groups"]}
    assert [row["group"] for row in report["groups"]] == ["lstm", "delta", "gru"]  # the reference first
    # lstm: windows of 2 over [1, 3, 5, 7] -> 1, 2, 4, 6 (final 6, best 6); over [2, 2, 8] -> 2, 2, 5.
    assert rows["lstm"]["final_mean"] == 5.5 and rows["lstm"]["best_mean"] == 5.5
    # two seeds: the resampled means are 5, 5.5 and 6, so the interval spans the two; the IQM of two is their mean
    assert (rows["lstm"]["final_mean_low"], rows["lstm"]["final_mean_high"]) == (5, 6)
    assert (rows["lstm"]["final_iqm"], rows["lstm"]["final_iqm_low"], rows["lstm"]["final_iqm_high"]) == (5.5, 5, 6)
    # delta: [4, 12, 2] (the cut line dropped) -> 4, 8, 7 (final 7, best 8); [9] -> 9; seed 2 has no data.
    assert (rows["delta"]["runs"], rows["delta"]["runs_with_data"], rows["delta"]["seeds"]) == (3, 2, "0-2")
    assert rows["delta"]["final_mean"] == 8.0 and rows["delta"]["best_mean"] == 8.5
    assert (rows["delta"]["final_mean_low"], rows["delta"]["final_mean_high"]) == (7, 9)
    assert (rows["delta"]["best_mean_low"], rows["delta"]["best_mean_high"]) == (8, 9)
    assert (rows["delta"]["end_min"], rows["delta"]["end_max"]) == (10, 30)
    assert rows["delta"]["final_minus_reference"] == 2.5 and rows["delta"]["best_minus_reference"] == 3.0
    assert rows["delta"]["final_over_reference"] == pytest.approx(8 / 5.5)
    assert rows["lstm"]["final_minus_reference"] == 0 and rows["lstm"]["final_over_reference"] == 1
    assert rows["gru"]["runs_with_data"] == 0 and rows["gru"]["final_mean"] is None
    assert {r["path"]: (r["group"], r["config"], r["seed"], r["final"], r["best"]) for r in report["runs"]}[
        str(hand_runs / "delta" / "seed_0")] == ("delta", "delta", 0, 7, 8)
    assert len(report["runs"]) == 6 and report["group_by"] == "name" and report["reference"] == "lstm"
    assert report["x"] == "env steps (summed over envs)" and report["metric"] == "episodic_return"
    assert report["learners"] == "ppo"

    with open(out / "table.csv") as f:
        table = {row["group"]: row for row in csv.DictReader(f)}
    assert float(table["delta"]["best_mean"]) == 8.5 and table["gru"]["final_mean"] == ""
    assert float(table["delta"]["best_mean_low"]) == 8 and table["delta"]["cores"] == "delta"
    markdown = (out / "table.md").read_text()
    assert ("| delta | 2 of 3 | 0-2 | 8 [7, 9] | 8 [7, 9] | 8.5 [8, 9] | 8.5 [8, 9] | 2.5 (1.45x) | 3 (1.55x) "
            "| 10 to 30 |") in markdown
    # the runs' table: every run with its group, seed and config
    assert f"| delta | {hand_runs / 'delta' / 'seed_0'} | 0 | delta | 3 | 30 | 7 | 8 |" in markdown
    assert f"| gru | {hand_runs / 'gru'} | 0 | gru | 0 | - | - | - |" in markdown
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "curves.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "no episodic_return logged yet" in printed and "delta" in printed


def test_a_directory_of_groups_finds_every_run(hand_runs):
    comparison = build_comparison([hand_runs, hand_runs / "lstm" / "seed_0"])
    assert len(comparison.runs) == 6  # the run given twice counts once
    assert [row.group for row in comparison.rows] == ["lstm", "delta", "gru"]


def test_runs_without_any_episode_yet_still_make_a_report(hand_runs, tmp_path):
    out = tmp_path / "report"
    assert main(["compare", str(hand_runs / "gru"), str(hand_runs / "delta" / "seed_2"), "--metric",
                 "episodic_return", "--out", str(out)]) == 0
    rows = json.loads((out / "table.json").read_text())["groups"]
    assert [(row["group"], row["runs"], row["runs_with_data"], row["final_mean"]) for row in rows] == [
        ("delta", 1, 0, None), ("gru", 1, 0, None)]
    assert (out / "curves.png").stat().st_size > 0


def test_atari_x_is_env_frames_and_neuroevolution_x_is_evaluations(tmp_path):
    write_run(tmp_path / "a" / "v5", "lstm", [1, 2], env_id="atari:pong", every=100)
    write_run(tmp_path / "a" / "skip2", "delta", [1, 2], env_id="atari:pong", options={"frameskip": 2}, every=100)
    comparison = build_comparison([tmp_path / "a"])
    assert {r.core: r.x.tolist() for r in comparison.runs} == {"lstm": [400, 800], "delta": [200, 400]}
    assert comparison.x_label == "env frames (agent steps x each run's frameskip)"
    assert any("env.options differ in frameskip" in note for note in comparison.notes)
    write_run(tmp_path / "b" / "cleanrl", "lstm", [1], env_id="atari:pong", options={"preset": "cleanrl_lstm"})
    assert build_comparison([tmp_path / "b"]).x_label == "env frames (agent steps x frameskip 4)"

    write_run(tmp_path / "ne" / "lstm", "lstm", [1, 5], learner="neuroevolution", env_id="CartPole-v1",
              metric="best", every=6)
    write_run(tmp_path / "ne" / "delta", "delta", [2, 3], learner="neuroevolution", env_id="CartPole-v1",
              metric="best", every=6)
    comparison = build_comparison([tmp_path / "ne"], window=1)
    assert comparison.metric == "best" and comparison.x_label == "evaluations (candidates evaluated)"
    assert comparison.runs[0].x.tolist() == [6, 12]
    assert comparison.rows[1].best_minus_reference == -2.0  # best 3 against 5


def test_sb3_runs_are_the_sb3_lstm_core_beside_ppo_runs(tmp_path):
    write_run(tmp_path / "lstm", "lstm", [1, 3], every=96)
    write_run(tmp_path / "sb3", None, [2, 2], learner="sb3_recurrent_ppo", policy="MlpLstmPolicy", every=96)
    comparison = build_comparison([tmp_path], window=1)
    assert comparison.learners == "ppo, sb3_recurrent_ppo" and comparison.x_label == "env steps (summed over envs)"
    assert [(row.group, row.cores, row.final_mean.value, row.final_minus_reference) for row in comparison.rows] == [
        ("lstm", "lstm", 3.0, 0.0), ("sb3", "sb3_lstm", 2.0, -1.0)]


def write_recall(path, values, seed=0, core="lstm", hidden=64, total_steps=1000, name=None, lr=1e-3, **kwargs):
    """A recall PPO run as ``write_run`` writes it, with the ppo and core options that make its config."""
    extra = {"ppo": {"total_steps": total_steps, "learning_rate": lr}}
    run = write_run(path, core, values, seed=seed, policy={"core": core, "core_options": {"hidden_size": hidden}},
                    extra=extra, **kwargs)
    if name is not None:
        config = yaml.safe_load((path / "config.yaml").read_text())
        (path / "config.yaml").write_text(yaml.safe_dump({**config, "name": name}))
    return run


def test_runs_of_different_configs_are_never_pooled_by_name(tmp_path, capsys):
    """Two configs of one core, and a short test run under a config's name, are groups of their own; seeds of one
    config under two names are one group."""
    write_recall(tmp_path / "recall_lstm" / "seed_0", [1, 1], seed=0)
    write_recall(tmp_path / "recall_lstm" / "seed_1", [3, 3], seed=1)
    write_recall(tmp_path / "recall_lstm-2" / "seed_2", [5, 5], seed=2)  # a second --seeds call, same config
    write_recall(tmp_path / "recall_lstm_big" / "seed_0", [9, 9], hidden=256)
    write_recall(tmp_path / "recall_lstm" / "seed_9", [100], seed=9, total_steps=96)  # a 2-update test run
    comparison = build_comparison([tmp_path])
    groups = {row.group: (row.runs, row.seeds, row.final_mean.value) for row in comparison.rows}
    assert groups == {"recall_lstm+recall_lstm-2 [ppo.total_steps=1000]": (3, "0-2", 3.0),
                      "recall_lstm [ppo.total_steps=96]": (1, "9", 100.0),
                      "recall_lstm_big": (1, "0", 9.0)}
    assert ("2 configs named recall_lstm, recall_lstm-2 differ in ppo.total_steps: they are separate groups"
            in comparison.notes)
    assert comparison.reference is None  # four groups of lstm runs: none is the reference
    assert any("the reference columns are empty" in note for note in comparison.notes)

    out = tmp_path / "report"
    assert main(["compare", str(tmp_path / "recall_lstm"), str(tmp_path / "recall_lstm_big"), "--out", str(out),
                 "--reference", "recall_lstm_big"]) == 0
    report = json.loads((out / "table.json").read_text())
    assert report["groups"][0]["group"] == "recall_lstm_big" and report["groups"][0]["final_minus_reference"] == 0
    assert {(r["config"], r["seed"], r["group"]) for r in report["runs"]} == {
        ("recall_lstm", 0, "recall_lstm [ppo.total_steps=1000]"),
        ("recall_lstm", 1, "recall_lstm [ppo.total_steps=1000]"),
        ("recall_lstm", 9, "recall_lstm [ppo.total_steps=96]"), ("recall_lstm_big", 0, "recall_lstm_big")}
    assert "| recall_lstm [ppo.total_steps=96] | 1 | 9 |" in (out / "table.md").read_text()


def test_group_by_core_or_a_key_pools_and_says_so(tmp_path):
    write_recall(tmp_path / "a", [1], lr=1e-3, name="small")
    write_recall(tmp_path / "b", [3], lr=3e-4, name="small", seed=1)
    write_recall(tmp_path / "c", [5], lr=3e-4, hidden=256, name="big")
    write_recall(tmp_path / "d", [7], core="delta", lr=1e-3, name="fwp")
    by_core = build_comparison([tmp_path], group_by="core")
    assert [(row.group, row.runs, row.configs, row.final_mean.value) for row in by_core.rows] == [
        ("lstm", 3, 3, 3.0), ("delta", 1, 1, 7.0)]
    assert ("group lstm pools runs of configs that differ in policy.core_options.hidden_size, ppo.learning_rate "
            "(big, small): the runs table names each run's config") in by_core.notes
    by_lr = build_comparison([tmp_path], group_by="ppo.learning_rate")
    assert [(row.group, row.runs) for row in by_lr.rows] == [("ppo.learning_rate=0.0003", 2),
                                                            ("ppo.learning_rate=0.001", 2)]  # by value
    assert by_lr.reference == "ppo.learning_rate=0.0003"  # the only group of lstm runs alone
    write_run(tmp_path / "e", "lstm", [9])  # no ppo section: the default learning rate, as the learner reads it
    assert [(row.group, row.runs) for row in build_comparison([tmp_path], group_by="ppo.learning_rate").rows] == [
        ("ppo.learning_rate=0.00025", 1), ("ppo.learning_rate=0.0003", 2), ("ppo.learning_rate=0.001", 2)]
    write_run(tmp_path / "f", "lstm", [9], extra={"ppo": {"no_such_option": 1}})  # a config it cannot read
    assert [row.group for row in build_comparison([tmp_path], group_by="ppo.learning_rate").rows][-1] == \
        "ppo.learning_rate absent"


def test_an_option_added_since_a_run_was_written_does_not_split_its_group(tmp_path):
    """Seeds written before policy.torso_autocast existed and one written after pool in one group."""
    for seed in range(3):
        write_recall(tmp_path / "recall_lstm" / f"seed_{seed}", [seed], seed=seed)
    config = yaml.safe_load((tmp_path / "recall_lstm" / "seed_2" / "config.yaml").read_text())
    config["policy"]["torso_autocast"] = "none"  # the default, written out as a newer version writes it
    (tmp_path / "recall_lstm" / "seed_2" / "config.yaml").write_text(yaml.safe_dump(config))
    (row,) = build_comparison([tmp_path]).rows
    assert (row.group, row.runs) == ("recall_lstm", 3)


def test_neuroevolution_success_rate_evaluations_to_solve_and_generalization(tmp_path):
    """Three seeds of one config: two solved (at 30 and 50 evaluations, generalization 300 and 250), one not."""
    solved = {"solved": True}
    for seed, values, at, generalization in ((0, [1, 2, 3], 2, 300), (1, [1, 1, 2, 2, 5], 4, 250),
                                             (2, [1, 1, 1, 1], None, None)):
        records = {i: {"solved": False} for i in range(len(values))}
        if at is not None:
            records[at] = {**solved, "test_balanced": 100_000, "test_generalization": generalization}
        write_run(tmp_path / "ne" / f"seed_{seed}", "delta", values, seed=seed, learner="neuroevolution",
                  env_id="double_pole", metric="best", records=records)
    write_run(tmp_path / "ne_lstm" / "seed_0", "lstm", [1, 1], learner="neuroevolution", env_id="double_pole",
              metric="best", records={1: {"solved": True, "test_generalization": 200}})
    out = tmp_path / "report"
    assert main(["compare", str(tmp_path / "ne"), str(tmp_path / "ne_lstm"), "--out", str(out), "--seed-lines"]) == 0
    report = json.loads((out / "table.json").read_text())
    rows = {row["group"]: row for row in report["groups"]}
    ne = rows["ne"]
    assert (ne["solved"], ne["success_rate"]) == (2, pytest.approx(2 / 3))
    assert (ne["evaluations_to_solve"], ne["evaluations_to_solve_median"]) == (40, 40)
    assert (ne["evaluations_to_solve_low"], ne["evaluations_to_solve_high"]) == (30, 50)
    assert (ne["generalization"], ne["generalization_low"], ne["generalization_high"]) == (275, 250, 300)
    lstm = rows["ne_lstm"]
    assert (lstm["solved"], lstm["evaluations_to_solve"], lstm["evaluations_to_solve_low"]) == (1, 20, None)
    assert {r["seed"]: (r["solved_at"], r["generalization"]) for r in report["runs"] if r["group"] == "ne"} == {
        0: (30, 300), 1: (50, 250), 2: (None, None)}
    markdown = (out / "table.md").read_text()
    assert "| ne | 3 | 0-2 | 2/3 (67%) | 40 [30, 50] | 40 | 275 [250, 300] |" in markdown
    assert "| ne_lstm | 1 | 0 | 1/1 (100%) | 20 (1 seed) | 20 | 200 (1 seed) |" in markdown
    assert (out / "curves.png").stat().st_size > 10_000


def test_seed_lines_draw_more(hand_runs, tmp_path):
    comparison = build_comparison([hand_runs], window=1)
    compare_module.plot_curves(comparison, tmp_path / "plain.png")
    compare_module.plot_curves(comparison, tmp_path / "lines.png", seed_lines=True)
    plain, lines = (imageio.imread(tmp_path / name)[..., :3] for name in ("plain.png", "lines.png"))
    assert plain.shape == lines.shape and (plain != lines).any(axis=-1).sum() > 100


@pytest.mark.parametrize("make, argv, message", [
    (lambda p: (write_run(p / "a", "lstm", [1]), write_run(p / "b", "delta", [1], env_id="CartPole-v1")),
     ["a", "b"], "runs from different environments in one comparison: "),
    (lambda p: (write_run(p / "a", "lstm", [1]), write_run(p / "b", "delta", [1], learner="neuroevolution")),
     ["a", "b"], "runs of different learners in one comparison: "),
    (lambda p: (p / "empty").mkdir(), ["empty"], "'empty' is not a run directory (no config.yaml) and holds no run"),
    (lambda p: None, ["missing"], "'missing' is not a run directory or a group of runs: it does not exist"),
    (lambda p: write_run(p / "a", "lstm", [1]), ["a", "--metric", "retrun"], "--metric 'retrun' is not allowed: "
     "no run logged it; the runs logged: episodic_return, update"),
    (lambda p: write_run(p / "a", "lstm", [1]), ["a", "--window", "0"], "--window 0 is not allowed: it must be >= 1"),
    (lambda p: write_run(p / "a", "lstm", [1], tail='{"step": 20, "episodic_ret\n{"step": 30}\n'), ["a"],
     "'a/metrics.jsonl' line 2 is not JSON (Unterminated string starting at: column 14): not a metrics file"),
    (lambda p: write_run(p / "a", "lstm", [1], tail='{"update": 2}\n'), ["a"],
     "'a/metrics.jsonl' line 2 has no integer 'step', not a metrics record"),
    (lambda p: (write_run(p / "a", "lstm", [1], wandb="online"), write_run(p / "b", "delta", [1], wandb="online",
                                                                         project="other")),
     ["a", "b"], "--wandb online: the runs belong to different W&B projects (fwp-rl, other)"),
    (lambda p: (write_run(p / "a", "lstm", [1]), write_run(p / "b", "delta", [1], project="other")),
     ["a", "b", "--wandb", "offline"], "--wandb offline: the runs belong to different W&B projects (fwp-rl, other)"),
    (lambda p: write_run(p / "a", "lstm", [1]), ["a", "--group-by", "ppo.lr"], "--group-by 'ppo.lr' is not allowed: "
     "choose name or core, or a dotted key of the runs' configs (such as env.id)"),
])
def test_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, make, argv, message):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fwp-rl: error: {message}") and err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before


def test_an_existing_report_is_not_overwritten_without_force(hand_runs, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "table.md").write_text("an earlier report")
    assert main(["compare", str(hand_runs / "lstm"), "--out", str(out)]) == 2
    assert "already holds a report (table.md): give another directory, or --force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["table.md"] and (out / "table.md").read_text() == "an earlier report"
    assert main(["compare", str(hand_runs / "lstm"), "--out", str(out), "--force"]) == 0
    assert "lstm" in (out / "table.md").read_text() and (out / "curves.png").is_file()


def test_without_out_each_report_gets_a_fresh_directory(hand_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(hand_runs / "lstm")]) == 0
    assert main(["compare", str(hand_runs / "lstm")]) == 0
    reports = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert reports == ["compare-fwp_rl_Recall-v0", "compare-fwp_rl_Recall-v0-2"]
    assert all(sorted(p.name for p in (tmp_path / "reports" / r).iterdir()) == sorted(compare_module.REPORT_FILES)
               for r in reports)


def test_the_report_goes_to_w_and_b_only_when_online(tmp_path, wandb_runs):
    """The W&B report is the table of table.json, every column of every core, and the picture of curves.png, in one
    finished W&B run beside the runs' group; it is made only when every run was online or --wandb online says so."""
    write_run(tmp_path / "offline" / "lstm", "lstm", [1, 2], wandb="offline")
    write_run(tmp_path / "offline" / "delta", "delta", [3, 4], wandb="online")
    assert main(["compare", str(tmp_path / "offline"), "--out", str(tmp_path / "r1")]) == 0
    assert wandb_runs == []  # not every run is online: nothing goes to W&B

    write_run(tmp_path / "online" / "lstm", "lstm", [1, 2], wandb="online")
    write_run(tmp_path / "online" / "delta", "delta", [3, 6], wandb="online")
    assert main(["compare", str(tmp_path / "online"), "--out", str(tmp_path / "r2"), "--wandb", "disabled"]) == 0
    assert wandb_runs == []
    assert main(["compare", str(tmp_path / "online"), "--out", str(tmp_path / "r3"), "--window", "1"]) == 0
    assert main(["compare", str(tmp_path / "offline"), "--out", str(tmp_path / "r4"), "--wandb", "online"]) == 0
    assert len(wandb_runs) == 2
    for run, out, window in zip(wandb_runs, (tmp_path / "r3", tmp_path / "r4"), (1, 10)):
        report = json.loads((out / "table.json").read_text())
        init = run.init
        assert (init["mode"], init["project"], init["dir"]) == ("online", "fwp-rl", str(out))
        assert (init["name"], init["group"], init["tags"]) == ("compare episodic_return", "fwp_rl/Recall-v0",
                                                               ["compare", "lstm", "delta"])
        assert init["config"] == {"runs": [r["path"] for r in report["runs"]], "metric": "episodic_return",
                                  "window": window, "group_by": "name", "reference": "lstm"}
        assert run.finished
        ((logged, step),) = run.logged
        assert step is None and sorted(logged) == ["comparison", "curves"]
        table = logged["comparison"]
        assert table.columns == list(report["groups"][0])
        assert [dict(zip(table.columns, row)) for row in table.data] == report["groups"]
        assert np.array_equal(np.asarray(logged["curves"].image.convert("RGB")),
                              imageio.imread(out / "curves.png")[..., :3])
    # window 1: the last records, lstm 2 and delta 6 (3x the reference); window 10: the means 1.5 and 3.5
    figures = ("group", "final_mean", "final_minus_reference", "final_over_reference")
    rows = [dict(zip(run.logged[0][0]["comparison"].columns, row)) for run in wandb_runs
            for row in run.logged[0][0]["comparison"].data]
    assert [tuple(row[k] for k in figures) for row in rows] == [("lstm", 2.0, 0.0, 1.0), ("delta", 6.0, 4.0, 3.0),
                                                               ("lstm", 1.5, 0.0, 1.0), ("delta", 3.5, 2.0, 3.5 / 1.5)]


def test_offline_w_and_b_writes_the_report_for_wandb_sync(tmp_path, monkeypatch, capsys):
    """--wandb offline: a real W&B run, written under the report directory without the network."""
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    write_run(tmp_path / "runs" / "lstm", "lstm", [1, 2])
    write_run(tmp_path / "runs" / "delta", "delta", [3, 4])
    out = tmp_path / "report"
    assert main(["compare", str(tmp_path / "runs"), "--out", str(out), "--wandb", "offline"]) == 0
    (written,) = (out / "wandb").glob("offline-run-*")
    assert any(written.glob("*.wandb"))  # the run's data, for wandb sync
    printed = capsys.readouterr().out
    assert f"W&B offline: {written}; upload with: wandb sync {written}" in printed


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Tiny PPO runs on fwp_rl/Recall-v0: lstm and delta, seeds 0 and 1, two updates of 2 envs x 24 steps."""
    root = tmp_path_factory.mktemp("real")
    groups = []
    for core in ("lstm", "delta"):
        path = root / f"recall_{core}.yaml"
        path.write_text(f"learner: ppo\nname: recall_{core}\n"
                        "env: {id: fwp_rl/Recall-v0, num_envs: 2, options: {k: 3, delay: 5}}\n"
                        f"policy: {{torso: mlp, core: {core}, core_options: {{hidden_size: 8}}, dtype: float64}}\n"
                        "ppo: {total_steps: 96, num_steps: 24, sequence_length: 12, num_minibatches: 2, "
                        "update_epochs: 1, device: cpu}\n"
                        f"run: {{root: {str(root / 'runs')!r}, wandb: disabled}}\n")
        runs = train_seeds(load_config(str(path), []), [0, 1])
        groups.append(runs[0].run_dir.parent)
    return root, groups


def test_compare_real_seed_groups(real_runs, capsys):
    root, groups = real_runs
    out = root / "report"
    assert main(["compare", *map(str, groups), "--out", str(out)]) == 0
    report = json.loads((out / "table.json").read_text())
    assert [row["group"] for row in report["groups"]] == ["recall_lstm", "recall_delta"]  # the lstm group first
    assert report["reference"] == "recall_lstm"
    finals = {}
    for group, row in zip(groups, report["groups"]):
        scores = []
        for seed in (0, 1):
            values = [r["episodic_return"] for r in read_metrics(group / f"seed_{seed}" / "metrics.jsonl")
                      if "episodic_return" in r]
            assert 1 <= len(values) <= 2
            scores.append(sum(values) / len(values))  # fewer records than the window of 10: final = best = mean
        assert row["runs"] == row["runs_with_data"] == 2 and row["end_min"] == row["end_max"] == 96
        assert row["final_mean"] == pytest.approx(statistics.mean(scores), abs=1e-12)
        assert row["best_mean"] == pytest.approx(statistics.mean(scores), abs=1e-12)
        # two seeds: the interval of the mean spans their scores
        assert (row["final_mean_low"], row["final_mean_high"]) == pytest.approx((min(scores), max(scores)), abs=1e-12)
        finals[row["cores"]] = statistics.mean(scores)
    assert report["groups"][1]["final_minus_reference"] == pytest.approx(finals["delta"] - finals["lstm"], abs=1e-12)
    assert (out / "curves.png").stat().st_size > 10_000
    assert "recall_delta" in (out / "table.md").read_text() and "seed" in capsys.readouterr().out
