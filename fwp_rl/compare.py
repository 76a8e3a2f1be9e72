"""Learning curves, a table of groups and a table of runs: ``fwp-rl compare``.

    fwp-rl compare runs/recall_lstm runs/recall_delta [--out DIR] [--group-by name|core|KEY] [--metric NAME]

Each argument is a run directory or a directory holding run directories at any depth (the seed group of
``train --seeds``, or all of runs/). Only local files are read: each run's config.yaml and metrics.jsonl
(a last line cut short by an interruption is skipped; a run that logged nothing yet is a run without
data). All runs must come from one env id, and from learners whose steps count the same thing
(``fwp_rl.learners`` names each learner's step unit, default metric and core for runs that name none): PPO
and SB3's RecurrentPPO (agent steps; an SB3 run's core is "sb3_lstm") together, neuroevolution alone.

Groups (``group_by``), each a line of the figure and a row of the table; every run counts as one seed of its group:

- "name" (the default): one group per config. A run's config is its config.yaml as its learner reads it today (an
  option added since the run was written at its default), less its seed, its name and its
  run settings (run.*: where it went, W&B, checkpoints, its seed group); runs whose configs differ in anything else
  (a 2-update test run beside a long one, two configs of one core) are never pooled. A group is labelled with its
  runs' name: the seed group (run.group) of a ``train --seeds`` seed, else the config's name; runs of one config
  under several names are labelled with all of them ("recall_lstm+recall_lstm-2"), and configs of one name are
  told apart by the keys in which they differ ("recall_lstm [ppo.total_steps=96]"), with a note.
- "core": one group per core (``policy.core``), whatever else differs; a note names the groups that pool runs of
  several configs and the keys they differ in.
- a dotted config key (``ppo.learning_rate``): one group per value ("ppo.learning_rate=0.001"; "... absent" for
  runs without the key: a config the learner no longer reads, say), pooled and noted as for "core".

The runs table names every run with its group, seed and config name, so that nothing is pooled unseen.

What is compared:

- the metric: "episodic_return" for PPO and SB3 (the mean raw score of the episodes that ended in an
  update, one record per update), "best" for neuroevolution (the best fitness of a generation), or any
  logged value with ``metric``. Records without it (an update in which no episode ended) are left out.
- x: PPO and SB3 log agent steps summed over envs; for "atari:<game>" ids x is env frames, agent steps times
  the run's frameskip (``fwp_rl.envs.atari.AtariConfig``: 4, or its preset's); for other envs, env
  steps. Neuroevolution: evaluations (candidates evaluated).
- smoothing: a run's values are averaged over a trailing window of ``window`` records (fewer at the
  start). A run's final score is its last smoothed value; its best score the highest smoothed value
  over whole windows (its final score when it has fewer than ``window`` records).
- intervals: 95 % percentile bootstrap intervals over seeds: ``RESAMPLES`` resamples of a group's runs, drawn with
  replacement by a generator of a fixed seed (the same runs give the same interval). A group with one run has no
  interval: its figure is the run's, marked "1 seed".
- curves, one colour per group (the reference in black): each run's smoothed curve is interpolated linearly onto
  the union of the group's x values, never beyond the run's own first and last x. The line is the mean over the
  runs that reach x: solid where every run of the group does, dashed where fewer do (seeds of different lengths);
  the band is the bootstrap interval of that mean (none where one run is left). ``seed_lines`` also draws each
  run's curve, thin. The title names the env, the metric and the band; the legend each group's runs and seeds.
  Neuroevolution adds a panel: the share of each group's runs solved by x evaluations.
- the table, one row per group: final and best scores, each as the mean over its runs with data and the
  interquartile mean (IQM: the mean of the middle half of the runs' scores, a quarter cut at each end, as
  rliable gives RL results; the mean when fewer than 4 runs), each with its interval; and the reference
  columns: the difference of the means to the reference group's and their ratio when the reference mean is > 0
  (ratios of negative scores, as in Pong, say nothing). The reference (``reference``, "lstm" by default) is the
  group of that label, else the one group whose runs are all of that core.
- neuroevolution, per group: the success rate (runs solved of all its runs, unfinished ones counted as not
  solved), the evaluations to solve (mean with its interval, and median) and the generalization score of the
  solving controller (of 625, double pole only; mean with its interval), both over the solved runs. A run is
  solved at the first record that says ``solved`` (the step: its evaluations), where its ``test_generalization``
  is the solving champion's.

The report goes to ``out``: curves.png, table.csv, table.json (the groups, and every run's figures) and table.md
(both tables). An ``out`` that holds any of these already is refused unless ``force``; without ``out`` a fresh
reports/compare-<env>/ (-2, -3, ...) is made. Everything is checked before anything is written.
W&B (``wandb_mode``): "online" logs the groups' table and the figure to the runs' project, in the task's group;
"offline" writes that W&B run under ``out``/wandb/ without the network and prints the ``wandb sync`` command that
uploads it; "disabled" touches nothing. By default: online when every run logged online, else disabled.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fwp_rl.config import ConfigError, from_dict, load_yaml, to_dict
from fwp_rl.files import atomic_write_text, replacing
from fwp_rl.learners import _flat, learner
from fwp_rl.runs import find_run_dirs, read_metrics, start_wandb, unique_run_dir

REPORT_FILES = ("curves.png", "table.csv", "table.json", "table.md")
REPORTS_ROOT = "reports"
ATARI_PREFIX = "atari:"
GROUP_BY = ("name", "core")  # or a dotted config key
RESAMPLES = 2000  # bootstrap resamples per interval
CONFIDENCE = 0.95
KEYS_SHOWN = 3  # of the keys in which configs differ, in a label or a note


@dataclass
class Run:
    """One run directory as compared: its config.yaml (plain data), the metric's values y [n] at x [n] (the
    comparison's x unit, increasing), and for neuroevolution the x at which it was solved (None: not solved) and
    the solving champion's generalization score. ``group``: the label of its group."""

    path: Path
    config: dict
    x: np.ndarray
    y: np.ndarray
    solved_at: float | None = None
    generalization: float | None = None
    group: str = ""

    @property
    def core(self) -> str:
        return learner(self.config["learner"]).core_of(self.config)

    @property
    def name(self) -> str:
        """The name of its config: its seed group's (``train --seeds``), else its own."""
        return (self.config.get("run") or {}).get("group") or self.config["name"]

    @property
    def settings_free(self) -> dict:
        """Its config as flat {dotted key: value}, less the seed, the name and the run settings (run.*)."""
        return {k: v for k, v in _flat(self.config).items() if k not in ("seed", "name") and not k.startswith("run.")}


