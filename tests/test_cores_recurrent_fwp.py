"""The recurrent fast weight programmers (RDN, Delta RNN, Delta LSTM) and the SRWM: each rule on a tiny case
computed by hand, each core's forward over a sequence with episode starts against its equations written out per
step and head with explicit matrices (values and gradients, float64), the SRWM's learned initial matrix, and bad
options named in the error."""

import math

import pytest
import torch

from fwp_rl.cores import make_core
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


# ---------------------------------------------------------------- the cores over sequences, head by head
# Each reference below is the core's equations written out per step, batch row and head, with the fast weight
# matrices as the equations have them (W [dv, dk], not the stored W^T), the resets at episode starts done by
# hand, and the feature maps written here: none of it calls the cores' step functions or the ops.
D_IN, HIDDEN, HEADS, BATCH, STEPS = 3, 4, 2, 3, 7


def small(name, **options):
    torch.manual_seed(0)
    return make_core(name, D_IN, hidden_size=HIDDEN, num_heads=HEADS, **options).double()


def phi_of(name, sum_norm=False, nu=1):
    """The feature map ``name`` over a vector, written from its definition."""
    def phi(u):
        if name == "softmax":
            out = torch.exp(u - u.max()) / torch.exp(u - u.max()).sum()
        elif name == "elu":
            out = torch.where(u > 0, u + 1, torch.exp(u))
        elif name == "dpfp":
            r = torch.cat([u.clamp(min=0), (-u).clamp(min=0)])
            out = torch.cat([r * torch.roll(r, i) for i in range(1, nu + 1)])
        else:
            raise AssertionError(name)
        return out / (out.sum() + 1e-5) if sum_norm else out
    return phi


def softmax(u):
    return phi_of("softmax")(u)


def sigmoid(u):
    return 1 / (1 + torch.exp(-u))


def delta_write(W, key, value, beta):
    """W [dv, dk] after the delta rule: W + beta (v - W k) k^T."""
    return W + beta * torch.outer(value - W @ key, key)


def linear(layer, x):
    return layer.weight @ x + layer.bias


def heads(vector, d):
    """A projection's part [H * d] -> the head vectors."""
    return [vector[h * d:(h + 1) * d] for h in range(HEADS)]


def rdn_reference(core, x, state0, starts, phi, beta_max):
    """RDN: [q; k; v; b] = P x_t + R^T tanh(y_{t-1}), W_t = W_{t-1} + beta (v - W phi(k)) phi(k)^T, y_t = W_t phi(q)."""
    d, dk = core.head_dim, core.key_dim
    S0, y0 = state0
    outs, S_end, y_end = [], [], []
    for b in range(x.shape[1]):
        W = [S0[b, h].T for h in range(HEADS)]
        y_prev = [y0[b, h] for h in range(HEADS)]
        row = []
        for t in range(x.shape[0]):
            if starts[t, b]:
                W = [torch.zeros(d, dk, dtype=F64) for _ in range(HEADS)]
                y_prev = [torch.zeros(d, dtype=F64) for _ in range(HEADS)]
            p = linear(core.proj, x[t, b])
            q, k, v = (heads(p[i * HEADS * d:(i + 1) * HEADS * d], d) for i in range(3))
            rate = p[3 * HEADS * d:]
            for h in range(HEADS):
                r = core.rec_weight[h].T @ torch.tanh(y_prev[h])       # [3d + 1]
                key = phi(k[h] + r[d:2 * d])
                W[h] = delta_write(W[h], key, v[h] + r[2 * d:3 * d], beta_max * sigmoid(rate[h] + r[-1]))
                y_prev[h] = W[h] @ phi(q[h] + r[:d])
            row.append(linear(core.out_proj, torch.cat(y_prev)))
        outs.append(torch.stack(row))
        S_end.append(torch.stack([w.T for w in W]))
        y_end.append(torch.stack(y_prev))
    return torch.stack(outs, 1), (torch.stack(S_end), torch.stack(y_end))


