"""The recurrent fast weight programmers (RDN, Delta RNN, Delta LSTM) and the SRWM: each rule on a tiny case
computed by hand, each core's wiring against the equations written out per head with explicit matrices,
the SRWM's learned initial matrix, and bad options named in the error."""

import math

import pytest
import torch

from fwp_rl.cores import make_core
from fwp_rl.ops.feature_maps import feature_map
from fwp_rl.ops.recurrent_fwp import delta_lstm_step, delta_rnn_step, rdn_step
from fwp_rl.ops.srwm import srwm_step

F64 = torch.float64
NAMES = ("rdn", "delta_rnn", "delta_lstm", "srwm")


def t(values, *shape):
    """A float64 tensor from nested lists, viewed as ``shape`` (default [1, 1, len]: batch 1, head 1)."""
    x = torch.tensor(values, dtype=F64)
    return x.view(*shape) if shape else x.view(1, 1, -1)


def identity(x):
    return x


# ---------------------------------------------------------------- the rules, by hand
def test_rdn_rule_by_hand():
    # tanh(y_prev) = [0.5, 0]: only R's first row counts, at half weight.
    y_prev = t([math.atanh(0.5), 0.0])
    R = t([[2, 0, 2, -2, 2, 4, 0],      # adds q: [1, 0], k: [1, -1], v: [1, 2], b: 0
           [7, 7, 7, 7, 7, 7, 7]], 1, 2, 7)
    q, k, v, b = t([1, 0]), t([0, 1]), t([1, 1]), torch.zeros(1, 1, dtype=F64)
    S = torch.eye(2, dtype=F64).view(1, 1, 2, 2)  # W_{t-1} = I

    def double(x):
        return 2 * x

    y, S = rdn_step(q, k, v, b, R, y_prev, S, double)
    # q = [2, 0], k = [1, 0], v = [2, 3], beta = sigmoid(0) = 1/2; phi(q) = [4, 0], phi(k) = [2, 0]
    # W phi(k) = [2, 0];  W_t^T = I + 1/2 [2, 0] (x) ([2, 3] - [2, 0]) = [[1, 3], [0, 1]]
    assert torch.allclose(S[0, 0], t([[1, 3], [0, 1]], 2, 2), atol=1e-12)
    assert torch.allclose(y.flatten(), t([4, 12]).flatten(), atol=1e-12)  # W_t phi(q)

    # beta_max = 2 doubles the rate: beta = 1, W_t^T = I + [2, 0] (x) [0, 3]
    _, S2 = rdn_step(q, k, v, b, R, y_prev, torch.eye(2, dtype=F64).view(1, 1, 2, 2), double, beta_max=2.0)
    assert torch.allclose(S2[0, 0], t([[1, 6], [0, 1]], 2, 2), atol=1e-12)


def test_delta_rnn_recurrent_part_by_hand():
    y_prev = t([math.log(3.0), 0.0])          # softmax(y_prev) = [3/4, 1/4]
    R = torch.eye(2, dtype=F64).view(1, 1, 2, 2)
    kr, vr, beta_r = t([1, 0]), t([0, 2]), torch.full((1, 1), 0.5, dtype=F64)
    z = t([1, -1])                             # W_t phi(q_t), the feed-forward part
    y, R = delta_rnn_step(z, kr, vr, beta_r, R, y_prev)
    # R kr = [1, 0];  R_t^T = I + 1/2 [1, 0] (x) ([0, 2] - [1, 0]) = [[0.5, 1], [0, 1]]
    assert torch.allclose(R[0, 0], t([[0.5, 1], [0, 1]], 2, 2), atol=1e-12)
    # y = z + R_t softmax(y_prev) = [1, -1] + 3/4 [0.5, 1] + 1/4 [0, 1]
    assert torch.allclose(y.flatten(), t([1.375, 0.0]).flatten(), atol=1e-12)