@dataclass
class Estimate:
    """A figure over a group's runs and its bootstrap interval (None, None with fewer than 2 runs)."""

    value: float | None = None
    low: float | None = None
    high: float | None = None


@dataclass
class GroupRow:
    """One group's line of the table; None where it has no data (or the reference has none). Neuroevolution only:
    solved and what follows."""

    group: str
    cores: str
    configs: int
    runs: int
    runs_with_data: int
    seeds: str
    final_mean: Estimate
    final_iqm: Estimate
    best_mean: Estimate
    best_iqm: Estimate
    end_min: float | None = None  # the last x of its runs with data: the smallest and the largest
    end_max: float | None = None
    final_minus_reference: float | None = None
    final_over_reference: float | None = None
    best_minus_reference: float | None = None
    best_over_reference: float | None = None
    solved: int | None = None
    success_rate: float | None = None
    evaluations_to_solve: Estimate = dataclasses.field(default_factory=Estimate)
    evaluations_to_solve_median: float | None = None
    generalization: Estimate = dataclasses.field(default_factory=Estimate)


@dataclass
class Comparison:
    """Runs on one env and what ``compare`` makes of them; ``learners``: theirs, comma-separated; ``reference``:
    the reference group's label, None when there is none."""

    env_id: str
    learners: str
    metric: str
    window: int
    x_label: str
    group_by: str
    reference: str | None
    runs: list[Run]
    rows: list[GroupRow]
    notes: list[str]
    neuroevolution: bool  # its runs are: success columns and panel


# ---------------------------------------------------------------------------------------------- figures
def trailing_mean(y: np.ndarray, window: int) -> np.ndarray:
    """y [n] -> [n]: element i is the mean of y[max(0, i - window + 1)] .. y[i]."""
    sums = np.concatenate([[0.0], np.cumsum(y, dtype=np.float64)])
    end = np.arange(1, len(y) + 1)
    start = np.maximum(end - window, 0)
    return (sums[end] - sums[start]) / (end - start)


