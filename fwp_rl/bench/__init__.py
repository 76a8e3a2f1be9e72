"""Benchmarks whose figures docs/benchmarks/ quotes, one module each: cores (memory cores against nn.LSTM), ppo
(PPO training speed) and double_pole (neuroevolution on the double pole: success and simulated steps per second);
timing holds what they share. Each prints a table and can write its rows as JSON. The entry points of
``fwp-rl bench`` take the options of their command as a dataclass that fwp_rl.cli builds."""

from fwp_rl.bench.cores import CoresOptions, bench_cores, run_cores_bench
from fwp_rl.bench.double_pole import (
    DoublePoleOptions,
    balancing_controller,
    bench_double_pole,
    bench_double_pole_throughput,
    read_double_pole_bench,
    run_double_pole_bench,
)
from fwp_rl.bench.ppo import PpoOptions, bench_ppo, run_ppo_bench

__all__ = ["CoresOptions", "DoublePoleOptions", "PpoOptions", "balancing_controller", "bench_cores",
           "bench_double_pole", "bench_double_pole_throughput", "bench_ppo", "read_double_pole_bench",
           "run_cores_bench", "run_double_pole_bench", "run_ppo_bench"]
