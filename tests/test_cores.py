"""Every registered core against the one interface: the sequence form of each core that has one (and of the
residual stacks) over a sequence with episode starts inside equals the step loop (values and gradients, float64),
state carried across sequences continues exactly, nothing is truncated per step, and bad input gets a clear
error. The layer options of delta and gated_delta (short convolution, SiLU + L2 feature map, gated output norm, beta's
initial bias), alone and together, pass the same tests with denser resets."""

import pytest
import torch

from fwp_rl.cores import CORES, MemoryCore, core_class, core_options, make_core
from fwp_rl.cores.fast_weights import NORM_EPS
from fwp_rl.ops import inplace

F64 = torch.float64
T, B, D = 13, 3, 5


def small_core(name, **extra):
    """Core ``name`` with small sizes, in float64."""
    wanted = {"hidden_size": 8, "num_heads": 2, "chunk_size": 4, **extra}
    options = {k: v for k, v in wanted.items() if k in core_options(name)}
    torch.manual_seed(0)
    return make_core(name, D, **options).double()


def random_state(core, batch=B, seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(s + 0.1 * torch.randn(s.shape, dtype=s.dtype, generator=g) for s in core.initial_state(batch))


def sequence(seed=2, starts_p=0.2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, D, dtype=F64, generator=g)
    starts = torch.rand(T, B, generator=g) < starts_p
    starts[0, 1] = True
    starts[6:8, 2] = True
    return x, starts


# Every core has a sequence form of its own, each tested here against its step loop; the step loop checkpointed
# (``MemoryCore.forward_checkpointed``, what a core without one would run, and what `fwp-rl bench cores` times the
# step-loop cores' own forms against) is tested on those cores.
CHECKPOINTED = ("rdn", "delta_rnn", "delta_lstm", "srwm", "direct")
CONFIGS = [(name, {}) for name in CORES] + [
    (name, {"num_layers": 2, "feedforward": 2}) for name in ("lstm", "linear", "delta", "gated_delta", "rdn")
] + [(name, {"error_gain": 3.0}) for name in ("delta", "gated_delta")] + [
    (name, {"beta_from_input": False, "error_gain": 3.0}) for name in ("delta", "gated_delta")]
IDS = [name + ("-stack" if "num_layers" in extra else "-constant_beta" if "beta_from_input" in extra
               else "-error_gain" if extra else "") for name, extra in CONFIGS]


@pytest.mark.parametrize("name,extra", CONFIGS, ids=IDS)
def test_forward_equals_step_loop_values_and_gradients(name, extra):
    assert_forward_equals_step_loop(small_core(name, **extra), *sequence())


@pytest.mark.parametrize("name", CHECKPOINTED)
def test_checkpointed_step_loop_equals_the_loop_and_keeps_less_for_backward(name):
    core = small_core(name)  # in a stack (rdn-stack above) each layer's forward is this one
    steps = 21  # pieces [0, 8), [8, 16), [16, 21)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(steps, B, D, dtype=F64, generator=g).requires_grad_(True)
    starts = torch.rand(steps, B, generator=g) < 0.2
    starts[0, 0] = starts[8, 1] = starts[16, 2] = starts[steps - 1, 0] = True  # at t = 0, piece starts, the end
    starts[7, 2] = True  # the step before a piece starts
    state0 = tuple(s.requires_grad_(True) for s in random_state(core))
    leaves = [x, *state0, *core.parameters()]

    def run(forward):
        y, state = forward(x, state0, starts)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=F64).view_as(y)).sum() + sum(s.sum() for s in state)
        return [y, *state], torch.autograd.grad(loss, leaves, allow_unused=True)

    out, grads = run(core.forward_checkpointed)
    out_loop, grads_loop = run(core.forward_loop)

    def saved_by_forward(forward) -> int:
        """Elements autograd keeps for backward after the forward: each step's fast weights, or the pieces' starts."""
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            forward(x, state0, starts)
        return sum(saved)

    checkpointed, loop = saved_by_forward(core.forward_checkpointed), saved_by_forward(core.forward_loop)
    for a, b in zip(out, out_loop, strict=True):
        assert torch.equal(a, b)  # the same operations on the same inputs
    for a, b, leaf in zip(grads, grads_loop, leaves, strict=True):  # the pieces' gradients summed: float rounding
        torch.testing.assert_close(torch.zeros_like(leaf) if a is None else a,
                                   torch.zeros_like(leaf) if b is None else b, atol=1e-12, rtol=0)
    assert checkpointed < loop / 2