def delta_fast_net_reference(core, x, state0, starts, phi, beta_max, lstm):
    """Delta RNN (one gate): y_t = W_t phi(q_t) + R_t softmax(y_{t-1}). Delta LSTM (gates i, u, o): a^g_t the same
    per gate, c_t = i u + (1 - i) c_{t-1}, y_t = o c_t. W and R: delta rules with keys phi(k) and softmax(kr)."""
    G, d, dk = core.num_gates, core.head_dim, core.key_dim
    W0, R0, y0 = state0[:3]
    outs, ends = [], []
    for b in range(x.shape[1]):
        W = [[W0[b, g, h].T if lstm else W0[b, h].T for h in range(HEADS)] for g in range(G)]
        R = [[R0[b, g, h].T if lstm else R0[b, h].T for h in range(HEADS)] for g in range(G)]
        y_prev = [y0[b, h] for h in range(HEADS)]
        c_prev = [state0[3][b, h] for h in range(HEADS)] if lstm else None
        row = []
        for t in range(x.shape[0]):
            if starts[t, b]:
                W = [[torch.zeros(d, dk, dtype=F64) for _ in range(HEADS)] for _ in range(G)]
                R = [[torch.zeros(d, d, dtype=F64) for _ in range(HEADS)] for _ in range(G)]
                y_prev = [torch.zeros(d, dtype=F64) for _ in range(HEADS)]
                c_prev = [torch.zeros(d, dtype=F64) for _ in range(HEADS)] if lstm else None
            p = linear(core.proj, x[t, b])
            n = G * HEADS * d
            q, k, v, kr, vr = (p[i * n:(i + 1) * n].view(G, HEADS, d) for i in range(5))
            rate, rate_r = (p[5 * n + i * G * HEADS:5 * n + (i + 1) * G * HEADS].view(G, HEADS) for i in range(2))
            y = []
            for h in range(HEADS):
                a = []
                for g in range(G):
                    W[g][h] = delta_write(W[g][h], phi(k[g, h]), v[g, h], beta_max * sigmoid(rate[g, h]))
                    R[g][h] = delta_write(R[g][h], softmax(kr[g, h]), vr[g, h], beta_max * sigmoid(rate_r[g, h]))
                    a.append(W[g][h] @ phi(q[g, h]) + R[g][h] @ softmax(y_prev[h]))
                if lstm:
                    i, u, o = sigmoid(a[0]), a[1], sigmoid(a[2])
                    c_prev[h] = i * u + (1 - i) * c_prev[h]
                    y.append(o * c_prev[h])
                else:
                    y.append(a[0])
            y_prev = y
            row.append(linear(core.out_proj, torch.cat(y)))
        outs.append(torch.stack(row))
        Ws = torch.stack([torch.stack([w.T for w in W[g]]) for g in range(G)])
        Rs = torch.stack([torch.stack([r.T for r in R[g]]) for g in range(G)])
        end = [Ws if lstm else Ws[0], Rs if lstm else Rs[0], torch.stack(y_prev)]
        ends.append(end + ([torch.stack(c_prev)] if lstm else []))
    return torch.stack(outs, 1), tuple(torch.stack(parts) for parts in zip(*ends))


def srwm_reference(core, x, state0, starts, phi):
    """SRWM: [y; k; q; b] = W_{t-1} phi(x_t), W_t = W_{t-1} + sigmoid(b) (W phi(q) - W phi(k)) phi(k)^T; the memory
    restarts from the learned W_0."""
    d = core.head_dim
    (S0,) = state0
    outs, ends = [], []
    for b in range(x.shape[1]):
        W = [S0[b, h].T for h in range(HEADS)]                        # [3d + 1, dk]
        row = []
        for t in range(x.shape[0]):
            if starts[t, b]:
                W = [core.initial_weights[h].T for h in range(HEADS)]
            y = []
            for h, xh in enumerate(heads(linear(core.in_proj, x[t, b]), d)):
                o = W[h] @ phi(xh)
                key, query = phi(o[d:2 * d]), phi(o[2 * d:3 * d])
                W[h] = W[h] + sigmoid(o[-1]) * torch.outer(W[h] @ query - W[h] @ key, key)
                y.append(o[:d])
            row.append(linear(core.out_proj, torch.cat(y)))
        outs.append(torch.stack(row))
        ends.append(torch.stack([w.T for w in W]))
    return torch.stack(outs, 1), (torch.stack(ends),)