def test_delta_lstm_recurrent_part_by_hand():
    # One head, d = 2, gates stacked i, u, o. y_prev = 0: softmax(y_prev) = [1/2, 1/2].
    y_prev, c_prev = t([0, 0]), t([4, -4])
    R = torch.zeros(1, 3, 1, 2, 2, dtype=F64)
    kr = t([[1, 0]] * 3, 1, 3, 1, 2)
    vr = t([[0, 2], [2, 4], [0, 0]], 1, 3, 1, 2)
    beta_r = torch.ones(1, 3, 1, dtype=F64)    # R^g_t^T = [1, 0] (x) vr^g: R^g_t softmax(y_prev) = vr^g / 2
    z = t([[0, math.log(3.0) - 1], [1, -1], [math.log(3.0), 0]], 1, 3, 1, 2)
    y, c, R = delta_lstm_step(z, kr, vr, beta_r, R, y_prev, c_prev)
    # a^i = [0, ln 3] -> i = [1/2, 3/4];  u = a^u = [1, -1] + [1, 2] = [2, 1];  a^o = [ln 3, 0] -> o = [3/4, 1/2]
    # c = i u + (1 - i) c_prev = [1 + 2, 0.75 - 1];  y = o c
    assert torch.allclose(c.flatten(), t([3.0, -0.25]).flatten(), atol=1e-12)
    assert torch.allclose(y.flatten(), t([2.25, -0.125]).flatten(), atol=1e-12)
    assert torch.allclose(R[0, 1, 0], t([[2, 4], [0, 0]], 2, 2), atol=1e-12)


def test_srwm_rule_by_hand():
    # d = 2, phi = identity; S = W^T has rows indexed by phi(x) and columns y | k | q | b.
    S = t([[3, -1, 0, 1, 1, 0, 0],
           [5, 5, 2, 2, 2, 2, 2]], 1, 1, 2, 7)
    y, S1 = srwm_step(t([1, 0]), S, identity)
    # W phi(x) = row 0: y = [3, -1], k = [0, 1], q = [1, 0], rate sigmoid(0) = 1/2
    assert torch.equal(y.flatten(), t([3, -1]).flatten())
    # v = W q = row 0, v_bar = W k = row 1; only row 1 (the key's) changes, by (v - v_bar) / 2
    assert torch.equal(S1[0, 0], t([[3, -1, 0, 1, 1, 0, 0], [4, 2, 1, 1.5, 1.5, 1, 1]], 2, 7))
    y2, _ = srwm_step(t([0, 1]), S1, identity)
    assert torch.equal(y2.flatten(), t([4, 2]).flatten())  # the next output reads the rewritten matrix


# ---------------------------------------------------------------- the cores' wiring, head by head
D_IN, HIDDEN, HEADS, BATCH = 3, 4, 2, 2


def small(name, **options):
    torch.manual_seed(0)
    return make_core(name, D_IN, hidden_size=HIDDEN, num_heads=HEADS, **options).double()


def random_inputs(core, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, D_IN, dtype=F64, generator=g)
    state = tuple(s + 0.3 * torch.randn(s.shape, dtype=F64, generator=g) for s in core.initial_state(BATCH))
    return x, state


def delta_write(W, key, value, beta):
    """W [dv, dk] (not transposed) after the delta rule: W + beta (v - W k) k^T."""
    return W + beta * torch.outer(value - W @ key, key)


def pieces(core, x, sizes):
    """The core's fused projection of x, cut into ``sizes``."""
    return (core.proj.weight @ x + core.proj.bias).split(sizes)


def test_rdn_core_wiring():
    core = small("rdn", feature_map="elu", sum_norm=True, beta_max=1.5)
    x, (S, y_prev) = random_inputs(core)
    out, (S_new, y_new) = core.step(x, (S, y_prev))
    d = core.head_dim

    def phi(u):
        return feature_map(u, "elu", sum_norm=True)

    for b in range(BATCH):
        q, k, v, beta = (p.view(HEADS, -1) for p in pieces(core, x[b], [HEADS * d] * 3 + [HEADS]))
        ys = []
        for h in range(HEADS):
            r = core.rec_weight[h].T @ torch.tanh(y_prev[b, h])     # [3d + 1]
            qh, kh, vh = phi(q[h] + r[:d]), phi(k[h] + r[d:2 * d]), v[h] + r[2 * d:3 * d]
            W = delta_write(S[b, h].T, kh, vh, 1.5 * torch.sigmoid(beta[h, 0] + r[-1]))
            assert torch.allclose(S_new[b, h], W.T, atol=1e-12)
            ys.append(W @ qh)
        assert torch.allclose(y_new[b], torch.stack(ys), atol=1e-12)
        assert torch.allclose(out[b], core.out_proj(torch.cat(ys)), atol=1e-12)


