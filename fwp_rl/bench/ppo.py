"""``fwp-rl bench ppo``: PPO training steps per second, and where the time of an update goes."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from fwp_rl.bench.timing import check_positive, machine_description, write_table
from fwp_rl.learners import load_config

PPO_BENCH_CONFIGS = tuple(f"configs/atari/pong_{core}.yaml" for core in ("lstm", "delta", "rdn"))


@dataclass(frozen=True)
class PpoOptions:
    """The options of ``fwp-rl bench ppo`` (their defaults and help: fwp_rl.cli); ``configs`` None:
    PPO_BENCH_CONFIGS."""

    configs: list[str] | None
    updates: int
    device: str
    json: str | None
    num_envs: int | None = None


def bench_ppo(config_paths=PPO_BENCH_CONFIGS, updates: int = 3, device: str = "auto", num_envs: int | None = None
              ) -> list[dict]:
    """Training speed of the PPO configs at ``config_paths`` (with ``num_envs`` envs where given): after one warm-up
    update, the medians over ``updates`` updates of agent steps per second and of the seconds of each part (env
    stepping, rollout inference, learning), and the env-only steps per second: the rollout's steps over the time
    spent stepping the envs alone, what training would reach if the policy and the learner cost nothing."""
    from fwp_rl.agents.ppo import Trainer

    check_positive("--updates", updates)
    if num_envs is not None:
        check_positive("--num-envs", num_envs)
    rows = []
    for path in config_paths:
        overrides = [f"ppo.device={device}", "run.wandb=disabled", *([f"env.num_envs={num_envs}"] if num_envs else [])]
        config = load_config(str(path), overrides)
        trainer = Trainer(config)
        try:
            trainer.update()
            figures = [trainer.update() for _ in range(updates)]
        finally:
            trainer.close()
        median = {k: statistics.median(f[k] for f in figures)
                  for k in ("seconds", "env_seconds", "inference_seconds", "learn_seconds")}
        rows.append(dict(config=str(path), core=config.policy.core, env=config.env.id, num_envs=config.env.num_envs,
                         steps_per_update=config.steps_per_update,
                         steps_per_second=config.steps_per_update / median["seconds"],
                         env_steps_per_second=config.steps_per_update / median["env_seconds"], **median))
    return rows


def print_ppo_table(rows: list[dict], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("config", "envs", "steps/s", "env-only steps/s", "s/update", "x lstm", "env %", "infer %",
                   "learn %"):
        table.add_column(column, justify="left" if column == "config" else "right")
    lstm = next((r["seconds"] for r in rows if r["core"] == "lstm"), None)
    for r in rows:
        share = [f"{100 * r[k] / r['seconds']:.0f}" for k in ("env_seconds", "inference_seconds", "learn_seconds")]
        table.add_row(Path(r["config"]).stem, str(r["num_envs"]), f"{r['steps_per_second']:,.0f}",
                      f"{r['env_steps_per_second']:,.0f}", f"{r['seconds']:.2f}",
                      "" if lstm is None else f"{r['seconds'] / lstm:.2f}", *share)
    (console or Console()).print(table)

def run_ppo_bench(options: PpoOptions) -> None:
    rows = bench_ppo(options.configs or PPO_BENCH_CONFIGS, options.updates, options.device, options.num_envs)
    device = torch.device("cuda" if options.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if options.device == "auto" else options.device))
    title = (f"fwp-rl bench ppo: median of {options.updates} updates after one warm-up; "
             f"{machine_description(device)}")
    print_ppo_table(rows, title)
    if options.json:
        write_table(options.json, title, rows)
