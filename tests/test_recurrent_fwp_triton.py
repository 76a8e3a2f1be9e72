"""The Triton kernels of rdn, delta_rnn, delta_lstm and srwm (``fwp_rl.ops.recurrent_fwp_triton``), run by Triton's
interpreter on the CPU: each core on the kernels equals its step loop in values and gradients (float64, episode starts
inside the sequence, at t = 0 and at the last step), and the kernels are chosen only where they serve the layer."""

import importlib

import pytest
import torch

from fwp_rl.ops import recurrent_fwp_triton as triton_forms
from test_cores import assert_forward_equals_step_loop, reset_sequence, small_core

pytestmark = pytest.mark.skipif(not triton_forms.AVAILABLE, reason="Triton is not installed")
KERNELS = "fwp_rl.ops.recurrent_fwp_kernels"
FORMS = ("rdn_sequence", "delta_rnn_sequence", "delta_lstm_sequence", "srwm_sequence")


@pytest.fixture
def kernels_on_cpu(monkeypatch):
    """The kernels in Triton's interpreter (conftest.py sets TRITON_INTERPRET without a GPU), and the cores sending
    their CPU inputs to them -> the names of the forms called."""
    if type(importlib.import_module(KERNELS).rdn_forward_kernel).__name__ != "InterpretedFunction":
        pytest.skip("Triton's interpreter is off (TRITON_INTERPRET): the kernels are compiled for a GPU")
    monkeypatch.setattr(triton_forms, "refusal", lambda device, dtype, *layer: triton_forms.unsupported(dtype, *layer))
    called = []
    for name in FORMS:
        form = getattr(triton_forms, name)
        monkeypatch.setattr(triton_forms, name, lambda *args, form=form: called.append(form.__name__) or form(*args))
    return called


@pytest.mark.parametrize("starts_p", (0.15, 0.5))
@pytest.mark.parametrize("name,options", [("rdn", {}), ("rdn", {"beta_max": 1.7}), ("delta_rnn", {}),
                                          ("delta_rnn", {"beta_max": 1.5}), ("delta_lstm", {}), ("srwm", {})],
                         ids=["rdn", "rdn-beta1.7", "delta_rnn", "delta_rnn-beta1.5", "delta_lstm", "srwm"])
def test_kernels_equal_the_step_loop(kernels_on_cpu, name, options, starts_p):
    core = small_core(name, num_heads=2, **options)  # heads of 4
    x, starts = reset_sequence(starts_p)
    starts[0, 0] = starts[-1, 1] = True
    assert_forward_equals_step_loop(core, x, starts)
    assert kernels_on_cpu == [f"{name}_sequence"]  # the core ran the kernels


@pytest.mark.parametrize("name", ("rdn", "delta_rnn", "delta_lstm", "srwm"))
def test_kernels_without_episode_starts_and_wider_heads(kernels_on_cpu, name):
    core = small_core(name, hidden_size=16, num_heads=2)  # heads of 8
    x, _ = reset_sequence(0.0)
    assert_forward_equals_step_loop(core, x, None)
    assert kernels_on_cpu


@pytest.mark.parametrize("name", ("rdn", "srwm"))
def test_another_feature_map_keeps_the_pytorch_form(kernels_on_cpu, name):
    core = small_core(name, num_heads=2, feature_map="elu")
    assert_forward_equals_step_loop(core, *reset_sequence(0.3))
    assert kernels_on_cpu == []


@pytest.mark.parametrize("dtype,head_dim,feature_map,sum_norm,reason", [
    (torch.float32, 8, "elu", False, "softmax alone"), (torch.float32, 8, "softmax", True, "softmax alone"),
    (torch.float32, 6, "softmax", False, "heads of 6"), (torch.bfloat16, 8, "softmax", False, "float32 and float64")])
def test_cases_the_kernels_do_not_serve_are_named(dtype, head_dim, feature_map, sum_norm, reason):
    assert reason in triton_forms.unsupported(dtype, head_dim, feature_map, sum_norm)


@pytest.mark.parametrize("dtype,head_dim,reason", [(torch.bfloat16, 8, "float32 and float64"),
                                                   (torch.float32, 6, "heads of 6")])
def test_the_kernels_refuse_inputs_they_cannot_take(dtype, head_dim, reason):
    x = torch.zeros(2, 1, 2, head_dim, dtype=dtype)
    with pytest.raises(ValueError, match=reason):
        triton_forms.rdn_sequence(x, x, x, x[..., 0], None, None, None, None)


def test_cpu_runs_the_pytorch_form_and_says_why():
    assert triton_forms.refusal(torch.device("cpu"), torch.float32, 64) == "not on CUDA"
    assert triton_forms.route(small_core("rdn").triton_refusal(torch.device("cpu"), torch.float32)) == \
        "the PyTorch form (not on CUDA)"


def test_switch_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv(triton_forms.SWITCH_VARIABLE, "0")
    assert triton_forms.refusal(torch.device("cuda"), torch.float32, 64) == "FWP_RL_TRITON=0"