REFERENCES = [
    ("rdn", {}, lambda c, *a: rdn_reference(c, *a, phi_of("softmax"), 1.0)),
    ("rdn", dict(feature_map="elu", sum_norm=True, beta_max=1.5),
     lambda c, *a: rdn_reference(c, *a, phi_of("elu", sum_norm=True), 1.5)),
    ("rdn", dict(feature_map="dpfp", dpfp_nu=2), lambda c, *a: rdn_reference(c, *a, phi_of("dpfp", nu=2), 1.0)),
    ("delta_rnn", {}, lambda c, *a: delta_fast_net_reference(c, *a, phi_of("softmax"), 1.0, lstm=False)),
    ("delta_rnn", dict(feature_map="dpfp", beta_max=2.0),
     lambda c, *a: delta_fast_net_reference(c, *a, phi_of("dpfp"), 2.0, lstm=False)),
    ("delta_lstm", {}, lambda c, *a: delta_fast_net_reference(c, *a, phi_of("elu", sum_norm=True), 1.0, lstm=True)),
    ("delta_lstm", dict(feature_map="softmax", sum_norm=False, beta_max=1.5),
     lambda c, *a: delta_fast_net_reference(c, *a, phi_of("softmax"), 1.5, lstm=True)),
    ("srwm", {}, lambda c, *a: srwm_reference(c, *a, phi_of("softmax"))),
    ("srwm", dict(feature_map="dpfp", dpfp_nu=2), lambda c, *a: srwm_reference(c, *a, phi_of("dpfp", nu=2))),
]
REFERENCE_IDS = ["rdn", "rdn-elu-beta1.5", "rdn-dpfp", "delta_rnn", "delta_rnn-dpfp-beta2", "delta_lstm",
                 "delta_lstm-softmax-beta1.5", "srwm", "srwm-dpfp"]


def assert_sequence_matches(core, reference, seed=1):
    """core(x, state0, starts) against ``reference`` on a sequence with episode starts at its first step and inside
    it, from a random state: outputs, final state and the gradients of a random weighting of them with respect to
    the inputs, the initial state and every parameter (float64)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(STEPS, BATCH, D_IN, dtype=F64, generator=g).requires_grad_(True)
    state0 = tuple((s + 0.3 * torch.randn(s.shape, dtype=F64, generator=g)).requires_grad_(True)
                   for s in core.initial_state(BATCH))
    starts = torch.zeros(STEPS, BATCH, dtype=torch.bool)
    starts[0, 1] = starts[3, 0] = starts[3, 2] = starts[5, 2] = True  # row 0: one start; row 1: only at t = 0
    y, state = core(x, state0, starts)
    y_ref, state_ref = reference(core, x, state0, starts)
    assert y.shape == y_ref.shape == (STEPS, BATCH, HIDDEN) and len(state) == len(state_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    for a, b in zip(state, state_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)

    weights = [torch.randn(u.shape, dtype=F64, generator=g) for u in (y, *state)]

    def loss(y, state):
        return sum((u * w).sum() for u, w in zip((y, *state), weights))

    leaves = [x, *state0, *core.parameters()]
    grads = torch.autograd.grad(loss(y, state), leaves)
    grads_ref = torch.autograd.grad(loss(y_ref, state_ref), leaves)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
    assert grads[0].abs().sum() > 0 and any(gr.abs().sum() > 0 for gr in grads[1:1 + len(state0)])


@pytest.mark.parametrize("name,options,reference", REFERENCES, ids=REFERENCE_IDS)
def test_sequence_equals_the_equations_written_per_head(name, options, reference):
    """forward over a sequence with resets equals the core's equations written out per step, row and head
    (values and gradients): a wrong sign, gate, feature map, key or reset in the core's rule fails here."""
    assert_sequence_matches(small(name, **options), reference)


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