def run_scores(y: np.ndarray, window: int) -> tuple[float, float] | None:
    """(final, best) of one run's values y [n] (module docstring), or None for a run without data."""
    if len(y) == 0:
        return None
    smooth = trailing_mean(y, window)
    return float(smooth[-1]), float(smooth[min(window, len(y)) - 1:].max())


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """The interquartile mean along ``axis``: the mean of what is left when int(n / 4) of the n values are cut at
    each end (scipy.stats.trim_mean(values, 0.25, axis), as rliable computes it)."""
    values = np.sort(values, axis=axis)
    n = values.shape[axis]
    cut = n // 4
    return np.take(values, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def bootstrap_interval(values: np.ndarray, statistic: Callable = np.mean, chunk: int = 256) -> tuple[np.ndarray, ...]:
    """values [n, m] (n runs, m columns, n >= 2) -> (low [m], high [m]): the percentile bootstrap interval
    (CONFIDENCE) of ``statistic(values, axis=0)`` per column, from RESAMPLES resamples of the n runs drawn with
    replacement (one draw for every column) by a generator of seed 0."""
    n, m = values.shape
    draws = np.random.default_rng(0).integers(0, n, (RESAMPLES, n))
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.empty(m), np.empty(m)
    for start in range(0, m, chunk):  # resamples [RESAMPLES, n, chunk] at a time
        statistics = statistic(values[draws, start:start + chunk], axis=1)
        low[start:start + chunk], high[start:start + chunk] = np.percentile(statistics, [tail, 100 - tail], axis=0)
    return low, high


def estimate(values: list[float], statistic: Callable = np.mean) -> Estimate:
    """``statistic`` of a group's per-run figures and its bootstrap interval (none for fewer than 2 runs)."""
    if not values:
        return Estimate()
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return Estimate(float(statistic(values)))
    low, high = bootstrap_interval(values[:, None], statistic)
    return Estimate(float(statistic(values)), float(low[0]), float(high[0]))


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Curves (x [n_i] increasing, y [n_i]) -> (x [m], mean [m], low [m], high [m], count [m]) on the union of their
    x: the mean over the ``count`` curves that reach each x (no extrapolation) and its bootstrap interval (nan where
    one curve is left)."""
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    values = np.full((len(curves), len(grid)), np.nan)
    for i, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        values[i, inside] = np.interp(grid[inside], x, y)
    reach = ~np.isnan(values)
    low, high = np.full(len(grid), np.nan), np.full(len(grid), np.nan)
    patterns, which = np.unique(reach, axis=1, return_inverse=True)
    for p, reaching in enumerate(patterns.T):  # the columns that the same curves reach, together
        if reaching.sum() > 1:
            columns = which.ravel() == p
            low[columns], high[columns] = bootstrap_interval(values[reaching][:, columns])
    # Every grid point is some curve's own x, so no column is all NaN.
    return grid, np.nanmean(values, 0), low, high, reach.sum(0)


def seed_list(seeds: list) -> str:
    """Seeds as text, runs of consecutive ones as ranges: [0, 1, 2, 5] -> "0-2, 5"; a seed twice is listed twice."""
    seeds = sorted(seeds, key=lambda s: (not isinstance(s, int), str(s) if not isinstance(s, int) else s))
    parts: list[list] = []
    for s in seeds:
        if parts and isinstance(s, int) and isinstance(parts[-1][-1], int) and s == parts[-1][-1] + 1:
            parts[-1].append(s)
        else:
            parts.append([s])
    return ", ".join(str(p[0]) if len(p) == 1 else f"{p[0]}-{p[-1]}" for p in parts)


def _group_row(label: str, runs: list[Run], window: int, neuroevolution: bool) -> GroupRow:
    scores = [s for s in (run_scores(r.y, window) for r in runs) if s is not None]
    final, best = ([s[i] for s in scores] for i in (0, 1))
    ends = [float(r.x[-1]) for r in runs if len(r.x)]
    row = GroupRow(label, ", ".join(sorted({r.core for r in runs})), len({json.dumps(r.settings_free, sort_keys=True)
                                                                             for r in runs}),
                   len(runs), len(scores), seed_list([r.config.get("seed") for r in runs]),
                   estimate(final), estimate(final, iqm), estimate(best), estimate(best, iqm),
                   min(ends, default=None), max(ends, default=None))
    if neuroevolution:
        solved = [r for r in runs if r.solved_at is not None]
        evaluations = [r.solved_at for r in solved]
        row.solved, row.success_rate = len(solved), len(solved) / len(runs)
        row.evaluations_to_solve = estimate(evaluations)
        row.evaluations_to_solve_median = float(np.median(evaluations)) if solved else None
        row.generalization = estimate([r.generalization for r in solved if r.generalization is not None])
    return row


def _reference_columns(rows: list[GroupRow], reference: str | None) -> None:
    ref = next((row for row in rows if row.group == reference), None)
    for row in rows:
        for score in ("final", "best"):
            mean = getattr(row, f"{score}_mean").value
            ref_mean = None if ref is None else getattr(ref, f"{score}_mean").value
            if mean is None or ref_mean is None:
                continue
            setattr(row, f"{score}_minus_reference", mean - ref_mean)
            if ref_mean > 0:
                setattr(row, f"{score}_over_reference", mean / ref_mean)


# ---------------------------------------------------------------------------------------------- groups
def differing_keys(configs: list[dict]) -> list[str]:
    """The flat keys in which configs (flat {dotted key: value}) differ, a key one lacks included; sorted."""
    keys = sorted({k for c in configs for k in c})
    missing = object()
    return [k for k in keys if len({json.dumps(c.get(k, missing), default=str) for c in configs}) > 1]


def _settings_of(keys: list[str], config: dict) -> str:
    shown = [f"{k}={config[k]}" if k in config else f"{k} absent" for k in keys[:KEYS_SHOWN]]
    return ", ".join(shown + (["..."] if len(keys) > KEYS_SHOWN else []))


def _keys_text(keys: list[str]) -> str:
    return ", ".join(keys[:KEYS_SHOWN]) + (f" and {len(keys) - KEYS_SHOWN} more" if len(keys) > KEYS_SHOWN else "")


def group_runs(runs: list[Run], group_by: str) -> tuple[dict[str, list[Run]], list[str]]:
    """Label every run's group (module docstring): -> ({label: its runs}, in order of label (a key's values in
    order of value), the notes on configs told apart or pooled). A ConfigError for a ``group_by`` that is neither
    "name", "core" nor a key of some run's config."""
    configs = {id(r): r.settings_free for r in runs}
    notes = []
    if group_by == "name":
        by_config: dict[str, list[Run]] = {}
        for r in runs:
            by_config.setdefault(json.dumps(configs[id(r)], sort_keys=True, default=str), []).append(r)
        clusters: list[tuple[set[str], list[list[Run]]]] = []  # configs that share a name, with their names
        for of_config in by_config.values():
            names = {r.name for r in of_config}
            sharing = [c for c in clusters if c[0] & names]
            clusters = [c for c in clusters if not c[0] & names]
            clusters.append((names.union(*(c[0] for c in sharing)), [of_config, *(o for c in sharing for o in c[1])]))
        for names, of_names in clusters:
            labels = ["+".join(sorted({r.name for r in of_config})) for of_config in of_names]
            if len(of_names) > 1:
                keys = differing_keys([configs[id(of_config[0])] for of_config in of_names])
                notes.append(f"{len(of_names)} configs named {', '.join(sorted(names))} differ in {_keys_text(keys)}: "
                             "they are separate groups")
                labels = [f"{label} [{_settings_of(keys, configs[id(of_config[0])])}]"
                          for label, of_config in zip(labels, of_names)]
                if len(set(labels)) < len(labels):  # they differ only in keys beyond those shown
                    labels = [f"{label} #{i}" for i, label in enumerate(labels, 1)]
            for label, of_config in zip(labels, of_names):
                for r in of_config:
                    r.group = label
        order = sorted({r.group for r in runs})
    else:
        missing = object()
        if group_by == "core":
            values = {id(r): r.core for r in runs}
        elif any(group_by in _flat(r.config) for r in runs):
            values = {id(r): _flat(r.config).get(group_by, missing) for r in runs}
        else:
            example = next((k for k in configs[id(runs[0])] if "." in k), "ppo.learning_rate")
            raise ConfigError(f"--group-by {group_by!r} is not allowed: choose {' or '.join(GROUP_BY)}, or a dotted "
                              f"key of the runs' configs (such as {example})")
        for r in runs:
            value = values[id(r)]
            r.group = value if group_by == "core" else f"{group_by} absent" if value is missing else \
                f"{group_by}={value}"
        value_of = {r.group: values[id(r)] for r in runs}

        # numbers by value, then the rest by label
        order = sorted(value_of, key=lambda g: (0, value_of[g], g) if _is_number(value_of[g]) else (1, 0, g))
    groups = {label: [r for r in runs if r.group == label] for label in order}
    if group_by != "name":
        for label, of_group in groups.items():
            keys = differing_keys([configs[id(r)] for r in of_group])
            if keys:
                names = sorted({r.name for r in of_group})
                notes.append(f"group {label} pools runs of configs that differ in {_keys_text(keys)} "
                             f"({', '.join(names)}): the runs table names each run's config")
    return groups, notes


