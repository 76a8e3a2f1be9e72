"""The fla backend: how episode resets become fla's variable-length sequences (on CPU), the adapter
against fla's documented contract played by the step loop (on CPU), and the real kernels against the
step loop in values and gradients (only with CUDA and fla)."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from fwp_rl.cores import make_core
from fwp_rl.ops import fla_backend
from fwp_rl.ops.delta import delta_rule_recurrent

F64 = torch.float64
HAS_FLA_CUDA = fla_backend.AVAILABLE and torch.cuda.is_available()


# ---------------------------------------------------------------- the bookkeeping, by hand
def test_segments_on_hand_made_starts():
    T, B = 5, 3
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[2, 0] = True  # row 0 (steps 0..4): pieces [0, 2) from S0, [2, 5) from zero
    starts[0, 1] = starts[3, 1] = starts[4, 1] = True  # row 1 (5..9): [5, 8), [8, 9), [9, 10), all from zero
    # row 2 (10..14): no reset, one piece [10, 15) from S0
    seg = fla_backend.segments(starts, T, B)
    assert seg.cu_seqlens.dtype == torch.int64
    assert seg.cu_seqlens.tolist() == [0, 2, 5, 8, 9, 10, 15]
    assert seg.row.tolist() == [0, 0, 1, 1, 1, 2]
    assert seg.from_S0.tolist() == [True, False, False, False, False, True]
    assert seg.last.tolist() == [1, 4, 5]


def test_segments_without_starts_are_the_rows():
    seg = fla_backend.segments(None, 4, 2)
    assert seg.cu_seqlens.tolist() == [0, 4, 8]
    assert seg.row.tolist() == [0, 1]
    assert seg.from_S0.tolist() == [True, True]
    assert seg.last.tolist() == [0, 1]


def test_segments_with_a_reset_at_every_step():
    seg = fla_backend.segments(torch.ones(3, 2, dtype=torch.bool), 3, 2)
    assert seg.cu_seqlens.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert seg.row.tolist() == [0, 0, 0, 1, 1, 1]
    assert not seg.from_S0.any()
    assert seg.last.tolist() == [2, 5]


# ---------------------------------------------------------------- when the kernels are used
def test_usable_is_false_on_cpu():
    x = torch.randn(4, 2, 2, 64)
    assert not fla_backend.usable(x, x, gated=False)
    assert fla_backend.refusal(x.device, x.dtype, 64, 64, False) in ("not on CUDA", "fla is not installed")


CUDA = torch.device("cuda")


@pytest.fixture
def fla_on_a_gpu(monkeypatch):
    """fla installed, an NVIDIA Ampere GPU (compute capability 8) and Triton 3.6.0; FWP_RL_FLA unset."""
    monkeypatch.setattr(fla_backend, "AVAILABLE", True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(fla_backend, "triton_version", lambda: (3, 6, 0))
    monkeypatch.delenv("FWP_RL_FLA", raising=False)


def test_refusal_decides_by_dtype_key_dimension_and_variable(fla_on_a_gpu, monkeypatch):
    assert all(fla_backend.refusal(CUDA, d, 64, 64, True) is None for d in (torch.float32, torch.bfloat16,
                                                                             torch.float16))
    assert fla_backend.refusal(CUDA, torch.float64, 64, 64, False) == (
        "q.dtype=torch.float64 is not allowed: use float32, bfloat16 or float16")
    assert "key dimension 257" in fla_backend.refusal(CUDA, torch.float32, 257, 64, False)
    monkeypatch.setenv("FWP_RL_FLA", "0")
    assert fla_backend.refusal(CUDA, torch.float32, 64, 64, False) == "FWP_RL_FLA=0"
    monkeypatch.setenv("FWP_RL_FLA", "1")
    assert fla_backend.refusal(CUDA, torch.float32, 64, 64, False) is None


@pytest.mark.parametrize("triton, gated, dk, dv, reason", [
    ((3, 6, 0), True, 64, 64, "fla refuses the gated rule's backward on Hopper with Triton 3.4 to 3.7.0"),
    ((3, 7, 1), True, 64, 64, None),
    ((3, 3, 0), True, 32, 32, None),
    ((3, 6, 0), False, 64, 64, None),
    ((3, 6, 0), False, 48, 64, None),
    ((3, 6, 0), False, 32, 64, "heads of 32 keys and 64 values: 32 or fewer met an illegal memory access"),
    ((3, 7, 1), False, 64, 16, "heads of 64 keys and 16 values: 32 or fewer met an illegal memory access"),
    ((3, 5, 1), False, 64, 32, None),
])
def test_hopper_hazards_route_to_pytorch(fla_on_a_gpu, monkeypatch, triton, gated, dk, dv, reason):
    monkeypatch.setattr(fla_backend, "triton_version", lambda: triton)
    assert fla_backend.refusal(CUDA, torch.float32, dk, dv, gated) is None  # not on Hopper
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    got = fla_backend.refusal(CUDA, torch.float32, dk, dv, gated)
    assert got == reason if reason is None else got.startswith(reason)


def test_an_amd_gpu_of_capability_9_is_not_hopper(fla_on_a_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 4))  # an MI300 under ROCm
    monkeypatch.setattr(torch.version, "hip", "6.4")
    assert fla_backend.refusal(CUDA, torch.float32, 64, 64, True) is None


def test_triton_version_reads_local_builds(monkeypatch):
    monkeypatch.setattr(fla_backend.importlib.metadata, "version", lambda name: "3.7.1+gitb77f00c0")
    assert fla_backend.triton_version.__wrapped__() == (3, 7, 1)


def test_route_names_the_form_and_why(fla_on_a_gpu, monkeypatch):
    assert fla_backend.route(CUDA, 64, 64, False).startswith("the fla kernels (")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fla_backend.route(CUDA, 64, 64, True) == ("the PyTorch chunkwise form (fla refuses the gated rule's "
                                                     "backward on Hopper with Triton 3.4 to 3.7.0)")
    monkeypatch.setattr(fla_backend, "AVAILABLE", False)
    assert fla_backend.route(CUDA, 64, 64, False) == "the PyTorch chunkwise form (fla is not installed)"


def test_delta_rule_rejects_what_the_kernels_cannot_take():
    q = torch.randn(3, 2, 1, 4, dtype=F64)
    with pytest.raises(ValueError, match="q.dtype=torch.float64 is not allowed"):
        fla_backend.delta_rule(q, q, q, q[..., 0], torch.zeros(2, 1, 4, 4, dtype=F64))
    q = torch.randn(3, 2, 1, 300)
    with pytest.raises(ValueError, match="key dimension 300"):
        fla_backend.delta_rule(q, q, q, q[..., 0], torch.zeros(2, 1, 300, 300))


# ---------------------------------------------------------------- shared by the two comparisons
T, B, H, DK, DV = 9, 3, 2, 8, 4


def resets(T, B):
    """A reset at t = 0 of row 1, two in a row in row 0 (a one-step episode), one at the last step of row 2."""
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0, 1] = True
    starts[T // 2, 0] = starts[T // 2 + 1, 0] = True
    starts[T - 1, 2] = True
    return starts


def make_inputs(T, B, H, dk, dv, gated, device, seed=0):
    """q, k (unit norm), v, beta, S0, log_alpha as float32 values that bfloat16 holds exactly."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    xs = [r(T, B, H, dk), F.normalize(r(T, B, H, dk), dim=-1), r(T, B, H, dv), torch.sigmoid(r(T, B, H)),
          0.5 * r(B, H, dk, dv), F.logsigmoid(r(T, B, H) + 2.0) if gated else None]
    return [None if x is None else x.bfloat16().float().to(device) for x in xs]