def test_delta_rnn_core_wiring():
    core = small("delta_rnn")
    x, (Wt, Rt, y_prev) = random_inputs(core)
    out, (W_new, R_new, y_new) = core.step(x, (Wt, Rt, y_prev))
    d = core.head_dim
    for b in range(BATCH):
        q, k, v, kr, vr, beta, beta_r = (p.view(HEADS, -1) for p in pieces(core, x[b], [HEADS * d] * 5 + [HEADS] * 2))
        for h in range(HEADS):
            W = delta_write(Wt[b, h].T, torch.softmax(k[h], 0), v[h], torch.sigmoid(beta[h, 0]))
            R = delta_write(Rt[b, h].T, torch.softmax(kr[h], 0), vr[h], torch.sigmoid(beta_r[h, 0]))
            y = W @ torch.softmax(q[h], 0) + R @ torch.softmax(y_prev[b, h], 0)
            assert torch.allclose(W_new[b, h], W.T, atol=1e-12)
            assert torch.allclose(R_new[b, h], R.T, atol=1e-12)
            assert torch.allclose(y_new[b, h], y, atol=1e-12)
        assert torch.allclose(out[b], core.out_proj(y_new[b].flatten()), atol=1e-12)


def test_delta_lstm_core_wiring():
    core = small("delta_lstm")  # phi: ELU+1 with sum normalization by default
    x, (Wt, Rt, y_prev, c_prev) = random_inputs(core)
    out, (W_new, R_new, y_new, c_new) = core.step(x, (Wt, Rt, y_prev, c_prev))
    d, G = core.head_dim, 3

    def phi(u):
        return feature_map(u, "elu", sum_norm=True)

    for b in range(BATCH):
        q, k, v, kr, vr, beta, beta_r = (
            p.view(G, HEADS, -1) for p in pieces(core, x[b], [G * HEADS * d] * 5 + [G * HEADS] * 2))
        for h in range(HEADS):
            a = []
            for g in range(G):  # i, u, o
                W = delta_write(Wt[b, g, h].T, phi(k[g, h]), v[g, h], torch.sigmoid(beta[g, h, 0]))
                R = delta_write(Rt[b, g, h].T, torch.softmax(kr[g, h], 0), vr[g, h], torch.sigmoid(beta_r[g, h, 0]))
                assert torch.allclose(W_new[b, g, h], W.T, atol=1e-12)
                assert torch.allclose(R_new[b, g, h], R.T, atol=1e-12)
                a.append(W @ phi(q[g, h]) + R @ torch.softmax(y_prev[b, h], 0))
            i, u, o = torch.sigmoid(a[0]), a[1], torch.sigmoid(a[2])
            c = i * u + (1 - i) * c_prev[b, h]
            assert torch.allclose(c_new[b, h], c, atol=1e-12)
            assert torch.allclose(y_new[b, h], o * c, atol=1e-12)
        assert torch.allclose(out[b], core.out_proj(y_new[b].flatten()), atol=1e-12)


def test_srwm_core_wiring():
    core = small("srwm")
    x, (S,) = random_inputs(core)
    out, (S_new,) = core.step(x, (S,))
    d = core.head_dim
    heads_in = (core.in_proj.weight @ x.T).T + core.in_proj.bias   # [B, H * d]
    for b in range(BATCH):
        ys = []
        for h in range(HEADS):
            W = S[b, h].T                                          # [3d + 1, d]
            o = W @ torch.softmax(heads_in[b, h * d:(h + 1) * d], 0)
            y, k, q, rate = o[:d], torch.softmax(o[d:2 * d], 0), torch.softmax(o[2 * d:3 * d], 0), torch.sigmoid(o[-1])
            W_next = W + rate * torch.outer(W @ q - W @ k, k)
            assert torch.allclose(S_new[b, h], W_next.T, atol=1e-12)
            ys.append(y)
        assert torch.allclose(out[b], core.out_proj(torch.cat(ys)), atol=1e-12)