def assert_forward_equals_step_loop(core, x, starts):
    """core(x, state0, starts) equals core.forward_loop in outputs, final state and the gradients of both with
    respect to x, the initial state and every parameter."""
    T, B = x.shape[:2]
    state0 = random_state(core, B)
    leaves = [x.requires_grad_(True), *[s.requires_grad_(True) for s in state0], *core.parameters()]

    y_par, s_par = core(x, state0, starts)
    y_loop, s_loop = core.forward_loop(x, state0, starts)
    assert y_par.shape == (T, B, core.output_size)
    assert len(s_par) == len(s_loop) == len(state0)
    assert torch.allclose(y_par, y_loop, atol=1e-10, rtol=0)
    for a, b in zip(s_par, s_loop):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)

    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(y_par.shape, dtype=F64, generator=g)] + [
        torch.randn(s.shape, dtype=F64, generator=g) for s in s_par]

    def loss(y, s):
        return (y * weights[0]).sum() + sum((a * w).sum() for a, w in zip(s, weights[1:]))

    grads_par = torch.autograd.grad(loss(y_par, s_par), leaves, allow_unused=True)
    grads_loop = torch.autograd.grad(loss(y_loop, s_loop), leaves, allow_unused=True)
    for gp, gl in zip(grads_par, grads_loop):
        assert (gp is None) == (gl is None)
        if gp is not None:
            assert torch.allclose(gp, gl, atol=1e-9, rtol=0)


def test_every_core_has_a_sequence_form_of_its_own():
    """So "forward equals the step loop" above compares two forms for every core."""
    assert [name for name in CORES if core_class(name).forward is MemoryCore.forward] == []


@pytest.mark.parametrize("name", list(CORES))
def test_step_equals_forward_loop(name):
    core = small_core(name)
    x, starts = sequence()
    state = random_state(core)
    y_seq, s_seq = core.forward_loop(x, state, starts)
    for t in range(T):
        y, state = core.step(x[t], state, starts[t])
        assert torch.allclose(y, y_seq[t], atol=1e-12, rtol=0)
    for a, b in zip(state, s_seq):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", list(CORES))
def test_state_carried_across_sequences_continues_exactly(name):
    core = small_core(name)
    x, starts = sequence()
    state0 = random_state(core)
    y_all, s_all = core(x, state0, starts)
    y_a, s_mid = core(x[:5], state0, starts[:5])
    y_b, s_end = core(x[5:], s_mid, starts[5:])
    assert torch.allclose(torch.cat([y_a, y_b]), y_all, atol=1e-10, rtol=0)
    for a, b in zip(s_end, s_all):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


MEMORY_CORES = [name for name in CORES if name != "memoryless"]


@pytest.mark.parametrize("name", MEMORY_CORES)
def test_gradients_reach_initial_state_and_first_step(name):
    core = small_core(name)
    x, _ = sequence()
    state0 = tuple(s.requires_grad_(True) for s in random_state(core))
    x.requires_grad_(True)
    y, _ = core(x, state0, torch.zeros(T, B, dtype=torch.bool))
    grads = torch.autograd.grad(y[-1].sum(), [x, *state0], allow_unused=True)
    assert grads[0][0].abs().sum() > 0, "the last output does not depend on the first input"
    assert any(g is not None and g.abs().sum() > 0 for g in grads[1:]), "no gradient reaches the initial state"


@pytest.mark.parametrize("name", list(CORES))
def test_episode_start_cuts_the_memory(name):
    core = small_core(name)
    x, _ = sequence()
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[4] = True
    state0 = tuple(s.requires_grad_(True) for s in random_state(core))
    x.requires_grad_(True)
    y, _ = core(x, state0, starts)
    grads = torch.autograd.grad(y[-1].sum(), [x, *state0], allow_unused=True)
    assert grads[0][:4].abs().max() == 0, "an output after an episode start depends on inputs before it"
    assert all(g is None or g.abs().max() == 0 for g in grads[1:])