def _reference_group(groups: dict[str, list[Run]], reference: str) -> str | None:
    """The group of label ``reference``, else the one group whose runs are all of core ``reference``."""
    if reference in groups:
        return reference
    of_core = [label for label, runs in groups.items() if all(r.core == reference for r in runs)]
    return of_core[0] if len(of_core) == 1 else None


# ---------------------------------------------------------------------------------------------- reading runs
def _read_config(path: Path) -> dict:
    config = load_yaml(path / "config.yaml")
    entry = learner(config.get("learner"), where=f"{str(path / 'config.yaml')!r}: ")
    required = [("env", "id"), ("run", "wandb")] + ([] if entry.core else [("policy", "core")])
    for section, key in required:
        if not isinstance(config.get(section), dict) or key not in config[section]:
            raise ConfigError(f"{str(path / 'config.yaml')!r} has no {section}.{key}: not a run's resolved config")
    try:  # as the learner reads it today: an option added since the run was written has its default, so runs
        # written before and after it pool in one group (their configs do not differ)
        return to_dict(from_dict(entry.config, config))
    except (ConfigError, TypeError, ValueError):  # an option removed since, say: the config as written
        return config


def _frames_per_step(path: Path, config: dict) -> int:
    """Env frames per logged agent step: the Atari frameskip for "atari:<game>" ids, else 1."""
    if not config["env"]["id"].startswith(ATARI_PREFIX):
        return 1
    from fwp_rl.envs.vector import VectorEnvConfig

    try:
        return VectorEnvConfig(**config["env"]).atari_config().frameskip
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{str(path / 'config.yaml')!r}: {e}") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_run(path: Path, config: dict, metric: str, scale: int) -> tuple[Run, set[str]]:
    """The run at ``path`` with the values of ``metric`` in its metrics.jsonl, by step (x: step times ``scale``),
    and where it was solved (module docstring); and every key it logged."""
    file = path / "metrics.jsonl"
    records = read_metrics(file) if file.is_file() else []
    by_step: dict[int, float] = {}
    for record in records:
        if _is_number(record.get(metric)):
            by_step[record["step"]] = float(record[metric])  # a later record of a step supersedes an earlier one
    steps = sorted(by_step)
    run = Run(path, config, np.array(steps, dtype=np.float64) * scale, np.array([by_step[s] for s in steps]))
    solving = next((record for record in records if record.get("solved") is True), None)
    if solving is not None:
        run.solved_at = float(solving["step"] * scale)
        if _is_number(solving.get("test_generalization")):
            run.generalization = float(solving["test_generalization"])
    return run, {k for record in records for k in record} - {"step"}


