"""The LSTM, GRU and Elman baselines and the direct fast weight programmer: each step against its
equations written out here, the direct FWP's forward over a sequence with episode starts against its equations
(values and gradients, float64), both sequence forms of the RNNs with episode starts (packed, one library call;
fused, the sequence ops of fwp_rl.ops.rnn) against the step loop (values, final state and gradients, float64), rollout steps of a
population under vmap, and bad options named in the error."""

import math

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from fwp_rl.cores import make_core
from fwp_rl.cores.direct import DirectCore
from fwp_rl.cores.rnn import ElmanCore, GRUCore, LSTMCore

F64 = torch.float64
T, B, D, H = 12, 4, 3, 5
RNNS = ["lstm", "gru", "elman"]


def randn(*shape, seed):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def core(name, **options):
    torch.manual_seed(0)
    return make_core(name, D, **options).double()


def random_state(c, batch=B, seed=1):
    return tuple(s + 0.5 * randn(*s.shape, seed=seed + i) for i, s in enumerate(c.initial_state(batch)))


# ---------------------------------------------------------------- each step against its equations
def lstm_step(c, x, h, cell):
    r = c.rnn
    i, f, g, o = (x @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T + r.bias_hh_l0).chunk(4, dim=-1)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell), cell


def gru_step(c, x, h):
    r = c.rnn
    xr, xz, xn = (x @ r.weight_ih_l0.T + r.bias_ih_l0).chunk(3, dim=-1)
    hr, hz, hn = (h @ r.weight_hh_l0.T + r.bias_hh_l0).chunk(3, dim=-1)
    reset, update = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + reset * hn)
    return (1 - update) * n + update * h


def elman_step(c, x, h):
    r = c.rnn
    return torch.tanh(x @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T + r.bias_hh_l0)


