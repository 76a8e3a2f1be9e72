"""The Recurrent Delta Net's Triton kernels (``fwp_rl.ops.rdn_triton``), run by Triton's interpreter on the CPU: the
core on the kernels equals its step loop in values and gradients (float64, episode starts inside the sequence, at
t = 0 and at the last step), and the kernels are chosen only where they serve the layer."""

import importlib
import sys

import pytest
import torch

from fwp_rl.ops import rdn_triton
from test_cores import assert_forward_equals_step_loop, reset_sequence, small_core

pytestmark = pytest.mark.skipif(not rdn_triton.AVAILABLE, reason="Triton is not installed")


@pytest.fixture
def kernels_on_cpu(monkeypatch):
    """The kernels in Triton's interpreter (which reads TRITON_INTERPRET when a kernel is defined), and the core
    sending its CPU inputs to them."""
    if "fwp_rl.ops.rdn_kernels" not in sys.modules:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        importlib.import_module("fwp_rl.ops.rdn_kernels")
    kernel = sys.modules["fwp_rl.ops.rdn_kernels"].rdn_forward_kernel
    if type(kernel).__name__ != "InterpretedFunction":
        pytest.skip("the kernels were compiled for a GPU in this process")
    calls = []
    original = rdn_triton.rdn_sequence
    monkeypatch.setattr(rdn_triton, "refusal", lambda device, dtype, *layer: rdn_triton.unsupported(dtype, *layer))
    monkeypatch.setattr(rdn_triton, "rdn_sequence", lambda *args: calls.append(1) or original(*args))
    return calls


@pytest.mark.parametrize("options", [{}, {"beta_max": 1.7}], ids=["beta1", "beta1.7"])
@pytest.mark.parametrize("starts_p", (0.15, 0.5))
def test_kernels_equal_the_step_loop(kernels_on_cpu, options, starts_p):
    core = small_core("rdn", num_heads=2, **options)  # heads of 4
    x, starts = reset_sequence(starts_p)
    starts[0, 0] = starts[-1, 1] = True
    assert_forward_equals_step_loop(core, x, starts)
    assert kernels_on_cpu  # the core ran the kernels


def test_kernels_without_episode_starts_and_wider_heads(kernels_on_cpu):
    core = small_core("rdn", hidden_size=16, num_heads=2)  # heads of 8
    x, _ = reset_sequence(0.0)
    assert_forward_equals_step_loop(core, x, None)
    assert kernels_on_cpu


@pytest.mark.parametrize("dtype,feature_map,sum_norm,head_dim,reason", [
    (torch.float32, "elu", False, 8, "softmax alone"), (torch.float32, "softmax", True, 8, "softmax alone"),
    (torch.float32, "softmax", False, 6, "heads of 6"), (torch.bfloat16, "softmax", False, 8, "float32 and float64")])
def test_cases_the_kernels_do_not_serve_are_named(dtype, feature_map, sum_norm, head_dim, reason):
    assert reason in rdn_triton.unsupported(dtype, feature_map, sum_norm, head_dim)


@pytest.mark.parametrize("dtype,head_dim,reason", [(torch.bfloat16, 8, "float32 and float64"),
                                                   (torch.float32, 6, "heads of 6")])
def test_the_kernels_refuse_inputs_they_cannot_take(dtype, head_dim, reason):
    x = torch.zeros(2, 1, 2, head_dim, dtype=dtype)
    with pytest.raises(ValueError, match=reason):
        rdn_triton.rdn_sequence(x, x, x, x[..., 0], None, None, None, None)


def test_cpu_runs_the_pytorch_form_and_says_why():
    assert rdn_triton.refusal(torch.device("cpu"), torch.float32, "softmax", False, 64) in (
        "not on CUDA", "Triton is not installed")
    assert rdn_triton.route(torch.device("cpu"), "softmax", False, 64).startswith("the PyTorch form (")


def test_switch_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv(rdn_triton.SWITCH_VARIABLE, "0")
    assert rdn_triton.refusal(torch.device("cuda"), torch.float32, "softmax", False, 64) == "FWP_RL_TRITON=0"
