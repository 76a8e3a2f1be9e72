"""Learning curves and a table of results across cores and seeds: ``fwp-rl compare``.

    fwp-rl compare runs/recall_lstm runs/recall_delta [--out DIR] [--metric NAME] [--window K]

Each argument is a run directory or a directory holding run directories at any depth (the seed group of
``train --seeds``, or all of runs/). Only local files are read: each run's config.yaml and metrics.jsonl
(a last line cut short by an interruption is skipped; a run that logged nothing yet is a run without
data). All runs must come from one env id, and from learners whose steps count the same thing
(``fwp_rl.learners`` names each learner's step unit, default metric and core for runs that name none): PPO
and SB3's RecurrentPPO (agent steps; an SB3 run's core is "sb3_lstm") together, neuroevolution alone.

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
- curves, one color per core (``policy.core``; every run of a core counts as one of its seeds): each
  run's smoothed curve is interpolated linearly onto the union of the core's x values, never beyond
  the run's own first and last x. The line is the mean over the runs that reach x: solid where every
  run of the core does, dashed where fewer do (seeds of different lengths); the band spans their min
  to max.
- the table, one row per core: final and best scores, mean and sample std over its runs with data,
  and the reference columns: the difference of the means to the reference core's (``lstm`` unless
  ``reference`` says otherwise) and their ratio when the reference mean is > 0 (ratios of negative
  scores, as in Pong, say nothing).

The report goes to ``out``: curves.png, table.csv, table.json (with every run's figures) and table.md.
An ``out`` that holds any of these already is refused unless ``force``; without ``out`` a fresh
reports/compare-<env>/ (-2, -3, ...) is made. Everything is checked before anything is written.
W&B: when ``wandb_mode`` is "online" (by default: when every run's run.wandb is "online") the table and the
figure are also logged to the runs' project, in the task's group; otherwise nothing touches the network.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fwp_rl.config import ConfigError, load_yaml
from fwp_rl.files import atomic_write_text, replacing
from fwp_rl.learners import learner
from fwp_rl.runs import find_run_dirs, read_metrics, start_wandb, unique_run_dir

REPORT_FILES = ("curves.png", "table.csv", "table.json", "table.md")
REPORTS_ROOT = "reports"
ATARI_PREFIX = "atari:"


@dataclass
class Run:
    """One run directory as compared: its config.yaml (plain data) and the metric's values y [n] at
    x [n] (the comparison's x unit, increasing)."""

    path: Path
    config: dict
    x: np.ndarray
    y: np.ndarray

    @property
    def core(self) -> str:
        return learner(self.config["learner"]).core_of(self.config)


@dataclass
class CoreRow:
    """One core's line of the table; None where it has no data (or the reference has none)."""

    core: str
    runs: int
    runs_with_data: int
    final_mean: float | None = None
    final_std: float | None = None  # sample std over runs; None for a single run
    best_mean: float | None = None
    best_std: float | None = None
    end_min: float | None = None  # the last x of its runs with data: the smallest and the largest
    end_max: float | None = None
    final_minus_reference: float | None = None
    final_over_reference: float | None = None
    best_minus_reference: float | None = None
    best_over_reference: float | None = None


@dataclass
class Comparison:
    """Runs on one env and what ``compare`` makes of them; ``learners``: theirs, comma-separated."""

    env_id: str
    learners: str
    metric: str
    window: int
    x_label: str
    reference: str
    runs: list[Run]
    rows: list[CoreRow]
    notes: list[str]


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


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Curves (x [n_i] increasing, y [n_i]) -> (x [m], mean [m], low [m], high [m], count [m]) on the union
    of their x: mean, min and max over the ``count`` curves that reach each x (no extrapolation)."""
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    values = np.full((len(curves), len(grid)), np.nan)
    for i, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        values[i, inside] = np.interp(grid[inside], x, y)
    # Every grid point is some curve's own x, so no column is all NaN.
    return grid, np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0), (~np.isnan(values)).sum(0)


def _core_rows(runs: list[Run], window: int, reference: str) -> list[CoreRow]:
    cores = sorted({r.core for r in runs}, key=lambda c: (c != reference, c))
    rows = []
    for core in cores:
        of_core = [r for r in runs if r.core == core]
        scores = [s for s in (run_scores(r.y, window) for r in of_core) if s is not None]
        row = CoreRow(core, len(of_core), len(scores))
        if scores:
            final, best = np.array(scores).T
            ends = [float(r.x[-1]) for r in of_core if len(r.x)]
            row.final_mean, row.best_mean = float(final.mean()), float(best.mean())
            if len(scores) > 1:
                row.final_std, row.best_std = float(final.std(ddof=1)), float(best.std(ddof=1))
            row.end_min, row.end_max = min(ends), max(ends)
        rows.append(row)
    ref = next((row for row in rows if row.core == reference), None)
    for row in rows:
        for score in ("final", "best"):
            mean = getattr(row, f"{score}_mean")
            ref_mean = None if ref is None else getattr(ref, f"{score}_mean")
            if mean is None or ref_mean is None:
                continue
            setattr(row, f"{score}_minus_reference", mean - ref_mean)
            if ref_mean > 0:
                setattr(row, f"{score}_over_reference", mean / ref_mean)
    return rows


# ---------------------------------------------------------------------------------------------- reading runs
def _read_config(path: Path) -> dict:
    config = load_yaml(path / "config.yaml")
    entry = learner(config.get("learner"), where=f"{str(path / 'config.yaml')!r}: ")
    required = [("env", "id"), ("run", "wandb")] + ([] if entry.core else [("policy", "core")])
    for section, key in required:
        if not isinstance(config.get(section), dict) or key not in config[section]:
            raise ConfigError(f"{str(path / 'config.yaml')!r} has no {section}.{key}: not a run's resolved config")
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


def _read_values(path: Path, metric: str) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """(steps [n], values [n]) of ``metric`` in path/metrics.jsonl, by step; and every key logged."""
    file = path / "metrics.jsonl"
    records = read_metrics(file) if file.is_file() else []
    by_step: dict[int, float] = {}
    for record in records:
        value = record.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(record.get("step"), int):
            by_step[record["step"]] = float(value)  # a later record of a step supersedes an earlier one
    steps = sorted(by_step)
    keys = {k for record in records for k in record} - {"step"}
    return np.array(steps, dtype=np.float64), np.array([by_step[s] for s in steps]), keys


def _x_label(unit: str, env_id: str, frameskips: set[int]) -> str:
    if unit == "evaluations":
        return "evaluations (candidates evaluated)"
    if not env_id.startswith(ATARI_PREFIX):
        return "env steps (summed over envs)"
    skip = f"frameskip {frameskips.pop()}" if len(frameskips) == 1 else "each run's frameskip"
    return f"env frames (agent steps x {skip})"


def build_comparison(paths: list[str | Path], metric: str | None = None, window: int = 10,
                     reference: str = "lstm") -> Comparison:
    """Read the runs at ``paths`` (run directories or directories holding some) and compare them; a clear
    ConfigError for a path without runs, or runs of different envs or of learners with different x axes."""
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
        steps, values, keys = _read_values(d, chosen)
        logged |= keys
        scale = _frames_per_step(d, config) if unit == "agent steps" else 1
        frameskips.add(scale)
        runs.append(Run(d, config, steps * scale, values))
        if not len(values):
            notes.append(f"{d}: no {chosen} logged yet")
    if chosen != entry.default_metric and chosen not in logged:
        raise ConfigError(f"--metric {metric!r} is not allowed: no run logged it; the runs logged: "
                          f"{', '.join(sorted(logged)) or 'nothing yet'}")
    runs.sort(key=lambda r: (r.core, r.config.get("seed", 0), str(r.path)))
    if reference not in {r.core for r in runs}:
        notes.append(f"no {reference} runs here: the reference columns are empty")
    learners = ", ".join(sorted({c["learner"] for c in configs}))
    return Comparison(env_id, learners, chosen, window, _x_label(unit, env_id, frameskips), reference, runs,
                      _core_rows(runs, window, reference), notes)


# ---------------------------------------------------------------------------------------------- the report
def plot_curves(comparison: Comparison, path: Path) -> None:
    """The learning curves (module docstring) as a PNG, drawn with matplotlib's Agg backend."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    palette = itertools.cycle(matplotlib.colormaps["tab10"].colors)
    for row in comparison.rows:
        color = "black" if row.core == comparison.reference else next(palette)
        curves = [(r.x, trailing_mean(r.y, comparison.window)) for r in comparison.runs
                  if r.core == row.core and len(r.y)]
        if not curves:
            continue
        x, mean, low, high, count = mean_curve(curves)
        marker = "o" if len(x) == 1 else None
        ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
        ax.plot(x, mean, color=color, linestyle="--", linewidth=1, marker=marker)
        ax.plot(x, np.where(count == len(curves), mean, np.nan), color=color, linewidth=2, marker=marker,
                label=f"{row.core} ({len(curves)} run{'s' if len(curves) > 1 else ''})")
    if any(row.runs_with_data for row in comparison.rows):
        ax.legend()
    else:
        ax.text(0.5, 0.5, f"no {comparison.metric} logged yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{comparison.env_id}: {comparison.metric}, mean of {comparison.window}-record windows; "
                 "band: min to max over runs", fontsize=9)
    ax.set_xlabel(comparison.x_label)
    ax.set_ylabel(comparison.metric)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    with replacing(path) as tmp:
        figure.savefig(tmp)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _mean_std(mean: float | None, std: float | None) -> str:
    return _fmt(mean) if std is None else f"{_fmt(mean)} ± {_fmt(std)}"


def _versus(difference: float | None, ratio: float | None) -> str:
    return _fmt(difference) if ratio is None else f"{_fmt(difference)} ({ratio:.3g}x)"


def table_cells(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """The table as text: (headers, one row of cells per core), for the console and Markdown."""
    ref = comparison.reference
    headers = ["core", "runs", "final", "best", f"final vs {ref}", f"best vs {ref}", "x reached"]
    rows = []
    for row in comparison.rows:
        runs = str(row.runs) if row.runs_with_data == row.runs else f"{row.runs_with_data} of {row.runs}"
        reached = _fmt(row.end_min) if row.end_min == row.end_max else f"{_fmt(row.end_min)} to {_fmt(row.end_max)}"
        rows.append([row.core, runs, _mean_std(row.final_mean, row.final_std), _mean_std(row.best_mean, row.best_std),
                     _versus(row.final_minus_reference, row.final_over_reference),
                     _versus(row.best_minus_reference, row.best_over_reference), reached])
    return headers, rows


def _caption(comparison: Comparison) -> str:
    return (f"{comparison.learners} runs; scores: {comparison.metric}, mean over windows of {comparison.window} "
            f"records (final: the last window, best: the best window), mean ± std over runs; vs "
            f"{comparison.reference}: difference of the means (and their ratio); x: {comparison.x_label}")


def write_report(comparison: Comparison, out: Path) -> None:
    """curves.png, table.csv, table.json and table.md into the directory ``out``."""
    plot_curves(comparison, out / "curves.png")
    fields = [f.name for f in dataclasses.fields(CoreRow)]
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(fields)
    for row in comparison.rows:
        writer.writerow(["" if getattr(row, k) is None else getattr(row, k) for k in fields])
    atomic_write_text(out / "table.csv", table.getvalue())
    runs = []
    for r in comparison.runs:
        scores = run_scores(r.y, comparison.window)
        runs.append({"path": str(r.path), "core": r.core, "seed": r.config.get("seed"), "points": len(r.y),
                     "end": float(r.x[-1]) if len(r.x) else None, "final": scores and scores[0],
                     "best": scores and scores[1]})
    report = {"env_id": comparison.env_id, "learners": comparison.learners, "metric": comparison.metric,
              "window": comparison.window, "x": comparison.x_label, "reference": comparison.reference,
              "cores": [dataclasses.asdict(row) for row in comparison.rows], "runs": runs}
    atomic_write_text(out / "table.json", json.dumps(report, indent=2) + "\n")
    headers, cells = table_cells(comparison)
    lines = [f"# {comparison.env_id}: {comparison.metric}", "", _caption(comparison), "",
             "| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    lines += ["", "![learning curves](curves.png)", ""]
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


def _log_to_wandb(comparison: Comparison, out: Path, project: str) -> None:
    import wandb

    fields = [f.name for f in dataclasses.fields(CoreRow)]
    config = {"runs": [str(r.path) for r in comparison.runs], "metric": comparison.metric,
              "window": comparison.window, "reference": comparison.reference}
    first = comparison.runs[0].config
    group = learner(first["learner"]).task(first)  # the runs' task
    run = start_wandb("online", project, out, f"compare {comparison.metric}", group,
                      ["compare", *(row.core for row in comparison.rows)], config)
    run.log({"comparison": wandb.Table(columns=fields, data=[[getattr(row, k) for k in fields]
                                                              for row in comparison.rows]),
             "curves": wandb.Image(str(out / "curves.png"))})
    run.finish()


def compare(paths: list[str | Path], out: str | Path | None = None, metric: str | None = None, window: int = 10,
            reference: str = "lstm", force: bool = False, wandb_mode: str | None = None,
            console: Console | None = None) -> Path:
    """Compare the runs at ``paths`` (module docstring): print the table, write the report, log it to
    W&B when online; returns the report directory. ``wandb_mode``: "online", "disabled", or None for
    online exactly when every run was online."""
    console = console or Console()
    comparison = build_comparison(paths, metric, window, reference)
    if wandb_mode is None:
        wandb_mode = "online" if all(r.config["run"]["wandb"] == "online" for r in comparison.runs) else "disabled"
    projects = sorted({r.config["run"].get("project", "fwp-rl") for r in comparison.runs})
    if wandb_mode == "online" and len(projects) > 1:
        raise ConfigError(f"--wandb online: the runs belong to different W&B projects ({', '.join(projects)}); "
                          "compare the runs of one project")
    out_dir = _report_dir(out, force, comparison.env_id)
    write_report(comparison, out_dir)
    headers, cells = table_cells(comparison)
    table = Table(*headers, title=f"{comparison.env_id}: {comparison.metric}", caption=_caption(comparison))
    for row in cells:
        table.add_row(*row)
    console.print(table)
    for note in comparison.notes:
        console.print(f"[yellow]note: {note}[/yellow]")
    if wandb_mode == "online":
        _log_to_wandb(comparison, out_dir, projects[0])
    console.print(f"report: {out_dir} ({', '.join(REPORT_FILES)})")
    return out_dir