@pytest.mark.parametrize("name", list(CORES))
def test_initial_state_is_batch_first_in_module_dtype(name):
    core = small_core(name)
    for s in core.initial_state(7):
        assert s.shape[0] == 7 and s.dtype == F64


def test_memoryless_core_output_depends_on_its_own_step_only():
    core = small_core("memoryless")
    x, starts = sequence()
    x.requires_grad_(True)
    y, state = core(x, core.initial_state(B), starts)
    assert state == ()
    grads = torch.autograd.grad(y[5].sum(), x)[0]
    assert grads[5].abs().sum() > 0 and grads[:5].abs().max() == 0 and grads[6:].abs().max() == 0


# ---------------------------------------------------------------- the layer options of delta and gated_delta
# the DeltaNet layer of Yang et al. (2024), Gated DeltaNet's with the gated core
LAYER_2024 = {"conv_size": 4, "feature_map": "silu_l2", "sum_norm": False, "output_norm": True, "beta_bias": -1.0}
LAYER_OPTIONS = {
    "conv": {"conv_size": 3},
    "conv2-dpfp": {"conv_size": 2, "feature_map": "dpfp", "dpfp_nu": 2, "sum_norm": True},
    "silu_l2": {"feature_map": "silu_l2", "sum_norm": False},
    "output_norm": {"output_norm": True},
    "2024": LAYER_2024,
    "2024-error_gain-constant_beta": {**LAYER_2024, "error_gain": 3.0, "beta_from_input": False},
    "2024-stack": {**LAYER_2024, "num_layers": 2, "feedforward": 2},
}
LAYER_CONFIGS = [(name, extra) for name in ("delta", "gated_delta") for extra in LAYER_OPTIONS.values()]
LAYER_IDS = [f"{name}-{key}" for name in ("delta", "gated_delta") for key in LAYER_OPTIONS]
# each with sparse resets, the layers with a convolution (whose buffer resets) with dense ones too
LAYER_SEQUENCES = [pytest.param(name, extra, p, id=f"{i}-{p}") for (name, extra), i in zip(LAYER_CONFIGS, LAYER_IDS)
                   for p in ((0.15, 0.5) if "conv_size" in extra and "num_layers" not in extra else (0.15,))]


def reset_sequence(starts_p, seed=4):
    """x [T, B, D] and starts [T, B]: random ones, and at t = 0 (row 0), at the last step (row 1), two in a row and
    one every other step (row 2)."""
    x, starts = sequence(seed, starts_p)
    starts[0, 0] = starts[T - 1, 1] = True
    starts[3:5, 2] = True
    starts[7::2, 2] = True
    return x, starts


@pytest.mark.parametrize("name,extra,starts_p", LAYER_SEQUENCES)
def test_layer_options_forward_equals_step_loop(name, extra, starts_p):
    assert_forward_equals_step_loop(small_core(name, **extra), *reset_sequence(starts_p))


# The sequence forms of the cores without a parallel rule (rdn, delta_rnn, delta_lstm and srwm written by hand:
# ``fwp_rl.ops.recurrent_fwp``, ``fwp_rl.ops.srwm``, fast weights updated in place and recovered backwards by undoing
# each write; direct's fast net at all steps at once: ``fwp_rl.ops.direct``) with each kind of feature map, beta_max
# above 1 and direct's modes, under sparse and dense resets
OPTION_FORMS = {"rdn": {}, "rdn-elu-sum_norm-beta1.5": {"feature_map": "elu", "sum_norm": True, "beta_max": 1.5},
                "rdn-dpfp2": {"feature_map": "dpfp", "dpfp_nu": 2},
                "rdn-silu_l2-beta2": {"feature_map": "silu_l2", "beta_max": 2.0},
                "delta_rnn": {}, "delta_rnn-dpfp-beta2": {"feature_map": "dpfp", "beta_max": 2.0},
                "delta_rnn-elu-sum_norm": {"feature_map": "elu", "sum_norm": True},
                "delta_lstm": {}, "delta_lstm-softmax-beta1.5": {"feature_map": "softmax", "sum_norm": False,
                                                                  "beta_max": 1.5},
                "srwm": {}, "srwm-dpfp2": {"feature_map": "dpfp", "dpfp_nu": 2},
                "srwm-elu-sum_norm": {"feature_map": "elu", "sum_norm": True},
                "direct-additive": {"mode": "additive"}, "direct-additive-sigmoid": {"mode": "additive",
                                                                                   "activation": "sigmoid"}}