@pytest.mark.parametrize("name", RNNS)
def test_rnn_step_follows_its_equations(name):
    c = core(name, hidden_size=H)
    state = random_state(c)
    x = randn(B, D, seed=5)
    y, new = c.step(x, state)
    if name == "lstm":
        expected = lstm_step(c, x, *state)
    else:
        expected = ((gru_step if name == "gru" else elman_step)(c, x, state[0]),)
    assert y.shape == (B, H) and len(new) == len(expected)
    torch.testing.assert_close(y, expected[0], atol=1e-12, rtol=0)
    for a, b in zip(new, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_rnn_cores_are_the_registered_classes_with_batch_first_states():
    assert [type(core(n)) for n in RNNS] == [LSTMCore, GRUCore, ElmanCore]
    for name, n_states in zip(RNNS, (2, 1, 1)):
        state = make_core(name, D, hidden_size=H).initial_state(B)
        assert len(state) == n_states
        assert all(s.shape == (B, H) and s.dtype == torch.float32 and not s.any() for s in state)


def direct_with(mode, activation, slow_bias, program_weight):
    """A direct core with 1 input, 1 output, 1 slow unit and the given weights (A = 0: h_t = tanh(slow_bias))."""
    c = DirectCore(1, hidden_size=1, slow_size=1, mode=mode, activation=activation).double()
    with torch.no_grad():
        c.slow.weight.zero_()
        c.slow.bias.fill_(slow_bias)
        c.program.weight.copy_(torch.tensor(program_weight, dtype=F64))
        c.program.bias.zero_()
    return c


@pytest.mark.parametrize("activation,f", [("tanh", math.tanh), ("sigmoid", lambda z: 1 / (1 + math.exp(-z))),
                                          ("identity", lambda z: z)], ids=["tanh", "sigmoid", "identity"])
def test_direct_tiny_case_by_hand(activation, f):
    # h = tanh(atanh(0.5)) = 0.5, Delta = [2, 4] * 0.5 = [[1, 2]] (weight, bias of the fast net); x = 0.3.
    x = torch.tensor([[0.3]], dtype=F64)
    c = direct_with("set", activation, math.atanh(0.5), [[2.0], [4.0]])
    state = c.initial_state(1)
    for _ in range(2):  # "set": the same weights every step
        y, state = c.step(x, state)
        assert y.item() == pytest.approx(f(1.0 * 0.3 + 2.0), abs=1e-12)
        assert state[1].flatten().tolist() == pytest.approx([1.0, 2.0], abs=1e-12)
    c = direct_with("additive", activation, math.atanh(0.5), [[2.0], [4.0]])
    state = c.initial_state(1)
    for t in (1, 2, 3):  # "additive": W_t = t * Delta
        y, state = c.step(x, state)
        assert y.item() == pytest.approx(f(t * (1.0 * 0.3 + 2.0)), abs=1e-12)
        assert state[1].flatten().tolist() == pytest.approx([t * 1.0, t * 2.0], abs=1e-12)


@pytest.mark.parametrize("mode,activation", [("set", "tanh"), ("additive", "tanh"), ("additive", "sigmoid"),
                                             ("set", "identity")])
def test_direct_sequence_follows_its_equations(mode, activation):
    """forward over a sequence with episode starts equals the direct FWP's equations written out per step and row
    (values and gradients): h_t = tanh(A [x_t; h_{t-1}] + a), Delta_t = U h_t + u, W_t = Delta_t or W_{t-1} +
    Delta_t, y_t = f(W_t [x_t; 1]), with h and W set back to zero where an episode starts."""
    f = {"tanh": torch.tanh, "sigmoid": lambda z: 1 / (1 + torch.exp(-z)), "identity": lambda z: z}[activation]
    c = core("direct", hidden_size=2, slow_size=4, mode=mode, activation=activation)
    x = randn(T, B, D, seed=7).requires_grad_(True)
    state0 = tuple(s.requires_grad_(True) for s in random_state(c))
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0, 1] = starts[4, 0] = starts[4, 2] = starts[9, 2] = True
    y, state = c(x, state0, starts)

    A, a = c.slow.weight, c.slow.bias
    U, u = c.program.weight, c.program.bias
    ys, ends = [], []
    for b in range(B):
        h, W, row = state0[0][b], state0[1][b], []
        for t in range(T):
            if starts[t, b]:
                h, W = torch.zeros(4, dtype=F64), torch.zeros(2, D + 1, dtype=F64)
            h = torch.tanh(A @ torch.cat([x[t, b], h]) + a)
            delta = (U @ h + u).view(2, D + 1)
            W = W + delta if mode == "additive" else delta
            row.append(f(W @ torch.cat([x[t, b], torch.ones(1, dtype=F64)])))
        ys.append(torch.stack(row))
        ends.append((h, W))
    y_ref = torch.stack(ys, 1)
    state_ref = tuple(torch.stack(parts) for parts in zip(*ends))
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    for s, s_ref in zip(state, state_ref, strict=True):
        torch.testing.assert_close(s, s_ref, atol=1e-12, rtol=0)

    w = [randn(*t.shape, seed=20 + i) for i, t in enumerate((y, *state))]

    def loss(y, state):
        return sum((t * wi).sum() for t, wi in zip((y, *state), w))

    leaves = [x, *state0, *c.parameters()]
    grads = torch.autograd.grad(loss(y, state), leaves, allow_unused=True)
    grads_ref = torch.autograd.grad(loss(y_ref, state_ref), leaves, allow_unused=True)
    for g, g_ref in zip(grads, grads_ref):
        assert (g is None) == (g_ref is None)  # "set" never reads W_{t-1}
        if g is not None:
            torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=0)
    assert (grads[2] is None) == (mode == "set")


def test_direct_default_size_suits_evolution():
    c = make_core("direct", 3)
    assert c.output_size == 1 and sum(p.numel() for p in c.parameters()) == 69
    assert [s.shape for s in c.initial_state(B)] == [(B, 5), (B, 1, 4)]


