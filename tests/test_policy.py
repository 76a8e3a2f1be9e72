"""Torsos and the recurrent policy: shapes, act/evaluate consistency, flat parameters, the population call,
the Stable-Baselines3 predict, and the errors for bad spaces and inputs; the same for the heads that read the torso's
features beside the core (``core_output``) and a delta core with the 2024 layer options."""

from __future__ import annotations

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from fwp_rl.policy import RecurrentPolicy
from fwp_rl.torsos import make_torso

VECTOR = spaces.Box(-1.0, 1.0, (5,), np.float32)
FRAMES = spaces.Box(0, 255, (4, 84, 84), np.uint8)
DISCRETE = spaces.Discrete(3)
BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)

CORE_OPTIONS = {
    "delta": dict(hidden_size=8, num_heads=2, chunk_size=3),
    "linear": dict(hidden_size=8, num_heads=2, chunk_size=3),
    "lstm": dict(hidden_size=8),
    "gru": dict(hidden_size=8),
    "rdn": dict(hidden_size=8, num_heads=2),
    "direct": dict(hidden_size=3, slow_size=4),
}


# the delta core with the options of the DeltaNet layer of 2024
DELTA_2024 = dict(CORE_OPTIONS["delta"], conv_size=3, feature_map="silu_l2", sum_norm=False, output_norm=True,
                  beta_bias=-1.0)
# (core, its options, core_output): the policies beside the default ones
HEADS = [pytest.param("delta", DELTA_2024, "core", id="delta_2024"),
         pytest.param("delta", CORE_OPTIONS["delta"], "core_and_features", id="delta-core_and_features"),
         pytest.param("delta", DELTA_2024, "core_and_features", id="delta_2024-core_and_features"),
         pytest.param("lstm", CORE_OPTIONS["lstm"], "core_and_features", id="lstm-core_and_features")]


def make_policy(core="delta", action_space=DISCRETE, torso="mlp", observation_space=VECTOR, core_options=None,
                **kwargs):
    torch.manual_seed(0)
    torso_options = dict(hidden_sizes=[8]) if torso == "mlp" else None
    return RecurrentPolicy(observation_space, action_space, torso=torso, torso_options=torso_options, core=core,
                           core_options=CORE_OPTIONS[core] if core_options is None else core_options,
                           **kwargs).double()


def random_starts(generator, *shape):
    return torch.rand(*shape, generator=generator) < 0.25


# ---------------------------------------------------------------------------------------------- torsos
@pytest.mark.parametrize("name, space, options, size", [
    ("mlp", spaces.Box(-1, 1, (3, 2), np.float32), dict(hidden_sizes=[7, 5]), 5),
    ("identity", spaces.Box(-1, 1, (3, 2), np.float32), {}, 6),
    ("nature_cnn", FRAMES, {}, 512),
    ("impala", FRAMES, {}, 256),
])
def test_torso_output_size(name, space, options, size):
    torch.manual_seed(0)
    torso = make_torso(name, space, **options)
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(2)])).float()
    assert torso.output_size == size
    assert torso(obs).shape == (2, size)


def test_impala_matches_reference_agent():
    """4 stacked 84x84 frames give the reference agent's Linear(3872, 256)."""
    torso = make_torso("impala", FRAMES)
    assert torso.head[0].in_features == 3872 and torso.head[0].out_features == 256


@pytest.mark.parametrize("name, space, accepts", [
    ("nature_cnn", VECTOR, "uint8 Box of frames"),
    ("impala", spaces.Box(0, 1, (4, 84, 84), np.float32), "uint8 Box of frames"),
    ("nature_cnn", spaces.Box(0, 255, (4, 20, 20), np.uint8), "H, W >= 36"),
    ("mlp", spaces.Dict({"a": VECTOR}), "Box of any shape"),
    ("identity", spaces.Discrete(4), "Box of any shape"),
])
def test_torso_rejects_space(name, space, accepts):
    with pytest.raises(ValueError) as info:
        make_torso(name, space)
    message = str(info.value)
    assert repr(name) in message and str(space) in message and accepts in message