@pytest.mark.parametrize("starts_p", (0.15, 0.5))
@pytest.mark.parametrize("key", OPTION_FORMS)
def test_sequence_forms_with_their_options_equal_step_loop(key, starts_p):
    assert_forward_equals_step_loop(small_core(key.split("-")[0], **OPTION_FORMS[key]), *reset_sequence(starts_p))


@pytest.mark.parametrize("name", ("rdn", "delta_rnn", "delta_lstm", "srwm"))
def test_hand_written_sequence_forms_run_in_blocks_of_rows_as_in_one(name, monkeypatch):
    """Rows in blocks of two (a block's fast weights within ``ROW_BLOCK_BYTES``, here set that small) give the
    step loop's values and gradients too, the last block a row short."""
    row = small_core(name).initial_state(1)[1 if name == "delta_lstm" else 0]  # the matrices: R for delta_lstm
    monkeypatch.setattr(inplace, "ROW_BLOCK_BYTES", 2 * row.numel() * row.element_size())
    assert_forward_equals_step_loop(small_core(name), *reset_sequence(0.3))


@pytest.mark.parametrize("name", ("rdn", "delta_rnn", "delta_lstm", "srwm"))
def test_hand_written_sequence_forms_in_float32_keep_the_step_loops_gradients_over_long_sequences(name):
    """Undoing 256 writes in float32 recovers the fast weights to rounding: the gradients stay the step loop's to
    a relative 1e-4."""
    torch.manual_seed(0)
    core = make_core(name, D, hidden_size=16, num_heads=2)
    x = torch.randn(256, 4, D, requires_grad=True)
    starts = torch.rand(256, 4, generator=torch.Generator().manual_seed(1)) < 0.02
    leaves = [x, *core.parameters()]
    grads = [torch.autograd.grad(forward(x, core.initial_state(4), starts)[0].square().sum(), leaves)
             for forward in (core.forward, core.forward_loop)]
    for a, b in zip(*grads):
        assert (a - b).norm() <= 1e-4 * b.norm()