def _x_label(unit: str, env_id: str, frameskips: set[int]) -> str:
    if unit == "evaluations":
        return "evaluations (candidates evaluated)"
    if not env_id.startswith(ATARI_PREFIX):
        return "env steps (summed over envs)"
    skip = f"frameskip {frameskips.pop()}" if len(frameskips) == 1 else "each run's frameskip"
    return f"env frames (agent steps x {skip})"


def build_comparison(paths: list[str | Path], metric: str | None = None, window: int = 10,
                     reference: str = "lstm", group_by: str = "name") -> Comparison:
    """Read the runs at ``paths`` (run directories or directories holding some), group and compare them; a clear
    ConfigError for a path without runs, runs of different envs or of learners with different x axes, or a
    ``group_by`` that is not allowed."""
    if window < 1:
        raise ConfigError(f"--window {window} is not allowed: it must be >= 1")
    run_dirs: list[Path] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise ConfigError(f"{str(path)!r} is not a run directory or a group of runs: "
                              f"{'it is a file' if path.exists() else 'it does not exist'}")
        found = find_run_dirs(path)
        if not found:
            raise ConfigError(f"{str(path)!r} is not a run directory (no config.yaml) and holds no run directories")
        for d in found:
            if d.resolve() not in seen:
                seen.add(d.resolve())
                run_dirs.append(d)
    configs = [_read_config(d) for d in run_dirs]
    first, first_config = run_dirs[0], configs[0]
    for d, config in zip(run_dirs, configs):
        units = learner(first_config["learner"]).step_unit, learner(config["learner"]).step_unit
        if units[0] != units[1]:
            raise ConfigError(f"runs of different learners in one comparison: {str(first)!r} is "
                              f"{first_config['learner']!r} (x: {units[0]}), {str(d)!r} is {config['learner']!r} "
                              f"(x: {units[1]}); compare them separately")
        if config["env"]["id"] != first_config["env"]["id"]:
            raise ConfigError(f"runs from different environments in one comparison: {str(first)!r} has "
                              f"env.id={first_config['env']['id']!r}, {str(d)!r} has env.id={config['env']['id']!r}; "
                              "compare each environment separately")
    entry, env_id = learner(first_config["learner"]), first_config["env"]["id"]
    unit = entry.step_unit
    chosen = metric or entry.default_metric
    notes = []
    options = [c["env"].get("options") or {} for c in configs]
    differing = sorted({k for o in options for k in o if any(p.get(k) != o.get(k) for p in options)})
    if differing:
        notes.append(f"the runs' env.options differ in {', '.join(differing)}")
    runs, logged, frameskips = [], set(), set()
    for d, config in zip(run_dirs, configs):
        scale = _frames_per_step(d, config) if unit == "agent steps" else 1
        frameskips.add(scale)
        run, keys = _read_run(d, config, chosen, scale)
        runs.append(run)
        logged |= keys
        if not len(run.y):
            notes.append(f"{d}: no {chosen} logged yet")
    if chosen != entry.default_metric and chosen not in logged:
        raise ConfigError(f"--metric {metric!r} is not allowed: no run logged it; the runs logged: "
                          f"{', '.join(sorted(logged)) or 'nothing yet'}")
    groups, group_notes = group_runs(runs, group_by)
    notes += group_notes
    ref = _reference_group(groups, reference)
    if ref is None:
        notes.append(f"no group is {reference} or the only group of {reference} runs: the reference columns are empty")
    labels = sorted(groups, key=lambda label: label != ref)  # the reference first, the rest as they were
    neuroevolution = unit == "evaluations"
    rows = [_group_row(label, groups[label], window, neuroevolution) for label in labels]
    _reference_columns(rows, ref)
    runs = [r for label in labels for r in sorted(groups[label], key=lambda r: (r.config.get("seed", 0), str(r.path)))]
    learners = ", ".join(sorted({c["learner"] for c in configs}))
    return Comparison(env_id, learners, chosen, window, _x_label(unit, env_id, frameskips), group_by, ref, runs,
                      rows, notes, neuroevolution)


