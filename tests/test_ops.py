"""The update rules as tensor functions: their equations on hand-computed cases, and the chunkwise forms
against the step loop, in values and gradients, with episode starts inside chunks; the same for the short causal
convolution."""

import pytest
import torch

from fwp_rl.ops.chunk import unit_lower_inverse
from fwp_rl.ops.conv import causal_conv, causal_conv_recurrent, causal_conv_step
from fwp_rl.ops.delta import (delta_rule_chunkwise, delta_rule_error_step, delta_rule_recurrent, delta_rule_step,
                              with_errors)
from fwp_rl.ops.feature_maps import dpfp, feature_dim, feature_map
from fwp_rl.ops.linear import linear_attention_chunkwise, linear_attention_recurrent, linear_attention_step

F64 = torch.float64


def t(values):
    """A [1, 1, d] tensor (batch 1, head 1) from a list."""
    return torch.tensor(values, dtype=F64).view(1, 1, -1)


# ---------------------------------------------------------------- the equations, by hand
def test_linear_rule_by_hand():
    S = torch.zeros(1, 1, 2, 2, dtype=F64)
    _, S = linear_attention_step(t([0, 0]), t([1, 0]), t([2, 3]), S)
    o, S = linear_attention_step(t([1, 1]), t([0, 1]), t([-1, 4]), S)
    # W = v1 k1^T + v2 k2^T; y = W q = [2 - 1, 3 + 4]
    assert torch.equal(S[0, 0], torch.tensor([[2.0, 3.0], [-1.0, 4.0]], dtype=F64))
    assert torch.equal(o.flatten(), torch.tensor([1.0, 7.0], dtype=F64))


def test_linear_rule_normalized_by_hand():
    S = torch.zeros(1, 1, 2, 3, dtype=F64)
    _, S = linear_attention_step(t([0, 0]), t([1, 0]), t([2, 3]), S, normalize=True)
    o, S = linear_attention_step(t([1, 1]), t([0, 1]), t([-1, 4]), S, normalize=True, eps=0.0)
    # z = k1 + k2 = [1, 1], z . q = 2
    assert torch.allclose(o.flatten(), torch.tensor([0.5, 3.5], dtype=F64))


def test_delta_rule_by_hand():
    S = torch.zeros(1, 1, 2, 2, dtype=F64)
    half, one = torch.full((1, 1), 0.5, dtype=F64), torch.ones(1, 1, dtype=F64)
    _, S = delta_rule_step(t([0, 0]), t([1, 0]), t([2, 3]), half, S)
    assert torch.equal(S[0, 0], torch.tensor([[1.0, 1.5], [0.0, 0.0]], dtype=F64))  # 0.5 * (v - 0) k^T
    # the same key again with beta = 1: the memory's old value [1, 1.5] is replaced by v
    o, S = delta_rule_step(t([1, 0]), t([1, 0]), t([4, 1]), one, S)
    assert torch.equal(o.flatten(), torch.tensor([4.0, 1.0], dtype=F64))


def test_gated_delta_rule_by_hand():
    S = torch.tensor([[1.0, 1.5], [0.0, 0.0]], dtype=F64).view(1, 1, 2, 2)
    half = torch.full((1, 1), 0.5, dtype=F64)
    log_alpha = torch.log(torch.full((1, 1), 0.5, dtype=F64))
    _, S = delta_rule_step(t([0, 0]), t([1, 0]), t([4, 1]), half, S, log_alpha)
    # alpha S = [[0.5, 0.75], 0]; S += 0.5 k (v - [0.5, 0.75])^T
    assert torch.allclose(S[0, 0], torch.tensor([[2.25, 0.875], [0.0, 0.0]], dtype=F64))