@pytest.mark.parametrize("name,extra", LAYER_CONFIGS, ids=LAYER_IDS)
def test_layer_options_state_carried_across_sequences_continues_exactly(name, extra):
    """Split anywhere, at a start too (step 3 of row 2) and after one step, the halves continue into the whole."""
    core = small_core(name, **extra)
    x, starts = reset_sequence(0.15)
    state0 = random_state(core)
    y_all, s_all = core(x, state0, starts)
    for split in (1, 3, 8, T - 1):
        y_a, s_mid = core(x[:split], state0, starts[:split])
        y_b, s_end = core(x[split:], s_mid, starts[split:])
        assert torch.allclose(torch.cat([y_a, y_b]), y_all, atol=1e-10, rtol=0)
        for a, b in zip(s_end, s_all, strict=True):
            assert torch.allclose(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name,extra", LAYER_CONFIGS, ids=LAYER_IDS)
def test_layer_options_episode_start_cuts_the_memory(name, extra):
    """After a start, the outputs depend on no earlier input and on nothing of the carried state: the convolution's
    buffer included."""
    core = small_core(name, **extra)
    x, _ = sequence()
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[4] = True
    state0 = tuple(s.requires_grad_(True) for s in random_state(core))
    x.requires_grad_(True)
    for form in (core, core.forward_loop):
        y, _ = form(x, state0, starts)
        grads = torch.autograd.grad(y[4:].sum(), [x, *state0], allow_unused=True)
        assert grads[0][:4].abs().max() == 0, "an output after an episode start depends on inputs before it"
        assert all(g is None or g.abs().max() == 0 for g in grads[1:])


@pytest.mark.parametrize("name", ["delta", "gated_delta"])
def test_the_options_off_leave_the_core_as_it_was(name):
    """By default no option adds a parameter, a state tensor or a row of the projection: configs and checkpoints of
    before the options load and run as they did."""
    core = small_core(name)
    assert {n for n, _ in core.named_parameters()} == {"proj.weight", "proj.bias", "out_proj.weight", "out_proj.bias"}
    assert core.proj.out_features == 3 * 8 + 2 + (name == "gated_delta") * 2
    assert len(core.initial_state(B)) == 1


@pytest.mark.parametrize("name", ["delta", "gated_delta"])
def test_conv_state_is_the_last_projections_of_q_k_v(name):
    core = small_core(name, conv_size=4)
    S, buffer = core.initial_state(B)
    assert buffer.shape == (B, 3, 3 * 8) and not buffer.any()
    xs = torch.randn(2, B, D, dtype=F64, generator=torch.Generator().manual_seed(6))
    state = (S, buffer)
    for x in xs:
        _, state = core.step(x, state)
    projected = core.proj(xs)[..., :3 * 8]  # q, k, v as projected, before the convolution
    expected = torch.cat([torch.zeros_like(buffer[:, :1]), projected.transpose(0, 1)], dim=1)
    assert torch.allclose(state[1], expected, atol=1e-14, rtol=0)
    _, state = core.step(xs[0], state, torch.tensor([True, False, True]))
    assert not state[1][[0, 2], :2].any() and state[1][1, :2].abs().min() > 0


@pytest.mark.parametrize("name", ["delta", "gated_delta"])
def test_output_norm_is_rms_norm_times_silu_of_a_projected_gate(name):
    core = small_core(name, output_norm=True)
    with torch.no_grad():
        core.norm_weight.copy_(torch.tensor([0.5, 1.0, 2.0, -1.0], dtype=F64))
    g = torch.Generator().manual_seed(7)
    x, o = torch.randn(B, D, dtype=F64, generator=g), torch.randn(B, 2, 4, dtype=F64, generator=g)
    gate = core._project(x).output_gate
    # the projection's part after q, k, v (before the rates, so the gated core's decay bias stays its last part)
    assert torch.equal(gate, core.proj(x)[:, 24:32].unflatten(-1, (2, 4)))
    rms = (o.pow(2).mean(-1, keepdim=True) + NORM_EPS).sqrt()
    expected = o / rms * core.norm_weight * gate * torch.sigmoid(gate)
    assert torch.allclose(core._normalize(o, gate), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("beta_from_input", [True, False])
@pytest.mark.parametrize("name", ["delta", "gated_delta"])
def test_beta_bias_sets_the_initial_rate(name, beta_from_input):
    """With x = 0 the projection is its bias: every head starts at beta = beta_max sigmoid(beta_bias), the gated
    core's decay still at its own start (sigmoid(3))."""
    core = small_core(name, beta_bias=-2.0, beta_max=2.0, output_norm=True, beta_from_input=beta_from_input)
    p = core._project(torch.zeros(B, D, dtype=F64))
    beta, log_alpha = core._rates(p.beta, p.gate)
    assert torch.allclose(beta, 2.0 * torch.sigmoid(torch.tensor(-2.0, dtype=F64)).expand(B, 2))
    if name == "gated_delta":
        assert torch.allclose(log_alpha, torch.nn.functional.logsigmoid(torch.tensor(3.0, dtype=F64)).expand(B, 2))


# ---------------------------------------------------------------- bad input
def test_unknown_core_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"core='deltanet'.*'delta'"):
        make_core("deltanet", 4)


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match=r"no option hiden_size.*hidden_size"):
        make_core("delta", 4, hiden_size=8)


@pytest.mark.parametrize("option,value", [("hidden_size", 0), ("num_heads", -1), ("hidden_size", 2.5),
                                          ("num_layers", 0), ("feedforward", -2)])