def test_identity_torso_scale():
    space = spaces.Box(-1, 1, (3, 2), np.float32)
    obs = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(make_torso("identity", space, scale=5.0)(obs), 5.0 * obs.flatten(1), rtol=0, atol=0)
    assert torch.equal(make_torso("identity", space)(obs), obs.flatten(1))
    for bad in (0.0, -1.0, math.inf, True, "2"):
        with pytest.raises(ValueError, match=r"scale=.* is not allowed: it must be a finite number > 0"):
            make_torso("identity", space, scale=bad)


def test_torso_rejects_bad_options():
    with pytest.raises(ValueError, match="torso 'mlp' has no option widths; its options are: hidden_sizes"):
        make_torso("mlp", VECTOR, widths=[3])
    with pytest.raises(ValueError, match=r"hidden_sizes=\[\] is not allowed"):
        make_torso("mlp", VECTOR, hidden_sizes=[])
    with pytest.raises(ValueError, match="torso='resnet' is not allowed; choose one of"):
        make_torso("resnet", VECTOR)


# ---------------------------------------------------------------------------------------------- policy
@pytest.mark.parametrize("space", [spaces.MultiDiscrete([2, 3]), spaces.Discrete(3, start=1),
                                   spaces.Box(0, 3, (2,), np.int64)])
def test_policy_rejects_action_space(space):
    with pytest.raises(ValueError, match=r"action_space=.* is not allowed: the policy takes Discrete \(start 0\)"):
        RecurrentPolicy(VECTOR, space)


@pytest.mark.parametrize("action_space", [DISCRETE, BOX], ids=["discrete", "box"])
@pytest.mark.parametrize("core", ["delta", "linear", "lstm"])
def test_evaluate_equals_act_step_by_step(core, action_space):
    assert_evaluate_equals_act(make_policy(core, action_space), action_space)


@pytest.mark.parametrize("action_space", [DISCRETE, BOX], ids=["discrete", "box"])
@pytest.mark.parametrize("core, core_options, core_output", HEADS)
def test_evaluate_equals_act_step_by_step_with_other_heads_and_layers(core, core_options, core_output, action_space):
    policy = make_policy(core, action_space, core_options=core_options, core_output=core_output)
    extra = policy.torso.output_size if core_output == "core_and_features" else 0
    assert policy.actor.in_features == policy.critic.in_features == policy.core.output_size + extra
    assert_evaluate_equals_act(policy, action_space)


def test_core_and_features_heads_read_the_torso_features_after_the_core():
    """The heads' input is [core output, torso features]: the features reach the actor without the core."""
    policy = make_policy("lstm", core_output="core_and_features")
    obs = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    state, starts = policy.initial_state(3), torch.zeros(3, dtype=torch.bool)
    (logits,), values, _ = policy(obs, state, starts)
    h, _ = policy.core.step(policy.torso(obs), state, starts)
    features = policy.torso(obs)
    torch.testing.assert_close(logits, policy.actor(torch.cat([h, features], -1)))
    torch.testing.assert_close(values, policy.critic(torch.cat([h, features], -1)).squeeze(-1))


def test_unknown_core_output_is_named():
    with pytest.raises(ValueError, match=r"^core_output='skip' is not allowed; choose one of: 'core', "
                                         r"'core_and_features'$"):
        make_policy(core_output="skip")