def compare_with_step_loop(T, B, H, dk, dv, gated, device, tol):
    q, k, v, beta, S0, log_alpha = make_inputs(T, B, H, dk, dv, gated, device)
    starts = resets(T, B).to(device)
    leaves = [x for x in (q, k, v, beta, S0, log_alpha) if x is not None]
    g = torch.Generator().manual_seed(1)
    w_o, w_S = torch.randn(T, B, H, dv, generator=g).to(device), torch.randn(B, H, dk, dv, generator=g).to(device)

    def run(rule, xs):
        xs = [x.detach().requires_grad_(True) for x in xs]
        q, k, v, beta, S0, *rest = xs
        o, S = rule(q, k, v, beta, S0, starts, rest[0] if rest else None)
        grads = torch.autograd.grad((o * w_o.to(o.dtype)).sum() + (S * w_S.to(S.dtype)).sum(), xs)
        return [o, S, *grads]

    got = run(fla_backend.delta_rule, leaves)
    want = run(delta_rule_recurrent, [x.double() for x in leaves])
    names = ["o", "S_T", "dq", "dk", "dv", "dbeta", "dS0", "dlog_alpha"]
    for name, a, b in zip(names, got, want):
        assert a.dtype == torch.float32 and a.shape == b.shape, name
        error = (a.double() - b).norm() / b.norm()
        assert error < tol, f"{name}: relative error {error:.2e}"