# ---------------------------------------------------------------------------------------------- the report
def _runs_and_seeds(runs: list[Run]) -> str:
    seeds = [r.config.get("seed") for r in runs]
    return f"{len(runs)} run{'s' if len(runs) > 1 else ''}, seed{'s' if len(seeds) > 1 else ''} {seed_list(seeds)}"


def plot_curves(comparison: Comparison, path: Path, seed_lines: bool = False) -> None:
    """The learning curves (module docstring) as a PNG, drawn with matplotlib's Agg backend; for neuroevolution
    beside the share of runs solved."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 2 if comparison.neuroevolution else 1
    figure = Figure(figsize=(8 + 6 * (panels - 1), 5), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, panels, 1)
    palette = itertools.cycle(matplotlib.colormaps["tab10"].colors)
    colors = {row.group: "black" if row.group == comparison.reference else next(palette) for row in comparison.rows}
    for row in comparison.rows:
        with_data = [r for r in comparison.runs if r.group == row.group and len(r.y)]
        if not with_data:
            continue
        color, curves = colors[row.group], [(r.x, trailing_mean(r.y, comparison.window)) for r in with_data]
        if seed_lines:
            for x, y in curves:
                ax.plot(x, y, color=color, linewidth=0.6, alpha=0.5)
        x, mean, low, high, count = mean_curve(curves)
        marker = "o" if len(x) == 1 else None
        ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
        ax.plot(x, mean, color=color, linestyle="--", linewidth=1, marker=marker)
        ax.plot(x, np.where(count == len(curves), mean, np.nan), color=color, linewidth=2, marker=marker,
                label=f"{row.group} ({_runs_and_seeds(with_data)})")
    if any(row.runs_with_data for row in comparison.rows):
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no {comparison.metric} logged yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{comparison.env_id} ({comparison.learners}): {comparison.metric}, mean of "
                 f"{comparison.window}-record windows\nline: mean over seeds; band: {CONFIDENCE:.0%} bootstrap "
                 "interval of the mean"
                 + ("; thin: each seed" if seed_lines else ""), fontsize=9)
    ax.set_xlabel(comparison.x_label)
    ax.set_ylabel(comparison.metric)
    ax.grid(alpha=0.3)
    if comparison.neuroevolution:
        _plot_solved(comparison, figure.add_subplot(1, 2, 2), colors)
    figure.tight_layout()
    with replacing(path) as tmp:
        figure.savefig(tmp)


def _plot_solved(comparison: Comparison, ax, colors: dict) -> None:
    """The share of each group's runs solved by x evaluations, a step per solved run."""
    end = max((float(r.x[-1]) for r in comparison.runs if len(r.x)), default=1.0)
    for row in comparison.rows:
        of_group = [r for r in comparison.runs if r.group == row.group]
        solved = sorted(r.solved_at for r in of_group if r.solved_at is not None)
        end = max([end, *solved])
        ax.step([0.0, *solved, end], np.arange(len(solved) + 2).clip(max=len(solved)) / len(of_group), where="post",
                color=colors[row.group], linewidth=2,
                label=f"{row.group}: {row.solved} solved of {_runs_and_seeds(of_group)}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{comparison.env_id}: share of runs solved", fontsize=9)
    ax.set_xlabel(comparison.x_label)
    ax.set_ylabel("runs solved / runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _estimate(e: Estimate) -> str:
    if e.value is None:
        return "-"
    return f"{_fmt(e.value)} (1 seed)" if e.low is None else f"{_fmt(e.value)} [{_fmt(e.low)}, {_fmt(e.high)}]"


def _versus(difference: float | None, ratio: float | None) -> str:
    return _fmt(difference) if ratio is None else f"{_fmt(difference)} ({ratio:.3g}x)"


def table_cells(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """The groups' table as text: (headers, one row of cells per group), for the console and Markdown."""
    ref = comparison.reference or "reference"
    headers = ["group", "runs", "seeds"]
    if comparison.neuroevolution:
        headers += ["solved", "evaluations to solve", "median", "generalization /625"]
    headers += ["final", "final IQM", "best", "best IQM", f"final vs {ref}", f"best vs {ref}", "x reached"]
    rows = []
    for row in comparison.rows:
        runs = str(row.runs) if row.runs_with_data == row.runs else f"{row.runs_with_data} of {row.runs}"
        reached = _fmt(row.end_min) if row.end_min == row.end_max else f"{_fmt(row.end_min)} to {_fmt(row.end_max)}"
        cells = [row.group, runs, row.seeds]
        if comparison.neuroevolution:
            cells += [f"{row.solved}/{row.runs} ({row.success_rate:.0%})", _estimate(row.evaluations_to_solve),
                      _fmt(row.evaluations_to_solve_median), _estimate(row.generalization)]
        cells += [*map(_estimate, (row.final_mean, row.final_iqm, row.best_mean, row.best_iqm)),
                  _versus(row.final_minus_reference, row.final_over_reference),
                  _versus(row.best_minus_reference, row.best_over_reference), reached]
        rows.append(cells)
    return headers, rows


def run_figures(comparison: Comparison, run: Run) -> dict:
    """One run's line of the runs' table, as plain data."""
    scores = run_scores(run.y, comparison.window)
    figures = {"path": str(run.path), "group": run.group, "config": run.name, "core": run.core,
               "seed": run.config.get("seed"), "points": len(run.y), "end": float(run.x[-1]) if len(run.x) else None,
               "final": scores and scores[0], "best": scores and scores[1]}
    if comparison.neuroevolution:
        figures |= {"solved_at": run.solved_at, "generalization": run.generalization}
    return figures


def runs_cells(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """The runs' table as text: (headers, one row of cells per run)."""
    headers = ["group", "run", "seed", "config", "records", "x reached", "final", "best"]
    headers += ["solved at", "generalization /625"] if comparison.neuroevolution else []
    rows = []
    for run in comparison.runs:
        f = run_figures(comparison, run)
        cells = [f["group"], f["path"], str(f["seed"]), f["config"], str(f["points"]), _fmt(f["end"]),
                 _fmt(f["final"]), _fmt(f["best"])]
        rows.append(cells + ([_fmt(f["solved_at"]), _fmt(f["generalization"])] if comparison.neuroevolution else []))
    return headers, rows


def _caption(comparison: Comparison) -> str:
    ref = comparison.reference
    caption = (f"{comparison.learners} runs grouped by {comparison.group_by}; scores: {comparison.metric}, mean over "
               f"windows of {comparison.window} records (final: the last window, best: the best window); mean and "
               f"IQM over a group's runs, each with its {CONFIDENCE:.0%} bootstrap interval [low, high] over seeds; "
               + (f"vs {ref}: difference of the means (and their ratio)" if ref else "no reference group")
               + f"; x: {comparison.x_label}")
    if comparison.neuroevolution:
        caption += ("; solved: runs solved of all runs; evaluations to solve (mean [interval], median) and "
                    "generalization: over the solved runs")
    return caption


def row_fields(row: GroupRow) -> dict:
    """A group's row as flat {column: value}: an Estimate ``f`` as f, f_low and f_high."""
    fields = {}
    for field in dataclasses.fields(GroupRow):
        value = getattr(row, field.name)
        if isinstance(value, Estimate):
            fields |= {field.name: value.value, f"{field.name}_low": value.low, f"{field.name}_high": value.high}
        else:
            fields[field.name] = value
    return fields


def _markdown(headers: list[str], rows: list[list[str]]) -> list[str]:
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    return (["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
            + ["| " + " | ".join(map(cell, row)) + " |" for row in rows])


def write_report(comparison: Comparison, out: Path, seed_lines: bool = False) -> None:
    """curves.png, table.csv, table.json and table.md into the directory ``out``."""
    plot_curves(comparison, out / "curves.png", seed_lines)
    rows = [row_fields(row) for row in comparison.rows]
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(rows[0])
    for row in rows:
        writer.writerow(["" if value is None else value for value in row.values()])
    atomic_write_text(out / "table.csv", table.getvalue())
    report = {"env_id": comparison.env_id, "learners": comparison.learners, "metric": comparison.metric,
              "window": comparison.window, "x": comparison.x_label, "group_by": comparison.group_by,
              "reference": comparison.reference, "confidence": CONFIDENCE, "resamples": RESAMPLES,
              "groups": rows, "runs": [run_figures(comparison, r) for r in comparison.runs],
              "notes": comparison.notes}
    atomic_write_text(out / "table.json", json.dumps(report, indent=2) + "\n")
    lines = [f"# {comparison.env_id}: {comparison.metric}", "", _caption(comparison), "",
             *_markdown(*table_cells(comparison)), "", "## Runs", "", *_markdown(*runs_cells(comparison))]
    lines += ["", *(f"Note: {note}." for note in comparison.notes), "", "![learning curves](curves.png)", ""]
    atomic_write_text(out / "table.md", "\n".join(lines))


def _report_dir(out: str | Path | None, force: bool, env_id: str) -> Path:
    if out is None:
        return unique_run_dir(REPORTS_ROOT, "compare-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", env_id))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file, not a directory")
    existing = [name for name in REPORT_FILES if (out / name).exists()]
    if existing and not force:
        raise ConfigError(f"--out {str(out)!r} already holds a report ({', '.join(existing)}): give another "
                          "directory, or --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _log_to_wandb(comparison: Comparison, out: Path, project: str, mode: str, console: Console) -> None:
    """The groups' table and the figure as one W&B run in ``mode`` (online or offline), beside the runs' group."""
    import wandb

    rows = [row_fields(row) for row in comparison.rows]
    config = {"runs": [str(r.path) for r in comparison.runs], "metric": comparison.metric,
              "window": comparison.window, "group_by": comparison.group_by, "reference": comparison.reference}
    first = comparison.runs[0].config
    group = learner(first["learner"]).task(first)  # the runs' task: the comparison is filed under it
    tags = ["compare", *(row.group[:64] for row in comparison.rows)]  # W&B takes tags of up to 64 characters
    run = start_wandb(mode, project, out, f"compare {comparison.metric}", group, tags, config, job_type="compare")
    run.log({"comparison": wandb.Table(columns=list(rows[0]), data=[list(row.values()) for row in rows]),
             "curves": wandb.Image(str(out / "curves.png"))})
    if mode == "offline":
        written = run.settings.sync_dir
        console.print(Text(f"W&B offline: {written}; upload with: wandb sync {written}"), soft_wrap=True)
    run.finish()


def compare(paths: list[str | Path], out: str | Path | None = None, metric: str | None = None, window: int = 10,
            reference: str = "lstm", force: bool = False, wandb_mode: str | None = None, group_by: str = "name",
            seed_lines: bool = False, console: Console | None = None) -> Path:
    """Compare the runs at ``paths`` (module docstring): print the tables, write the report, log it to W&B unless
    disabled; returns the report directory. ``wandb_mode``: "online", "offline", "disabled", or None for online
    exactly when every run was online."""
    console = console or Console()
    comparison = build_comparison(paths, metric, window, reference, group_by)
    if wandb_mode is None:
        wandb_mode = "online" if all(r.config["run"]["wandb"] == "online" for r in comparison.runs) else "disabled"
    projects = sorted({r.config["run"].get("project", "fwp-rl") for r in comparison.runs})
    if wandb_mode != "disabled" and len(projects) > 1:
        raise ConfigError(f"--wandb {wandb_mode}: the runs belong to different W&B projects ({', '.join(projects)}); "
                          "compare the runs of one project")
    out_dir = _report_dir(out, force, comparison.env_id)
    write_report(comparison, out_dir, seed_lines)
    for title, (headers, cells), caption in ((f"{comparison.env_id}: {comparison.metric}", table_cells(comparison),
                                              _caption(comparison)), ("runs", runs_cells(comparison), None)):
        table = Table(*headers, title=Text(title), caption=caption and Text(caption))  # Text: no markup in labels
        for row in cells:
            table.add_row(*map(Text, row))
        console.print(table)
    for note in comparison.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    if wandb_mode != "disabled":
        _log_to_wandb(comparison, out_dir, projects[0], wandb_mode, console)
    console.print(f"report: {out_dir} ({', '.join(REPORT_FILES)})")
    return out_dir