def test_delta_rule_error_by_hand():
    S = torch.tensor([[1.0, 1.5], [0.0, 0.0]], dtype=F64).view(1, 1, 2, 2)
    half = torch.full((1, 1), 0.5, dtype=F64)
    log_alpha = torch.log(torch.full((1, 1), 0.5, dtype=F64))
    o, error, S_new = delta_rule_error_step(t([1, 0]), t([1, 0]), t([4, 1]), half, S, log_alpha)
    # the decayed memory predicts alpha S^T k = [0.5, 0.75] for the key; the error is v minus that
    assert torch.allclose(error.flatten(), torch.tensor([3.5, 0.25], dtype=F64))
    assert torch.allclose(o.flatten(), torch.tensor([2.25, 0.875], dtype=F64))
    assert torch.equal(S_new, delta_rule_step(t([1, 0]), t([1, 0]), t([4, 1]), half, S, log_alpha)[1])


def test_errors_of_a_scalar_head_with_beta_one_are_one_step_differences():
    # one head of one dimension, k = q = 1, beta = 1: W_t = v_t, so e_t = v_t - v_{t-1}; after a start, e_t = v_t
    v = torch.tensor([0.3, 0.5, 0.4, 1.0, 1.2], dtype=F64).view(5, 1, 1, 1)
    ones, beta = torch.ones_like(v), torch.ones(5, 1, 1, dtype=F64)
    starts = torch.tensor([False, False, False, True, False]).view(5, 1)
    S0 = torch.full((1, 1, 1, 1), 0.1, dtype=F64)
    for rule, options in ((delta_rule_recurrent, {}), (delta_rule_chunkwise, {"chunk_size": 4})):
        o, error, S = with_errors(rule, ones, ones, v, beta, S0, starts, **options)
        assert torch.allclose(o, v)
        assert torch.allclose(error.flatten(), torch.tensor([0.2, 0.2, -0.1, 1.0, 0.2], dtype=F64))
        assert torch.allclose(S, v[-1:].view(1, 1, 1, 1))


def test_delta_rule_with_orthonormal_keys_returns_last_written_values():
    torch.manual_seed(0)
    d, dv, writes = 6, 3, 20
    keys = torch.linalg.qr(torch.randn(d, d, dtype=F64))[0].t()  # rows orthonormal
    S = torch.randn(1, 1, d, dv, dtype=F64)  # whatever was there before
    last = {}
    for _ in range(writes):
        i = int(torch.randint(d, ()))
        v = torch.randn(1, 1, dv, dtype=F64)
        ones = torch.ones(1, 1, dtype=F64)
        _, S = delta_rule_step(torch.zeros(1, 1, d, dtype=F64), keys[i].view(1, 1, d), v, ones, S)
        last[i] = v
    for i, v in last.items():
        read = torch.einsum("k,kv->v", keys[i], S[0, 0])
        assert torch.allclose(read, v.flatten(), atol=1e-12, rtol=0)


def test_episode_start_forgets_everything_before():
    torch.manual_seed(0)
    T, B, H, d = 6, 2, 1, 3
    q, k, v = (torch.randn(T, B, H, d, dtype=F64) for _ in range(3))
    beta = torch.rand(T, B, H, dtype=F64)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[3, 0] = True
    o, _ = delta_rule_recurrent(q, k, v, beta, torch.randn(B, H, d, d, dtype=F64), starts)
    o_fresh, _ = delta_rule_recurrent(q[3:, :1], k[3:, :1], v[3:, :1], beta[3:, :1], torch.zeros(1, H, d, d, dtype=F64))
    assert torch.allclose(o[3:, :1], o_fresh, atol=1e-14)


def test_dpfp_feature_map():
    k = torch.tensor([1.0, -2.0], dtype=F64)
    # r = [relu(k), relu(-k)] = [1, 0, 0, 2]; nu = 1: r * roll(r, 1) = [1*2, 0*1, 0*0, 2*0]
    assert torch.equal(dpfp(k, 1), torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=F64))
    assert dpfp(k, 3).shape[-1] == feature_dim("dpfp", 2, 3) == 12
    phi = feature_map(torch.randn(4, 5, dtype=F64), "elu", sum_norm=True, eps=0.0)
    assert torch.allclose(phi.sum(-1), torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match="feature_map='relu'"):
        feature_map(k, "relu")


