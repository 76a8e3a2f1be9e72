"""``fwp-rl bench cores``: forward+backward time of every memory core against nn.LSTM of the same width."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from fwp_rl.bench.timing import check_positive, machine_description, median_time, write_table
from fwp_rl.config import ConfigError, parse_device
from fwp_rl.cores import CORES, core_options, make_core
from fwp_rl.cores.fast_weights import DeltaCore
from fwp_rl.cores.recurrent_fwp import DeltaLSTMCore, DeltaRNNCore
from fwp_rl.ops import fla_backend
from fwp_rl.ops import recurrent_fwp_triton as triton_forms

# The fast-weight cores, also timed in their step loop (checkpointed) against their own sequence forms.
OWN_FORM_CORES = ("linear", "delta", "gated_delta", "rdn", "delta_rnn", "delta_lstm", "srwm", "direct")


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


def peak_memory(fn, device: torch.device) -> int | None:
    """Bytes fn() raised the peak memory of this process by: on a GPU the allocator's peak, on a CPU the peak
    resident set (VmHWM, reset through /proc/self/clear_refs; Linux), each above what was in use before, the C
    allocator's free memory first given back to the system (glibc's malloc_trim) so that a run cannot hide in what
    an earlier one left resident. None where it cannot be read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: what earlier runs left resident may hide part of the peak
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak resident set back to the current one
        before = _status_bytes("VmRSS")
    except (OSError, KeyError, ValueError):  # not Linux
        return None
    fn()
    return _status_bytes("VmHWM") - before


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields[field].split()[0]) * 1024


def bench_cores(seq_lens=(32, 128, 512), batch: int = 64, width: int = 256, heads: int = 4, repeats: int = 5,
                device: str = "cpu", cores=None, reset_rate: float = 0.01, seed: int = 0) -> list[dict]:
    """Forward+backward time and peak memory of every core over [T, batch, width] sequences, against nn.LSTM of the
    same width.

    The cores see episode starts at ``reset_rate`` per step (as in real rollouts); nn.LSTM, which cannot
    reset inside a sequence, runs without them. The cores with a sequence form of their own are also timed in their step
loop, checkpointed as
    the step-loop cores run it (``MemoryCore.forward_checkpointed``). Each row's peak memory is measured on one
    more forward+backward (``peak_memory``). A run that runs out of GPU memory is skipped, its row saying so.
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
    rows = []
    for T in seq_lens:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(T, batch, width, generator=g).to(dev).requires_grad_(True)
        starts = (torch.rand(T, batch, generator=g) < reset_rate).to(dev)
        torch.manual_seed(seed)
        lstm = nn.LSTM(width, width).to(dev)

        def timed(forward) -> tuple[float | None, int | None, str | None]:
            """(median seconds, peak bytes, None), or (None, None, why it was skipped)."""

            def run():
                y = forward(x, starts)
                y.sum().backward()

            try:
                seconds = median_time(run, repeats, dev)
                return seconds, peak_memory(run, dev), None
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                return None, None, "out of GPU memory"

        t_lstm, peak, skipped = timed(lambda x, starts: lstm(x)[0])
        rows.append(dict(core="nn.LSTM", T=T, ms=_ms(t_lstm), vs_lstm=None if t_lstm is None else 1.0, vs_loop=None,
                         skipped=skipped, loop_skipped=None, form=None, peak_mib=_mib(peak)))
        for name in names:
            options = {k: v for k, v in dict(hidden_size=width, num_heads=heads).items() if k in core_options(name)}
            core = make_core(name, width, **options).to(dev)
            state = core.initial_state(batch, dev)
            t, peak, skipped = timed(lambda x, starts: core(x, state, starts)[0])
            t_loop, loop_skipped = None, None
            if name in OWN_FORM_CORES:
                t_loop, _, loop_skipped = timed(lambda x, starts: core.forward_checkpointed(x, state, starts)[0])
            form = None
            if dev.type == "cuda" and isinstance(core, DeltaCore):
                form = fla_backend.route(dev, core.key_dim, core.head_dim, core.uses_gate)
            elif dev.type == "cuda" and hasattr(core, "triton_refusal"):
                part = "recurrent part: " if isinstance(core, (DeltaRNNCore, DeltaLSTMCore)) else ""
                form = part + triton_forms.route(core.triton_refusal(dev, torch.float32))
            rows.append(dict(core=name, T=T, ms=_ms(t), vs_lstm=_ratio(t, t_lstm), vs_loop=_ratio(t_loop, t),
                             skipped=skipped, loop_skipped=loop_skipped, form=form, peak_mib=_mib(peak)))
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds


def _mib(size: int | None) -> float | None:
    return None if size is None else size / 2**20


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def print_core_table(rows: list[dict], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("core", "T", "fwd+bwd ms", "x nn.LSTM", "peak MiB", "loop / own form"):
        table.add_column(column, justify="left" if column == "core" else "right")
    for r in rows:
        if r["skipped"]:
            table.add_row(r["core"], str(r["T"]), f"skipped: {r['skipped']}", "", "", "")
            continue
        if r["vs_loop"] is not None:
            loop = f"{r['vs_loop']:.1f}x faster"
        else:
            loop = f"loop skipped: {r['loop_skipped']}" if r["loop_skipped"] else ""
        table.add_row(r["core"], str(r["T"]), f"{r['ms']:.1f}", "" if r["vs_lstm"] is None else f"{r['vs_lstm']:.2f}",
                      "not measured" if r["peak_mib"] is None else f"{r['peak_mib']:,.0f}", loop)
    (console or Console()).print(table)

def run_cores_bench(options: CoresOptions) -> None:
    rows = bench_cores(options.seq_lens, options.batch, options.width, options.heads, options.repeats, options.device,
                       options.cores, options.reset_rate)
    device = torch.device(options.device)
    title = (f"fwp-rl bench cores: batch {options.batch}, width {options.width}, {options.heads} heads, "
             f"episode starts at {100 * options.reset_rate:g}% of the cores' steps (nn.LSTM: none), "
             f"median of {options.repeats}; {machine_description(device)}")
    forms = {r["core"]: r["form"] for r in rows if r["form"]}
    title += "".join(f"; {core}: {form}" for core, form in forms.items())
    print_core_table(rows, title)
    if options.json:
        write_table(options.json, title, rows)