def assert_evaluate_equals_act(policy, action_space):
    """Log-probs and values of a sequence with episode starts inside it equal those of act, step by step."""
    g = torch.Generator().manual_seed(1)
    T, B = 7, 3
    obs = torch.randn(T, B, 5, generator=g, dtype=torch.float64)
    starts = random_starts(g, T, B)
    starts[3, 1] = True
    state0 = policy.initial_state(B)
    # Start from a state that is not the initial one, so the carried state matters.
    _, state0, _, _ = policy.act(torch.randn(B, 5, generator=g, dtype=torch.float64), state0,
                                 torch.zeros(B, dtype=torch.bool))
    state, actions, log_probs, values = state0, [], [], []
    for t in range(T):
        a, state, v, lp = policy.act(obs[t], state, starts[t])
        actions.append(a), values.append(v), log_probs.append(lp)
    actions = torch.stack(actions)
    assert actions.shape == (T, B, *((2,) if action_space is BOX else ()))
    seq_log_probs, entropy, seq_values = policy.evaluate(obs, actions, state0, starts)
    torch.testing.assert_close(seq_log_probs, torch.stack(log_probs))
    torch.testing.assert_close(seq_values, torch.stack(values))
    assert entropy.shape == (T, B)
    if action_space is BOX:  # state-independent std: the entropy of N(., exp(log_std)) summed over dims
        expected = (policy.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum()
        torch.testing.assert_close(entropy, expected.expand(T, B))
    (seq_log_probs.sum() + seq_values.sum()).backward()
    assert all(p.grad is not None for p in policy.core.parameters())


@pytest.mark.parametrize("action_space, squash", [(DISCRETE, False), (BOX, False), (BOX, True)],
                         ids=["discrete", "box-clipped", "box-squashed"])
def test_deterministic_act_takes_the_mode(action_space, squash):
    """act(deterministic=True) returns the mode of the distribution act samples from: the argmax of the categorical
    logits, the mean of the Gaussian, with that distribution's log-prob; predict and population_act send it to the
    environment, Box actions clipped or squashed into the bounds."""
    policy = make_policy("delta", action_space, log_std_init=0.5, action_squash=squash)
    g = torch.Generator().manual_seed(7)
    B = 32
    obs = torch.randn(B, 5, generator=g, dtype=torch.float64)
    starts = random_starts(g, B)
    _, state, _, _ = policy.act(torch.randn(B, 5, generator=g, dtype=torch.float64), policy.initial_state(B),
                                torch.ones(B, dtype=torch.bool))
    # The distribution, from the policy's layers.
    h, _ = policy.core.step(policy.torso(obs), state, starts)
    with torch.no_grad():  # a sharp actor centred on these rows (it starts near uniform): their modes differ
        policy.actor.weight.copy_(30.0 * torch.randn(policy.actor.weight.shape, generator=g, dtype=torch.float64))
        policy.actor.bias.copy_(-policy.actor.weight @ h.mean(0))
    out = policy.actor(h)
    actions, _, _, log_probs = policy.act(obs, state, starts, deterministic=True)
    if action_space is DISCRETE:
        dist = torch.distributions.Categorical(logits=out)
        mode = out.argmax(-1)
        assert actions.dtype == torch.int64 and torch.equal(actions, mode)
        assert len(set(mode.tolist())) == 3  # every action is the mode of some row
        expected_env = mode
    else:
        dist = torch.distributions.Independent(torch.distributions.Normal(out, policy.log_std.exp()), 1)
        torch.testing.assert_close(actions, out, rtol=0, atol=1e-12)
        assert (out.abs() > 1).any() and (out.abs() < 1).any()  # some means lie outside the bounds
        low, high = torch.tensor(BOX.low).double(), torch.tensor(BOX.high).double()
        expected_env = low + (high - low) * torch.sigmoid(2 * out) if squash else out.clamp(-1.0, 1.0)
    torch.testing.assert_close(log_probs, dist.log_prob(actions), rtol=0, atol=1e-12)
    sampled, _, _, _ = policy.act(obs, state, starts)
    assert not torch.equal(sampled, actions)  # without deterministic, act samples

    predicted, _ = policy.predict(obs.numpy(), state, starts.numpy(), deterministic=True)
    torch.testing.assert_close(torch.as_tensor(predicted), expected_env.detach(), rtol=0, atol=1e-12)
    population, _ = policy.population_act(policy.get_flat_parameters()[None], obs[None],
                                          tuple(s[None] for s in state), starts[None])
    torch.testing.assert_close(population[0], expected_env.detach(), rtol=0, atol=1e-12)


def test_image_policy_act_and_evaluate():
    policy = make_policy("delta", DISCRETE, torso="impala", observation_space=spaces.Box(0, 255, (2, 12, 12), np.uint8))
    g = torch.Generator().manual_seed(2)
    obs = torch.randint(0, 256, (3, 2, 2, 12, 12), generator=g, dtype=torch.uint8)
    starts = torch.zeros(3, 2, dtype=torch.bool)
    actions, state, values, log_probs = policy.act(obs[0], policy.initial_state(2), starts[0])
    assert actions.shape == values.shape == log_probs.shape == (2,)
    out = policy.evaluate(obs, torch.zeros(3, 2, dtype=torch.long), policy.initial_state(2), starts)
    assert [o.shape for o in out] == [(3, 2)] * 3
    with pytest.raises(TypeError, match=r"obs must be torch.uint8 frames \(0..255\) for torso ImpalaResNet"):
        policy.act(obs[0].double(), state, starts[0])



@pytest.mark.parametrize("torso", ["nature_cnn", "impala"])
def test_bfloat16_torso_autocast_computes_the_torso_in_bfloat16_and_hands_on_the_policys_dtype(torso):
    space = spaces.Box(0, 255, (2, 40, 40), np.uint8)
    plain = make_policy("lstm", DISCRETE, torso=torso, observation_space=space).float()
    fast = make_policy("lstm", DISCRETE, torso=torso, observation_space=space, torso_autocast="bfloat16").float()
    fast.load_state_dict(plain.state_dict())
    obs = torch.randint(0, 256, (4, 3, 2, 40, 40), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    starts = torch.zeros(4, 3, dtype=torch.bool)
    features = [p._features(obs, 2) for p in (plain, fast)]
    assert [f.dtype for f in features] == [torch.float32, torch.float32]
    assert not torch.equal(*features)  # computed in bfloat16: not the float32 values ...
    torch.testing.assert_close(features[1], features[0], rtol=0.05, atol=0.02)  # ... but within its precision
    actions = torch.zeros(4, 3, dtype=torch.long)
    log_probs, values, _ = fast.evaluate(obs, actions, fast.initial_state(3), starts)
    (log_probs.sum() + values.sum()).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in fast.torso.parameters())
    with pytest.raises(ValueError, match=r"^torso_autocast='float16' is not allowed; choose one of: 'none', "
                                         r"'bfloat16'$"):
        make_policy(torso_autocast="float16")

def test_bad_inputs_name_the_argument():
    policy = make_policy("delta", BOX)
    state = policy.initial_state(2)
    starts = torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"obs must have shape \[B, 5\] for observation space Box.*got \(2, 4\)"):
        policy.act(torch.zeros(2, 4), state, starts)
    with pytest.raises(TypeError, match="obs must be a torch.Tensor"):
        policy.act(np.zeros((2, 5)), state, starts)
    with pytest.raises(ValueError, match=r"obs_seq must have shape \[T, B, 5\]"):
        policy.evaluate(torch.zeros(2, 5), torch.zeros(2, 2), state, starts)
    with pytest.raises(ValueError, match=r"actions must have shape \[T, B, 2\] = \(3, 2, 2\) to match obs_seq"):
        policy.evaluate(torch.zeros(3, 2, 5), torch.zeros(3, 2), state, torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"actions must be a floating point torch.Tensor \[T, B, 2\]"):
        policy.evaluate(torch.zeros(3, 2, 5), torch.zeros(3, 2, 2, dtype=torch.long), state,
                        torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="episode_start must be a torch.bool tensor"):
        policy.act(torch.zeros(2, 5), state, torch.zeros(2))