def test_silu_l2_feature_map():
    k = torch.randn(4, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    phi = feature_map(k, "silu_l2")
    silu = k * torch.sigmoid(k)
    assert torch.allclose(phi, silu / silu.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)
    assert feature_dim("silu_l2", 5) == 5


# ---------------------------------------------------------------- chunkwise == step loop
def _inputs(T, B, H, dk, dv, seed, starts_p=0.2):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, B, H, dk, dtype=F64, generator=g)
    k = torch.nn.functional.normalize(torch.randn(T, B, H, dk, dtype=F64, generator=g), dim=-1)
    v = torch.randn(T, B, H, dv, dtype=F64, generator=g)
    beta = 2 * torch.rand(T, B, H, dtype=F64, generator=g)  # up to 2: negative eigenvalues too
    log_alpha = -torch.rand(T, B, H, dtype=F64, generator=g)
    S0 = torch.randn(B, H, dk, dv, dtype=F64, generator=g)
    starts = torch.rand(T, B, generator=g) < starts_p
    starts[0, 0] = True
    starts[4:6, 1] = True  # two starts in a row
    return q, k, v, beta, log_alpha, S0, starts


def _assert_same(fn_a, fn_b, tensors):
    for x in tensors:
        x.requires_grad_(True)
    out_a, S_a = fn_a()
    out_b, S_b = fn_b()
    assert torch.allclose(out_a, out_b, atol=1e-12, rtol=0)
    assert torch.allclose(S_a, S_b, atol=1e-12, rtol=0)
    w_o, w_s = torch.randn_like(out_a), torch.randn_like(S_a)
    grads_a = torch.autograd.grad((out_a * w_o).sum() + (S_a * w_s).sum(), tensors)
    grads_b = torch.autograd.grad((out_b * w_o).sum() + (S_b * w_s).sum(), tensors)
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, atol=1e-11, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 64])
@pytest.mark.parametrize("gated", [False, True])
def test_delta_chunkwise_equals_loop(chunk_size, gated):
    q, k, v, beta, log_alpha, S0, starts = _inputs(T=29, B=3, H=2, dk=4, dv=5, seed=chunk_size)
    la = log_alpha if gated else None
    tensors = [q, k, v, beta, S0] + ([log_alpha] if gated else [])
    _assert_same(lambda: delta_rule_chunkwise(q, k, v, beta, S0, starts, la, chunk_size),
                 lambda: delta_rule_recurrent(q, k, v, beta, S0, starts, la), tensors)


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
@pytest.mark.parametrize("normalize", [False, True])
def test_linear_chunkwise_equals_loop(chunk_size, normalize):
    q, k, v, _, _, S0, starts = _inputs(T=23, B=3, H=2, dk=4, dv=5, seed=chunk_size)
    q, k = q.abs(), k.abs()  # a non-negative feature map keeps the normalizer away from zero
    if normalize:
        S0 = torch.cat([S0.abs(), torch.ones_like(S0[..., :1])], dim=-1)
    _assert_same(lambda: linear_attention_chunkwise(q, k, v, S0, starts, normalize, chunk_size=chunk_size),
                 lambda: linear_attention_recurrent(q, k, v, S0, starts, normalize), [q, k, v, S0])


def test_chunkwise_without_starts_equals_loop():
    q, k, v, beta, log_alpha, S0, _ = _inputs(T=16, B=2, H=1, dk=3, dv=3, seed=1)
    _assert_same(lambda: delta_rule_chunkwise(q, k, v, beta, S0, None, log_alpha, 8),
                 lambda: delta_rule_recurrent(q, k, v, beta, S0, None, log_alpha), [q, k, v, beta, S0])


def test_strong_decay_keeps_gradients_finite():
    # Log-decays this negative overflow exp() outside the causal mask if it is not masked first.
    q, k, v, beta, _, S0, starts = _inputs(T=32, B=2, H=1, dk=3, dv=3, seed=2)
    log_alpha = torch.full((32, 2, 1), -50.0, dtype=F64, requires_grad=True)
    out, S = delta_rule_chunkwise(q, k, v, beta, S0, starts, log_alpha, 32)
    (grad,) = torch.autograd.grad(out.sum() + S.sum(), log_alpha)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("size", [1, 2, 3, 16, 17, 64])
