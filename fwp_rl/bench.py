"""Benchmarks whose figures the README quotes. Each prints a table and can write its rows as JSON."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from fwp_rl.cores import CORES, core_options, make_core

CHUNKWISE_CORES = ("linear", "delta", "gated_delta")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of fn() over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def bench_cores(seq_lens=(32, 128, 512), batch: int = 64, width: int = 256, heads: int = 4, repeats: int = 5,
                device: str = "cpu", cores=None, reset_rate: float = 0.01, seed: int = 0) -> list[dict]:
    """Forward+backward time of every core over [T, batch, width] sequences, against nn.LSTM of the same width.

    The cores see episode starts at ``reset_rate`` per step (as in real rollouts); nn.LSTM, which cannot
    reset inside a sequence, runs without them. Chunkwise cores are also timed in their own step loop.
    """
    dev = torch.device(device)
    names = list(cores or CORES)
    rows = []
    for T in seq_lens:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(T, batch, width, generator=g).to(dev).requires_grad_(True)
        starts = (torch.rand(T, batch, generator=g) < reset_rate).to(dev)
        torch.manual_seed(seed)
        lstm = nn.LSTM(width, width).to(dev)

        def run_lstm():
            y, _ = lstm(x)
            y.sum().backward()

        t_lstm = median_time(run_lstm, repeats, dev)
        rows.append(dict(core="nn.LSTM", T=T, ms=1e3 * t_lstm, vs_lstm=1.0, vs_loop=None))
        for name in names:
            options = {k: v for k, v in dict(hidden_size=width, num_heads=heads).items() if k in core_options(name)}
            core = make_core(name, width, **options).to(dev)
            state = core.initial_state(batch, dev)

            def run(method):
                y, _ = method(x, state, starts)
                y.sum().backward()

            t = median_time(lambda: run(core.forward), repeats, dev)
            t_loop = median_time(lambda: run(core.forward_loop), repeats, dev) if name in CHUNKWISE_CORES else None
            rows.append(dict(core=name, T=T, ms=1e3 * t, vs_lstm=t / t_lstm,
                             vs_loop=None if t_loop is None else t_loop / t))
    return rows


def print_core_table(rows: list[dict], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("core", "T", "fwd+bwd ms", "x nn.LSTM", "loop / chunkwise"):
        table.add_column(column, justify="left" if column == "core" else "right")
    for r in rows:
        table.add_row(r["core"], str(r["T"]), f"{r['ms']:.1f}", f"{r['vs_lstm']:.2f}",
                      "" if r["vs_loop"] is None else f"{r['vs_loop']:.1f}x faster")
    (console or Console()).print(table)


def run_cores_bench(args) -> None:
    rows = bench_cores(args.seq_lens, args.batch, args.width, args.heads, args.repeats, args.device, args.cores)
    title = (f"fwp-rl bench cores: batch {args.batch}, width {args.width}, {args.heads} heads, "
             f"median of {args.repeats}; {machine_description(torch.device(args.device))}")
    print_core_table(rows, title)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(title=title, rows=rows), indent=2))


PPO_BENCH_CONFIGS = tuple(f"configs/atari/pong_{core}.yaml" for core in ("lstm", "delta", "rdn"))


def bench_ppo(config_paths=PPO_BENCH_CONFIGS, updates: int = 3, device: str = "auto") -> list[dict]:
    """Training speed of the PPO configs at ``config_paths``: after one warm-up update, the medians over
    ``updates`` updates of agent steps per second and of the seconds of each part (env stepping, rollout
    inference, learning)."""
    from fwp_rl.agents.ppo import Trainer
    from fwp_rl.cli import load_config

    rows = []
    for path in config_paths:
        config = load_config(str(path), [f"ppo.device={device}", "run.wandb=disabled"])
        trainer = Trainer(config)
        try:
            trainer.update()
            figures = [trainer.update() for _ in range(updates)]
        finally:
            trainer.close()
        median = {k: statistics.median(f[k] for f in figures)
                  for k in ("seconds", "env_seconds", "inference_seconds", "learn_seconds")}
        rows.append(dict(config=str(path), core=config.policy.core, env=config.env.id,
                         steps_per_update=config.steps_per_update,
                         steps_per_second=config.steps_per_update / median["seconds"], **median))
    return rows


def print_ppo_table(rows: list[dict], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("config", "steps/s", "s/update", "x lstm", "env %", "infer %", "learn %"):
        table.add_column(column, justify="left" if column == "config" else "right")
    lstm = next((r["seconds"] for r in rows if r["core"] == "lstm"), None)
    for r in rows:
        share = [f"{100 * r[k] / r['seconds']:.0f}" for k in ("env_seconds", "inference_seconds", "learn_seconds")]
        table.add_row(Path(r["config"]).stem, f"{r['steps_per_second']:,.0f}", f"{r['seconds']:.2f}",
                      "" if lstm is None else f"{r['seconds'] / lstm:.2f}", *share)
    (console or Console()).print(table)


def run_ppo_bench(args) -> None:
    rows = bench_ppo(args.configs, args.updates, args.device)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    title = (f"fwp-rl bench ppo: median of {args.updates} updates after one warm-up; "
             f"{machine_description(device)}")
    print_ppo_table(rows, title)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(title=title, rows=rows), indent=2))