# the layer options act before the rule (convolution, feature map, rates) or after it (output norm), so the kernels
# take them as they take the 2021 layer
LAYERS = {"2021": {}, "2024": dict(conv_size=4, feature_map="silu_l2", sum_norm=False, output_norm=True,
                                   beta_bias=-1.0)}


@pytest.mark.parametrize("layer_options", LAYERS.values(), ids=LAYERS)
@pytest.mark.parametrize("core", ["delta", "gated_delta"])
def test_the_delta_cores_hand_their_rule_to_the_kernels_where_usable(monkeypatch, core, layer_options):
    asked = []

    def usable(q, v, gated):
        asked.append((q.shape[-1], v.shape[-1], gated))
        return True

    monkeypatch.setattr(fla_backend, "usable", usable)
    monkeypatch.setattr(fla_backend, "delta_rule", delta_rule_recurrent)  # the kernels' contract, by the step loop
    torch.manual_seed(0)
    layer = make_core(core, 6, hidden_size=8, num_heads=2, **layer_options).double()
    x, starts = torch.randn(5, 3, 6, dtype=F64), resets(5, 3)
    state = tuple(s + 0.1 * torch.randn_like(s) for s in layer.initial_state(3))
    y, states = layer(x, state, starts)
    y_loop, states_loop = layer.forward_loop(x, state, starts)
    assert asked == [(layer.key_dim, layer.head_dim, core == "gated_delta")]
    torch.testing.assert_close(y, y_loop)
    for s, s_loop in zip(states, states_loop, strict=True):
        torch.testing.assert_close(s, s_loop)


# ---------------------------------------------------------------- the adapter against fla's contract
def step_loop_as_fla(q, k, v, *g_beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
                     cu_seqlens):
    """fla's chunk_(gated_)delta_rule contract in varlen mode, computed by the step loop in float64."""
    *g, beta = g_beta
    bounds = cu_seqlens.tolist()
    assert q.shape[0] == 1 and q.dtype == k.dtype == v.dtype == beta.dtype == torch.bfloat16
    assert all(x.dtype == torch.float32 for x in (initial_state, *g))
    assert scale == 1.0 and output_final_state and not use_qk_l2norm_in_kernel
    assert bounds[0] == 0 and bounds[-1] == q.shape[1] and all(a < b for a, b in zip(bounds, bounds[1:]))
    assert initial_state.shape[0] == len(bounds) - 1
    outs, finals = [], []
    for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
        piece = [x[0, a:b].unsqueeze(1).double() for x in (q, k, v, beta, *g)]  # [L, 1, H, ...]
        o, S = delta_rule_recurrent(*piece[:4], initial_state[n:n + 1].double(), None, *piece[4:])
        outs.append(o)
        finals.append(S)
    return torch.cat(outs).transpose(0, 1).to(q.dtype), torch.cat(finals).float()


@pytest.fixture
def fla_contract(monkeypatch):
    """Importable fla modules whose two functions are ``step_loop_as_fla``."""
    for name, function in [("fla", None), ("fla.ops", None), ("fla.ops.delta_rule", "chunk_delta_rule"),
                           ("fla.ops.gated_delta_rule", "chunk_gated_delta_rule")]:
        module = types.ModuleType(name)
        if function:
            setattr(module, function, step_loop_as_fla)
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated_delta"])
def test_adapter_against_fla_contract(fla_contract, gated):
    # inputs are exact in bfloat16, so only the rounding of o (and of its gradient) to bfloat16 remains
    compare_with_step_loop(T, B, H, DK, DV, gated, "cpu", tol=1e-2)


# ---------------------------------------------------------------- the real kernels
@pytest.mark.skipif(not HAS_FLA_CUDA, reason="needs CUDA and flash-linear-attention")
@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated_delta"])
@pytest.mark.parametrize("dk, dv", [(64, 64), (48, 64), (64, 128)], ids=["keys64", "keys48", "values128"])
def test_fla_kernels_against_step_loop(gated, dk, dv):
    # 80 steps cross fla's 64-step chunks; heads as wide as the delta core's default ones (64), keys not a power of
    # two wide (48), and values wider than keys
    reason = fla_backend.refusal(torch.device("cuda"), torch.float32, dk, dv, gated)
    if reason is not None:
        pytest.skip(f"the kernels are not used here: {reason}")
    compare_with_step_loop(80, 3, 2, dk, dv, gated, "cuda", tol=2e-2)