def test_unit_lower_inverse_equals_matrix_inverse(size):
    g = torch.Generator().manual_seed(size)
    # entries of the size the delta rule produces: beta k_i . k_j with normalized keys, beta < 1
    strict = 0.3 * torch.randn(5, size, size, generator=g, dtype=torch.float64).tril(-1)
    eye = torch.eye(size, dtype=torch.float64).expand(5, size, size)
    expected = torch.linalg.solve_triangular(eye + strict, eye, upper=False, unitriangular=True)
    torch.testing.assert_close(unit_lower_inverse(strict), expected, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- the short causal convolution
def test_causal_conv_is_a_depthwise_conv1d_padded_with_zeros():
    """From a zero buffer without starts, the convolution is nn.Conv1d's (groups = channels, weight [C, 1, K]) on the
    sequence padded with K - 1 zeros on the left; its buffer ends as the last K - 1 inputs."""
    g = torch.Generator().manual_seed(0)
    T, B, C, K = 6, 2, 3, 4
    u, weight = torch.randn(T, B, C, dtype=F64, generator=g), torch.randn(C, K, dtype=F64, generator=g)
    y, buffer = causal_conv(u, weight, torch.zeros(B, K - 1, C, dtype=F64))
    expected = torch.nn.functional.conv1d(torch.nn.functional.pad(u.permute(1, 2, 0), (K - 1, 0)),
                                          weight.unsqueeze(1), groups=C)  # [B, C, T]
    assert torch.allclose(y, expected.permute(2, 0, 1), atol=1e-12, rtol=0)
    assert torch.equal(buffer, u[-(K - 1):].transpose(0, 1))


def test_causal_conv_step_by_hand():
    weight = torch.tensor([[1.0, 10.0, 100.0]], dtype=F64)  # one channel, K = 3: weight[-1] weighs the current input
    buffer = torch.tensor([[[2.0], [3.0]]], dtype=F64)  # [B=1, K-1=2, C=1], oldest first
    y, buffer = causal_conv_step(torch.tensor([[4.0]], dtype=F64), weight, buffer)
    assert y.item() == 2 + 30 + 400 and buffer.flatten().tolist() == [3.0, 4.0]


def test_causal_conv_after_a_start_sees_only_its_episode():
    g = torch.Generator().manual_seed(1)
    T, B, C, K = 7, 1, 2, 3
    u, weight = torch.randn(T, B, C, dtype=F64, generator=g), torch.randn(C, K, dtype=F64, generator=g)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[3] = True
    y, _ = causal_conv(u, weight, torch.randn(B, K - 1, C, dtype=F64, generator=g), starts)
    fresh, _ = causal_conv(u[3:], weight, torch.zeros(B, K - 1, C, dtype=F64))
    assert torch.allclose(y[3:], fresh, atol=1e-14, rtol=0)


@pytest.mark.parametrize("K", [2, 4, 9])
@pytest.mark.parametrize("starts_p", [0.0, 0.3, 0.7])
def test_causal_conv_equals_loop(K, starts_p):
    """Values, final buffer and gradients; starts at t = 0, twice in a row and at the last step, and a sequence
    (T = 5 with K = 9) shorter than the buffer."""
    g = torch.Generator().manual_seed(K)
    for T in (13, 5):
        u = torch.randn(T, 3, 4, dtype=F64, generator=g)
        weight = torch.randn(4, K, dtype=F64, generator=g)
        buffer = torch.randn(3, K - 1, 4, dtype=F64, generator=g)
        starts = torch.rand(T, 3, generator=g) < starts_p
        if starts_p:
            starts[0, 0] = starts[T - 1, 1] = True
            starts[2:4, 2] = True
        _assert_same(lambda: causal_conv(u, weight, buffer, starts),
                     lambda: causal_conv_recurrent(u, weight, buffer, starts), [u, weight, buffer])
    _assert_same(lambda: causal_conv(u, weight, buffer), lambda: causal_conv_recurrent(u, weight, buffer),
                 [u, weight, buffer])