def test_impossible_sizes_are_named(option, value):
    with pytest.raises(ValueError, match=rf"{option}={value!r}"):
        make_core("delta", 4, **{option: value})


def test_heads_that_do_not_divide_the_width():
    with pytest.raises(ValueError, match="hidden_size=10 is not divisible by num_heads=4"):
        make_core("delta", 4, hidden_size=10, num_heads=4)


def test_bad_feature_map_and_beta():
    with pytest.raises(ValueError, match="feature_map='relu'"):
        make_core("delta", 4, feature_map="relu")
    with pytest.raises(ValueError, match="beta_max=3"):
        make_core("delta", 4, beta_max=3)
    for error_gain in (-1.0, float("nan"), True, "50"):
        with pytest.raises(ValueError, match=rf"error_gain={error_gain!r} is not allowed: it must be 0 \(off\)"):
            make_core("gated_delta", 4, error_gain=error_gain)
    with pytest.raises(ValueError, match="beta_from_input='no' is not allowed: it must be true or false"):
        make_core("delta", 4, beta_from_input="no")


@pytest.mark.parametrize("name", ["delta", "gated_delta"])
def test_bad_layer_options_are_named(name):
    for conv_size in (-1, 1, 2.5, True, "4"):
        with pytest.raises(ValueError, match=rf"^conv_size={conv_size!r} is not allowed: it must be 0 \(off\) or an "
                                             r"integer >= 2$"):
            make_core(name, 4, conv_size=conv_size)
    for output_norm in ("yes", 1, None):
        with pytest.raises(ValueError, match=rf"^output_norm={output_norm!r} is not allowed: it must be true or "
                                             r"false$"):
            make_core(name, 4, output_norm=output_norm)
    for beta_bias in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match=rf"^beta_bias={beta_bias!r} is not allowed: it must be a finite number"):
            make_core(name, 4, beta_bias=beta_bias)
    with pytest.raises(ValueError, match="sum_norm=True needs a non-negative feature map .* feature_map='silu_l2'"):
        make_core(name, 4, feature_map="silu_l2", sum_norm=True)


@pytest.mark.parametrize("name", ["delta", "gated_delta"])
def test_constant_beta_is_one_learned_rate_per_head(name):
    """beta_from_input=False: no rate rows in the input projection, and the rate the rule uses is
    beta_max sigmoid(beta_logit) whatever the input."""
    core = small_core(name, beta_from_input=False, beta_max=2.0)
    full = small_core(name, beta_max=2.0)
    assert core.proj.out_features == full.proj.out_features - core.num_heads
    with torch.no_grad():
        core.beta_logit.copy_(torch.tensor([-1.0, 0.5], dtype=F64))
    x = torch.randn(4, B, D, dtype=F64, generator=torch.Generator().manual_seed(5))
    p = core._project(x)
    beta, _ = core._rates(p.beta, p.gate)
    assert beta.shape == (4, B, core.num_heads)
    assert torch.allclose(beta, 2.0 * torch.sigmoid(torch.tensor([-1.0, 0.5], dtype=F64)).expand(4, B, 2))


@pytest.mark.parametrize("name", ["delta", "lstm"])
def test_wrong_shapes_and_dtypes_are_named(name):
    core = small_core(name)
    state = core.initial_state(B)
    with pytest.raises(ValueError, match=r"x must have shape \[B, features\] with features=5, got shape \(3, 4\)"):
        core.step(torch.zeros(B, 4, dtype=F64), state)
    with pytest.raises(TypeError, match="x must be a floating point tensor"):
        core.step(torch.zeros(B, D, dtype=torch.long), state)
    with pytest.raises(ValueError, match=r"x must have shape \[T, B, features\]"):
        core(torch.zeros(B, D, dtype=F64), state)
    with pytest.raises(TypeError, match="episode_starts must be a torch.bool tensor"):
        core(torch.zeros(T, B, D, dtype=F64), state, torch.zeros(T, B))
    with pytest.raises(ValueError, match=r"episode_starts must have shape \(13, 3\)"):
        core(torch.zeros(T, B, D, dtype=F64), state, torch.zeros(T, B + 1, dtype=torch.bool))
