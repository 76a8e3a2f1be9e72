"""What the benchmarks share: timing on any device, the timed evaluation of a population on the CPU, the machine a
figure was measured on, the check of a count option, and the JSON file of a table."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from fwp_rl.config import ConfigError
from fwp_rl.files import atomic_write_text


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of fn() over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_evaluation(problem, values: torch.Tensor, steps: Callable[[], int]) -> Callable[[], tuple[int, float]]:
    """() -> (env steps, seconds) of one evaluation by the EvoTorch ``problem`` of the candidates ``values``
    [popsize, weights] on the CPU; ``steps()`` is the problem's own running count of the steps its envs took."""

    def evaluate() -> tuple[int, float]:
        batch = problem.generate_batch(values.shape[0])
        batch.set_values(values)
        before, start = steps(), time.perf_counter()
        problem.evaluate(batch)
        return steps() - before, time.perf_counter() - start

    return evaluate


def machine_description(device: torch.device, threads: int | None = None) -> str:
    """The device, torch's version and, on the CPU, its thread count (default: this process's)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    threads = torch.get_num_threads() if threads is None else threads
    return (f"{platform.processor() or platform.machine()}, {threads} thread{'s' * (threads != 1)}, "
            f"torch {torch.__version__}")


def check_positive(option: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{option} {value} is not allowed: it must be >= 1")


def write_table(path: str, title: str, rows: list[dict]) -> None:
    """The JSON file of ``--json``: a table's title and rows."""
    atomic_write_text(path, json.dumps(dict(title=title, rows=rows), indent=2))
