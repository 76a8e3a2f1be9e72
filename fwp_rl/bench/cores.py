"""``fwp-rl bench cores``: forward+backward time of every memory core against nn.LSTM of the same width."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from fwp_rl.bench.timing import check_positive, machine_description, median_time, write_table
from fwp_rl.config import ConfigError, parse_device
from fwp_rl.cores import CORES, core_options, make_core
from fwp_rl.cores.fast_weights import DeltaCore
from fwp_rl.ops import fla_backend

CHUNKWISE_CORES = ("linear", "delta", "gated_delta")


@dataclass(frozen=True)
class CoresOptions:
    """The options of ``fwp-rl bench cores`` (their defaults and help: fwp_rl.cli)."""

    seq_lens: list[int]
    batch: int
    width: int
    heads: int
    repeats: int
    device: str
    cores: list[str] | None
    reset_rate: float
    json: str | None


# Peak memory of a forward+backward, as a multiple of the bytes autograd saves for backward. The rest is
# backward's temporaries and the allocator's free but unreturned blocks, and it grows with T: measured as the
# growth of resident memory on the CPU, 1.4 (delta, chunkwise) to 2.6 (srwm) times at T = 64 and 128, while a
# T = 512 run let through at 3 times (19 GiB estimated) was killed for memory at 24 GiB.
PEAK_PER_SAVED_BYTE = 5.0
MEMORY_PROBE_STEPS = 16


def available_memory(device: torch.device) -> int | None:
    """Bytes a run can still allocate on ``device``: free GPU memory, or MemAvailable of /proc/meminfo
    (None where neither can be read: no run is skipped there)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while fn() runs (each storage counted once)."""
    storages = {}

    def pack(t: Tensor) -> Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def bench_cores(seq_lens=(32, 128, 512), batch: int = 64, width: int = 256, heads: int = 4, repeats: int = 5,
                device: str = "cpu", cores=None, reset_rate: float = 0.01, seed: int = 0,
                memory: int | None = None) -> list[dict]:
    """Forward+backward time of every core over [T, batch, width] sequences, against nn.LSTM of the same width.

    The cores see episode starts at ``reset_rate`` per step (as in real rollouts); nn.LSTM, which cannot
    reset inside a sequence, runs without them. Chunkwise cores are also timed in their own step loop.

    A step loop keeps every step's fast weights for backward: at T = 512 srwm and delta_lstm need more than
    the 24 GiB of a small machine, which killed the whole bench. So each run's peak memory is first
    estimated from what autograd saves over ``MEMORY_PROBE_STEPS`` steps (it grows linearly with T), and a
    run whose estimate exceeds ``memory`` bytes (default: what the device has available) is skipped, with
    the estimate in its row's ``skipped``. Estimating costs one short forward, where the alternative of
    checkpointing every step loop would recompute each forward in training too (the same numbers, slower).
    """
    for option, value in (("--batch", batch), ("--width", width), ("--heads", heads), ("--repeats", repeats),
                          *(("--seq-lens", T) for T in seq_lens)):
        check_positive(option, value)
    if not 0 <= reset_rate <= 1:
        raise ConfigError(f"--reset-rate {reset_rate} is not allowed: it must be between 0 and 1")
    if width % heads:
        raise ConfigError(f"--width {width} is not allowed with --heads {heads}: the heads split the width, "
                          f"so it must be a multiple of {heads}")
    dev = parse_device(f"--device {device}", device)
    names = list(cores or CORES)
    memory = available_memory(dev) if memory is None else memory
    rows = []
    for T in seq_lens:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(T, batch, width, generator=g).to(dev).requires_grad_(True)
        starts = (torch.rand(T, batch, generator=g) < reset_rate).to(dev)
        torch.manual_seed(seed)
        lstm = nn.LSTM(width, width).to(dev)

        def timed(forward) -> tuple[float | None, str | None]:
            """(median seconds, None), or (None, why it was skipped)."""
            steps = min(T, MEMORY_PROBE_STEPS)
            needs = PEAK_PER_SAVED_BYTE * saved_bytes(lambda: forward(x[:steps], starts[:steps])) * T / steps
            if memory is not None and needs > memory:
                return None, f"needs about {needs / 2**30:.1f} GiB"

            def run():
                y = forward(x, starts)
                y.sum().backward()

            try:
                return median_time(run, repeats, dev), None
            except torch.cuda.OutOfMemoryError:  # the estimate let through a run the GPU cannot hold
                torch.cuda.empty_cache()
                return None, f"out of GPU memory (estimated {needs / 2**30:.1f} GiB)"

        t_lstm, skipped = timed(lambda x, starts: lstm(x)[0])
        rows.append(dict(core="nn.LSTM", T=T, ms=_ms(t_lstm), vs_lstm=None if t_lstm is None else 1.0, vs_loop=None,
                         skipped=skipped, loop_skipped=None, form=None))
        for name in names:
            options = {k: v for k, v in dict(hidden_size=width, num_heads=heads).items() if k in core_options(name)}
            core = make_core(name, width, **options).to(dev)
            state = core.initial_state(batch, dev)
            t, skipped = timed(lambda x, starts: core(x, state, starts)[0])
            t_loop, loop_skipped = None, None
            if name in CHUNKWISE_CORES:
                t_loop, loop_skipped = timed(lambda x, starts: core.forward_loop(x, state, starts)[0])
            form = (fla_backend.route(dev, core.key_dim, core.head_dim, core.uses_gate)
                    if dev.type == "cuda" and isinstance(core, DeltaCore) else None)
            rows.append(dict(core=name, T=T, ms=_ms(t), vs_lstm=_ratio(t, t_lstm), vs_loop=_ratio(t_loop, t),
                             skipped=skipped, loop_skipped=loop_skipped, form=form))
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def print_core_table(rows: list[dict], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("core", "T", "fwd+bwd ms", "x nn.LSTM", "loop / chunkwise"):
        table.add_column(column, justify="left" if column == "core" else "right")
    for r in rows:
        if r["skipped"]:
            table.add_row(r["core"], str(r["T"]), f"skipped: {r['skipped']}", "", "")
            continue
        if r["vs_loop"] is not None:
            loop = f"{r['vs_loop']:.1f}x faster"
        else:
            loop = f"loop skipped: {r['loop_skipped']}" if r["loop_skipped"] else ""
        table.add_row(r["core"], str(r["T"]), f"{r['ms']:.1f}", "" if r["vs_lstm"] is None else f"{r['vs_lstm']:.2f}",
                      loop)
    (console or Console()).print(table)

def run_cores_bench(options: CoresOptions) -> None:
    rows = bench_cores(options.seq_lens, options.batch, options.width, options.heads, options.repeats, options.device,
                       options.cores, options.reset_rate)
    device = torch.device(options.device)
    title = (f"fwp-rl bench cores: batch {options.batch}, width {options.width}, {options.heads} heads, "
             f"episode starts at {100 * options.reset_rate:g}% of the cores' steps (nn.LSTM: none), "
             f"median of {options.repeats}; {machine_description(device)}")
    forms = {r["core"]: r["form"] for r in rows if r["form"]}
    title += "".join(f"; chunkwise {core}: {form}" for core, form in forms.items())
    print_core_table(rows, title)
    if options.json:
        write_table(options.json, title, rows)
