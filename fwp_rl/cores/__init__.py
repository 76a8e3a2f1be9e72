"""Memory cores: one module per update rule, all behind the interface of ``base.MemoryCore``.

``make_core(name, input_size, **options)`` builds one by name. With ``num_layers > 1`` or
``feedforward > 0`` the layers are stacked as pre-LayerNorm residual blocks (``stack.ResidualStack``),
the layout of the reference fast-weight Atari agents; otherwise the core is the bare layer, the size
that small evolved controllers want.
"""

from __future__ import annotations

import importlib
import inspect

from fwp_rl.checks import check_choice, check_size
from fwp_rl.cores.base import MemoryCore, State

# name -> "module:Class"; imported on first use.
CORES = {
    "lstm": "fwp_rl.cores.rnn:LSTMCore",
    "gru": "fwp_rl.cores.rnn:GRUCore",
    "elman": "fwp_rl.cores.rnn:ElmanCore",
    "linear": "fwp_rl.cores.fast_weights:LinearCore",
    "delta": "fwp_rl.cores.fast_weights:DeltaCore",
    "gated_delta": "fwp_rl.cores.fast_weights:GatedDeltaCore",
    "rdn": "fwp_rl.cores.recurrent_fwp:RDNCore",
    "delta_rnn": "fwp_rl.cores.recurrent_fwp:DeltaRNNCore",
    "delta_lstm": "fwp_rl.cores.recurrent_fwp:DeltaLSTMCore",
    "srwm": "fwp_rl.cores.srwm:SRWMCore",
    "direct": "fwp_rl.cores.direct:DirectCore",
    "memoryless": "fwp_rl.cores.rnn:MemorylessCore",
}

STACK_OPTIONS = ("num_layers", "feedforward")


def core_class(name: str) -> type[MemoryCore]:
    check_choice("core", name, tuple(CORES))
    module, cls = CORES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def core_options(name: str) -> dict:
    """The options core ``name`` takes (beyond input_size), with their defaults."""
    params = inspect.signature(core_class(name).__init__).parameters
    options = {k: p.default for k, p in params.items() if k not in ("self", "input_size")}
    options.update(num_layers=1, feedforward=0)
    return options


def make_core(name: str, input_size: int, **options) -> MemoryCore:
    """Build core ``name`` reading ``input_size`` features; unknown options raise a clear error."""
    allowed = core_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"core {name!r} has no option {', '.join(unknown)}; its options are: {', '.join(allowed)}")
    check_size("input_size", input_size)
    num_layers = check_size("num_layers", options.pop("num_layers", 1))
    feedforward = check_size("feedforward", options.pop("feedforward", 0), minimum=0)
    if num_layers == 1 and feedforward == 0:
        return core_class(name)(input_size=input_size, **options)
    from fwp_rl.cores.stack import ResidualStack

    return ResidualStack(core_class(name), input_size, num_layers=num_layers, feedforward=feedforward, **options)


__all__ = ["CORES", "MemoryCore", "State", "core_class", "core_options", "make_core"]