class Stepper(torch.nn.Module):
    """Calls ``core.step`` as its forward, so that torch.func.functional_call can swap the parameters."""

    def __init__(self, core):
        super().__init__()
        self.core = core

    def forward(self, x, state, start):
        return self.core.step(x, state, start)


@pytest.mark.parametrize("name", RNNS + ["direct"])
def test_population_steps_under_vmap(name):
    """Rollout steps of a population of parameter vectors in one call (how neuroevolution evaluates a
    population) equal the steps of each member alone."""
    cores = [core(name, hidden_size=2) for _ in range(3)]
    for i, c in enumerate(cores):
        torch.manual_seed(10 + i)
        for p in c.parameters():
            torch.nn.init.normal_(p, std=0.5)
    params, buffers = stack_module_state([Stepper(c) for c in cores])
    stepper = Stepper(cores[0])
    x = randn(T, B, D, seed=8)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[5, 1] = True
    state0 = random_state(cores[0])

    def rollout(p, b):
        state, ys = state0, []
        for t in range(T):
            y, state = functional_call(stepper, (p, b), (x[t], state, starts[t]))
            ys.append(y)
        return torch.stack(ys), state

    y_pop, s_pop = vmap(rollout)(params, buffers)
    for i, c in enumerate(cores):
        y, s = c.forward_loop(x, state0, starts)
        torch.testing.assert_close(y_pop[i], y, atol=1e-12, rtol=0)
        for a, b in zip(s_pop, s):
            torch.testing.assert_close(a[i], b, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- sequence forms against the step loop
FORMS = ["packed", "fused"]


def count_library_calls(c):
    calls = []
    c.rnn.register_forward_hook(lambda *_: calls.append(1))
    return calls


def run_form(c, form, x, state, starts):
    return (c._run_packed if form == "packed" else c._run_fused)(x, state, starts)


def assert_equals_step_loop(c, form, x, state0, starts):
    """Values, final state and gradients (inputs, initial state, parameters) of the form equal the step loop's."""
    x = x.requires_grad_(True)
    state0 = tuple(s.requires_grad_(True) for s in state0)
    y, s = run_form(c, form, x, state0, starts)
    y_loop, s_loop = c.forward_loop(x, state0, starts)
    assert y.shape == y_loop.shape and [a.shape for a in s] == [b.shape for b in s_loop]
    torch.testing.assert_close(y, y_loop, atol=1e-12, rtol=0)
    for a, b in zip(s, s_loop, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)

    w = [randn(*y.shape, seed=3)] + [randn(*a.shape, seed=4 + i) for i, a in enumerate(s)]

    def loss(y, s):
        return (y * w[0]).sum() + sum((a * wi).sum() for a, wi in zip(s, w[1:]))

    leaves = [x, *state0, *c.parameters()]
    grads = torch.autograd.grad(loss(y, s), leaves)
    grads_loop = torch.autograd.grad(loss(y_loop, s_loop), leaves)
    for g, gl in zip(grads, grads_loop, strict=True):
        torch.testing.assert_close(g, gl, atol=1e-10, rtol=0)
    return grads


def mixed_starts(seed=0):
    """[T, 6] episode starts: rows with no reset, resets at t = 0 and at the last step, a reset every step,
    many random resets, a reset at t = 0 only, one mid-sequence reset."""
    starts = torch.zeros(T, 6, dtype=torch.bool)
    starts[0, 1] = starts[T - 1, 1] = True
    starts[:, 2] = True
    starts[:, 3] = torch.rand(T, generator=torch.Generator().manual_seed(seed)) < 0.5
    starts[0, 4] = True
    starts[T // 2, 5] = True
    return starts


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", RNNS)
def test_rnn_forms_with_resets_equal_step_loop(name, form):
    c = core(name, hidden_size=H)
    starts = mixed_starts()
    grads = assert_equals_step_loop(c, form, randn(T, 6, D, seed=2), random_state(c, batch=6), starts)
    initial_state_reaches = grads[1].abs().sum(dim=1) > 0  # before each row's first reset, and only there
    assert initial_state_reaches.tolist() == [True, False, False, not starts[0, 3].item(), False, True]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", RNNS)
def test_rnn_forms_with_many_resets_equal_step_loop(name, form):
    c = core(name, hidden_size=H)
    for seed, rate in enumerate((0.1, 0.5, 0.9)):
        starts = torch.rand(T, 8, generator=torch.Generator().manual_seed(seed)) < rate
        assert_equals_step_loop(c, form, randn(T, 8, D, seed=seed), random_state(c, batch=8, seed=seed), starts)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", RNNS)
def test_rnn_forms_with_batch_1_equal_step_loop(name, form):
    c = core(name, hidden_size=H)
    for steps in ([0, 5, T - 1], [3], list(range(T))):
        starts = torch.zeros(T, 1, dtype=torch.bool)
        starts[steps] = True
        assert_equals_step_loop(c, form, randn(T, 1, D, seed=2), random_state(c, batch=1), starts)


@pytest.mark.parametrize("name", RNNS)
def test_rnn_packed_form_is_one_library_call(name):
    c = core(name, hidden_size=H)
    calls = count_library_calls(c)
    run_form(c, "packed", randn(T, 6, D, seed=2), random_state(c, batch=6), mixed_starts())
    assert len(calls) == 1


@pytest.mark.parametrize("name", RNNS)
def test_rnn_forward_on_the_cpu_runs_resets_in_the_fused_form_and_none_in_the_library_layer(name):
    c = core(name, hidden_size=H)
    starts = torch.zeros(T, B, dtype=torch.bool)
    x, state0 = randn(T, B, D, seed=2), random_state(c)
    calls = count_library_calls(c)
    c(x, state0, starts)
    assert len(calls) == 1  # no start after t = 0: the library layer
    starts[0, 1] = starts[4, 0] = starts[4, 2] = starts[9, :] = starts[11, 3] = True
    y, s = c(x, state0, starts)
    assert len(calls) == 1  # starts inside: the fused form
    y_fused, s_fused = c._run_fused(x, state0, starts)
    torch.testing.assert_close(y, y_fused, atol=0, rtol=0)
    for a, b in zip(s, s_fused, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("name", RNNS)
def test_rnn_forward_without_starts_after_the_first_step_is_one_library_call(name):
    c = core(name, hidden_size=H)
    x, state0 = randn(T, B, D, seed=2), random_state(c)
    first_only = torch.zeros(T, B, dtype=torch.bool)
    first_only[0, 1] = True
    calls = count_library_calls(c)
    for starts in (None, torch.zeros(T, B, dtype=torch.bool), first_only):
        y, s = c(x, state0, starts)
        y_loop, s_loop = c.forward_loop(x, state0, starts)
        torch.testing.assert_close(y, y_loop, atol=1e-12, rtol=0)
        for a, b in zip(s, s_loop, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert len(calls) == 3  # one per forward; the step loop runs the cell's equations


# ---------------------------------------------------------------- bad options
@pytest.mark.parametrize("name,option,value,allowed", [
    ("lstm", "hidden_size", 0, "integer >= 1"),
    ("gru", "hidden_size", 2.5, "integer >= 1"),
    ("elman", "hidden_size", True, "integer >= 1"),
    ("direct", "hidden_size", -1, "integer >= 1"),
    ("direct", "slow_size", 0, "integer >= 1"),
    ("direct", "mode", "multiplicative", "'set', 'additive'"),
    ("direct", "activation", "relu", "'tanh', 'sigmoid', 'identity'"),
])
def test_bad_options_are_named(name, option, value, allowed):
    with pytest.raises(ValueError, match=rf"{option}={value!r}.*{allowed}"):
        make_core(name, D, **{option: value})