# ---------------------------------------------------------------- the SRWM's learned initial matrix
def test_srwm_starts_and_restarts_from_its_learned_initial_matrix():
    core = small("srwm")
    (S0,) = core.initial_state(BATCH)
    assert torch.equal(S0, core.initial_weights.expand(BATCH, -1, -1, -1))
    x = torch.randn(5, BATCH, D_IN, dtype=F64, generator=torch.Generator().manual_seed(4))
    starts = torch.zeros(5, BATCH, dtype=torch.bool)
    starts[3, 0] = True
    y, _ = core(x, (S0,), starts)
    y_fresh, _ = core(x[3:, :1], core.initial_state(1))
    assert torch.allclose(y[3:, :1], y_fresh, atol=1e-12)  # the episode restarts from W_0, not from zero
    # gradients reach W_0 through the start of the sequence and through the restart inside it
    (g_all,) = torch.autograd.grad(y[-1, 0].sum(), [core.initial_weights])
    (g_restart,) = torch.autograd.grad(y_fresh[-1, 0].sum(), [core.initial_weights])
    assert torch.allclose(g_all, g_restart, atol=1e-12) and g_all.abs().sum() > 0


def test_srwm_with_dpfp_keys():
    core = small("srwm", feature_map="dpfp", dpfp_nu=2)
    (S0,) = core.initial_state(BATCH)
    assert S0.shape == (BATCH, HEADS, 2 * 2 * core.head_dim, 3 * core.head_dim + 1)
    y, (S,) = core(torch.randn(4, BATCH, D_IN, dtype=F64), (S0,))
    assert y.shape == (4, BATCH, HIDDEN) and S.shape == S0.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_stacked_as_residual_blocks(name):
    torch.manual_seed(0)
    core = make_core(name, D_IN, hidden_size=HIDDEN, num_heads=HEADS, num_layers=2, feedforward=2)
    y, state = core(torch.randn(3, BATCH, D_IN), core.initial_state(BATCH))
    assert y.shape == (3, BATCH, HIDDEN) and len(state) == 2 * len(core.layers[0].initial_state(1))


# ---------------------------------------------------------------- bad options
BAD_OPTIONS = [
    ({"hidden_size": 0}, r"hidden_size=0 is not allowed"),
    ({"num_heads": 0}, r"num_heads=0 is not allowed"),
    ({"head_dim": 0}, r"head_dim=0 is not allowed"),
    ({"hidden_size": 10, "num_heads": 4}, r"hidden_size=10 is not divisible by num_heads=4"),
    ({"feature_map": "relu"}, r"feature_map='relu' is not known; allowed: dpfp, elu"),
    ({"feature_map": "l2", "sum_norm": True}, r"sum_norm=True needs a non-negative feature map"),
    ({"feature_map": "dpfp", "dpfp_nu": 0}, r"dpfp_nu=0 must be an integer >= 1"),
    ({"chunk_size": 8}, r"no option chunk_size; its options are: hidden_size"),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("options,message", BAD_OPTIONS, ids=[
    "hidden_size", "num_heads", "head_dim", "heads_divide", "feature_map", "sum_norm", "dpfp_nu", "unknown"])
def test_bad_options_are_named(name, options, message):
    with pytest.raises(ValueError, match=message):
        make_core(name, D_IN, **options)


@pytest.mark.parametrize("name", ("rdn", "delta_rnn", "delta_lstm", "delta", "gated_delta"))
@pytest.mark.parametrize("value", [0, 2.5, -1.0, True, "1"])
def test_bad_beta_max_is_named(name, value):
    with pytest.raises(ValueError, match=rf"beta_max={value!r} is not allowed: it must be in \(0, 2\]"):
        make_core(name, D_IN, beta_max=value)


def test_srwm_has_no_learning_rate_scale():
    with pytest.raises(ValueError, match="core 'srwm' has no option beta_max"):
        make_core("srwm", D_IN, beta_max=2.0)