# ---------------------------------------------------------------------------------------------- flat parameters
def test_flat_parameters_round_trip():
    policy = make_policy("delta", BOX)
    flat = policy.get_flat_parameters()
    assert flat.shape == (policy.num_flat_parameters,)
    new = torch.randn(policy.num_flat_parameters, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    policy.set_flat_parameters(new)
    torch.testing.assert_close(policy.get_flat_parameters(), new.double())
    assert policy.dtype == torch.float64
    new.zero_()  # the policy keeps a copy, not a view of the vector
    assert policy.get_flat_parameters().abs().sum() > 0
    with pytest.raises(ValueError, match=rf"vec must have shape \[num_flat_parameters={policy.num_flat_parameters}\], "
                                         r"got \(3,\)"):
        policy.set_flat_parameters(torch.zeros(3))


@pytest.mark.parametrize("action_space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_flat_parameters_are_those_the_deterministic_action_depends_on(action_space):
    policy = make_policy("lstm", action_space)
    acting = [name for name, _ in policy.named_parameters() if not name.startswith("critic.") and name != "log_std"]
    assert policy.num_flat_parameters == sum(p.numel() for name, p in policy.named_parameters() if name in acting)
    others = {name: p.detach().clone() for name, p in policy.named_parameters() if name not in acting}
    assert sorted(others) == ["critic.bias", "critic.weight"] + (["log_std"] if action_space is BOX else [])
    flat = torch.randn(policy.num_flat_parameters, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    policy.set_flat_parameters(flat)
    assert all(torch.equal(p, others[name]) for name, p in policy.named_parameters() if name in others)
    # the value head and the log std change nothing in what the deterministic action is
    obs, starts = torch.randn(3, 5, generator=torch.Generator().manual_seed(5)), torch.zeros(3, dtype=torch.bool)
    before, _, _, _ = policy.act(obs, policy.initial_state(3), starts, deterministic=True)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if name in others:
                p.add_(1.0)
    after, _, _, _ = policy.act(obs, policy.initial_state(3), starts, deterministic=True)
    assert torch.equal(before, after)


# ---------------------------------------------------------------------------------------------- population
@pytest.mark.parametrize("action_space", [DISCRETE, BOX], ids=["discrete", "box"])
@pytest.mark.parametrize("torso", ["mlp", "identity"])
@pytest.mark.parametrize("core", ["delta", "linear", "lstm", "gru", "direct", "rdn"])
def test_population_act_equals_separate_forwards(core, torso, action_space):
    assert_population_act_equals_separate_forwards(make_policy(core, action_space, torso=torso))


@pytest.mark.parametrize("action_space", [DISCRETE, BOX], ids=["discrete", "box"])
@pytest.mark.parametrize("core, core_options, core_output", HEADS)
def test_population_act_equals_separate_forwards_with_other_heads_and_layers(core, core_options, core_output,
                                                                             action_space):
    assert_population_act_equals_separate_forwards(
        make_policy(core, action_space, core_options=core_options, core_output=core_output))


def assert_population_act_equals_separate_forwards(policy):
    """P flat parameter vectors stepped as one population, starts inside, equal each set into the policy and
    stepped on its own (actions and states)."""
    g = torch.Generator().manual_seed(4)
    P, E, steps = 3, 4, 5
    n = policy.num_flat_parameters
    flat = policy.get_flat_parameters() + 0.3 * torch.randn(P, n, generator=g, dtype=torch.float64)
    state = policy.population_initial_state(P, E)
    assert all(s.shape[:2] == (P, E) for s in state)
    separate = [policy.initial_state(E) for _ in range(P)]
    for t in range(steps):
        obs = torch.randn(P, E, 5, generator=g, dtype=torch.float64)
        starts = random_starts(g, P, E) | (t == 0)
        actions, state = policy.population_act(flat, obs, state, starts)
        for p in range(P):
            policy.set_flat_parameters(flat[p])
            a, separate[p], _, _ = policy.act(obs[p], separate[p], starts[p], deterministic=True)
            torch.testing.assert_close(actions[p], policy.env_actions(a))
            for s_pop, s_one in zip(state, separate[p]):
                torch.testing.assert_close(s_pop[p], s_one)


def test_population_act_with_image_torso():
    torch.manual_seed(0)
    frames = spaces.Box(0, 255, (2, 12, 12), np.uint8)
    policy = RecurrentPolicy(frames, DISCRETE, torso="impala", torso_options=dict(channels=[4], features=8),
                             core="delta", core_options=CORE_OPTIONS["delta"]).double()
    g = torch.Generator().manual_seed(5)
    P, E = 2, 2
    n = policy.num_flat_parameters
    flat = policy.get_flat_parameters() + 0.1 * torch.randn(P, n, generator=g, dtype=torch.float64)
    state = policy.population_initial_state(P, E)
    separate = [policy.initial_state(E) for _ in range(P)]
    for t in range(2):
        obs = torch.randint(0, 256, (P, E, *frames.shape), generator=g, dtype=torch.uint8)
        starts = torch.full((P, E), t == 0)
        actions, state = policy.population_act(flat, obs, state, starts)
        for p in range(P):
            policy.set_flat_parameters(flat[p])
            a, separate[p], _, _ = policy.act(obs[p], separate[p], starts[p], deterministic=True)
            torch.testing.assert_close(actions[p], a)
            torch.testing.assert_close(state[0][p], separate[p][0])


@pytest.mark.parametrize("action_space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_population_act_reads_no_values_on_the_host(action_space):
    """On the meta device tensors have no values: any .item(), numpy or data-dependent branch would fail."""
    policy = make_policy("delta", action_space).to("meta")
    P, E = 3, 2
    flat = torch.empty(P, policy.num_flat_parameters, device="meta", dtype=torch.float64)
    state = policy.population_initial_state(P, E, "meta")
    starts = torch.zeros(P, E, dtype=torch.bool, device="meta")
    for deterministic in (True, False):
        actions, state = policy.population_act(flat, torch.empty(P, E, 5, device="meta"), state, starts, deterministic)
        assert actions.device.type == "meta" and actions.shape == (P, E, *policy.action_shape)


def test_population_act_checks_shapes():
    policy = make_policy("delta", DISCRETE)
    P, E = 2, 3
    flat = policy.get_flat_parameters().expand(P, -1)
    state = policy.population_initial_state(P, E)
    obs, starts = torch.zeros(P, E, 5), torch.zeros(P, E, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"flat_params must have shape \[P, num_flat_parameters="):
        policy.population_act(flat[:, 1:], obs, state, starts)
    with pytest.raises(ValueError, match=r"obs must have shape \[P, E, ...\] with P=2 \(the rows of flat_params\)"):
        policy.population_act(flat, torch.zeros(3, E, 5), state, starts)
    with pytest.raises(ValueError, match=r"obs must have shape \[P, E, 5\]"):
        policy.population_act(flat, torch.zeros(P, 5), state, starts)
    with pytest.raises(ValueError, match=r"state\[0\] must have shape \[P, E, ...\] = \(2, 3\)"):
        policy.population_act(flat, obs, policy.population_initial_state(P, 1), starts)
    with pytest.raises(ValueError, match=r"episode_start must have shape \(2, 3\)"):
        policy.population_act(flat, obs, state, starts[:, :1])


class CountingTensor(torch.Tensor):
    """A tensor subclass that counts the operations that reach its __torch_function__."""

    calls = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        CountingTensor.calls += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def test_population_binds_a_tensor_subclass_as_a_plain_tensor():
    # EvoTorch hands out read-only tensor subclasses; stepping with them would be several times slower
    policy = make_policy("lstm", BOX)
    P, E = 3, 2
    flat = policy.get_flat_parameters().expand(P, -1).clone().as_subclass(CountingTensor)
    population = policy.population(flat)
    calls = CountingTensor.calls
    obs = torch.randn(P, E, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    actions, state = population.act(obs, population.initial_state(E))
    assert CountingTensor.calls == calls
    assert type(actions) is torch.Tensor and all(type(s) is torch.Tensor for s in state)
    expected, _ = policy.population(flat.as_subclass(torch.Tensor)).act(obs, population.initial_state(E))
    assert torch.equal(actions, expected)


def test_population_graph_samples_anew_and_reads_the_shared_parameters():
    # the step is traced once per shapes: what it draws and the log std it reads must not be frozen
    policy = make_policy("delta", BOX)
    P, E = 2, 3
    population = policy.population(policy.get_flat_parameters().expand(P, -1))
    obs, state = torch.zeros(P, E, 5, dtype=torch.float64), population.initial_state(E)
    first, _ = population.act(obs, state, deterministic=False)
    second, _ = population.act(obs, state, deterministic=False)
    assert not torch.equal(first, second)
    with torch.no_grad():
        policy.log_std.fill_(-30.0)  # the samples collapse onto the (clipped) mean
    sampled, _ = population.act(obs, state, deterministic=False)
    mean, _ = population.act(obs, state, deterministic=True)
    torch.testing.assert_close(sampled, mean)
    assert len(policy._population_graphs) == 2
    copy = pickle.loads(pickle.dumps(policy))
    assert copy._population_graphs == {}
    torch.testing.assert_close(copy.population(policy.get_flat_parameters().expand(P, -1)).act(obs, state)[0], mean)


def test_population_steps_without_starts_equal_steps_with_no_start():
    policy = make_policy("lstm", BOX)
    P, E = 3, 2
    noise = torch.randn(P, policy.num_flat_parameters, generator=torch.Generator().manual_seed(1))
    flat = policy.get_flat_parameters() + 0.1 * noise
    population = policy.population(flat)
    obs = torch.randn(4, P, E, 5, generator=torch.Generator().manual_seed(2))
    state_a = state_b = population.initial_state(E)
    with torch.no_grad():
        for t in range(4):
            a, state_a = population.act(obs[t], state_a, None)
            b, state_b = population.act(obs[t], state_b, torch.zeros(P, E, dtype=torch.bool))
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- Stable-Baselines3
@pytest.mark.parametrize("env_id, action_space", [("CartPole-v1", spaces.Discrete(2)),
                                                  ("Pendulum-v1", spaces.Box(-2.0, 2.0, (1,), np.float32))])
def test_sb3_evaluate_policy(env_id, action_space):
    env = make_vec_env(env_id, n_envs=2, seed=0)
    torch.manual_seed(0)
    policy = RecurrentPolicy(env.observation_space, env.action_space, torso="mlp",
                             torso_options=dict(hidden_sizes=[8]), core="delta", core_options=CORE_OPTIONS["delta"])
    assert policy.action_space == action_space
    rewards, lengths = evaluate_policy(policy, env, n_eval_episodes=2, deterministic=False,
                                       return_episode_rewards=True)
    assert len(rewards) == len(lengths) == 2 and all(n > 0 for n in lengths)
    env.close()


def test_predict_single_observation_and_clipping():
    policy = make_policy("delta", BOX, log_std_init=3.0)
    obs = VECTOR.sample()
    action, state = policy.predict(obs, episode_start=np.array([True]))
    assert action.shape == (2,) and isinstance(action, np.ndarray)
    batch = np.stack([VECTOR.sample() for _ in range(64)])
    actions, state = policy.predict(batch)
    assert actions.shape == (64, 2) and np.all(np.abs(actions) <= 1.0)
    actions, _ = policy.predict(batch, state, np.zeros(64, dtype=bool))
    assert actions.shape == (64, 2)
    with pytest.raises(ValueError, match=r"observation must have shape \[B, 5\]"):
        policy.predict(np.zeros((2, 3)))


def test_predict_runs_a_gymnasium_env():
    env = gym.make("CartPole-v1")
    policy = make_policy("delta", env.action_space, observation_space=env.observation_space)
    obs, _ = env.reset(seed=0)
    action, state = policy.predict(obs, episode_start=np.array([True]), deterministic=True)
    for _ in range(5):
        obs, *_ = env.step(int(action))
        action, state = policy.predict(obs, state, np.array([False]), deterministic=True)
    assert env.action_space.contains(int(action))
