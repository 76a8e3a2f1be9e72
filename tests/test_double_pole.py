"""The torch double pole benchmark (fwp_rl.envs.double_pole) against docs/double_pole.md: the RK4 dynamics
against a plain scalar RK4 of Wieland's equations, batched against one-by-one simulation, the failure limits,
the fitness functions on trajectories replayed here step by step, the generalization starts, the Gymnasium
environments, and the errors for bad input. Deterministic, CPU only (the CUDA test skips without CUDA)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from fwp_rl.envs.double_pole import (  # importing fwp_rl.envs registers the Gymnasium ids
    GOMEZ_MIN_FORCE,
    DoublePole,
    DoublePoleConfig,
    DoublePoleEnv,
    DoublePoleVectorEnv,
    JiggleWindow,
    balance,
    balanced,
    damping_fitness,
    fitness,
    generalization_starts,
    generalization_test,
    long_test,
    make_config,
    observe,
    output_to_force,
    standard_starts,
    step_physics,
)

F64 = torch.float64
IDS = ("fwp_rl/DoublePole-v0", "fwp_rl/DoublePoleNoVel-v0")

# the spec's numbers, written out again so that the module's constants are checked, not reused
G, CART, MASSES, HALF_LENGTHS, MU_C, MU_P = -9.8, 1.0, (0.1, 0.01), (0.5, 0.05), 0.0005, 0.000002
H, TRACK, ANGLE = 0.01, 2.4, 0.628329
# a state feedback gain (discrete LQR of the linearized system, rounded): force = -K . state, clipped
K = torch.tensor([1.7, 3.7, 71.0, 18.8, -50.7, -4.5], dtype=F64)


# ---------------------------------------------------------------- a plain scalar reference of the physics
def reference_derivatives(s, force, friction):
    """Wieland's equations as the spec writes them, one state of six Python floats."""
    x, x_dot, th1, th1_dot, th2, th2_dot = s
    poles = [(th1, th1_dot, MASSES[0], HALF_LENGTHS[0]), (th2, th2_dot, MASSES[1], HALF_LENGTHS[1])]
    f_sum, m_sum = 0.0, 0.0
    for th, th_dot, m, l in poles:
        f_sum += m * l * th_dot ** 2 * math.sin(th) + 0.75 * m * math.cos(th) * (
            MU_P * th_dot / (m * l) + G * math.sin(th))
        m_sum += m * (1.0 - 0.75 * math.cos(th) ** 2)
    sgn = (x_dot > 0) - (x_dot < 0)
    x_ddot = (force - (MU_C * sgn if friction else 0.0) + f_sum) / (CART + m_sum)
    th_ddot = [-3.0 / (4.0 * l) * (x_ddot * math.cos(th) + G * math.sin(th) + MU_P * th_dot / (m * l))
               for th, th_dot, m, l in poles]
    return [x_dot, x_ddot, th1_dot, th_ddot[0], th2_dot, th_ddot[1]]


def reference_control_step(s, force, friction):
    """Two classic RK4 substeps of h = 0.01 s with the force held."""
    s = list(s)
    for _ in range(2):
        k1 = reference_derivatives(s, force, friction)
        k2 = reference_derivatives([a + 0.5 * H * b for a, b in zip(s, k1)], force, friction)
        k3 = reference_derivatives([a + 0.5 * H * b for a, b in zip(s, k2)], force, friction)
        k4 = reference_derivatives([a + H * b for a, b in zip(s, k3)], force, friction)
        s = [a + H / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4) for a, b1, b2, b3, b4 in zip(s, k1, k2, k3, k4)]
    return s


def reference_balanced(s):
    return abs(s[0]) <= TRACK and abs(s[2]) <= ANGLE and abs(s[4]) <= ANGLE


def random_states(n, seed):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([2.4, 3.0, 0.6, 5.0, 0.6, 20.0], dtype=F64)
    return (2 * torch.rand(n, 6, generator=g, dtype=F64) - 1) * scale


# ---------------------------------------------------------------- 1. the dynamics
@pytest.mark.parametrize("friction", [True, False])
def test_step_physics_matches_scalar_rk4(friction):
    states = random_states(20, seed=1)
    states[3, 1] = 0.0  # x_dot = 0: sgn(0) = 0, no friction force
    forces = (2 * torch.rand(20, generator=torch.Generator().manual_seed(2), dtype=F64) - 1) * 10
    config = DoublePoleConfig(cart_friction=friction)
    batched = step_physics(states, forces, config)
    assert batched.shape == (20, 6) and batched.dtype == F64
    for i in range(20):
        expected = torch.tensor(reference_control_step(states[i].tolist(), forces[i].item(), friction), dtype=F64)
        torch.testing.assert_close(batched[i], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(step_physics(states[i], forces[i], config), expected, rtol=1e-12, atol=1e-12)


def test_cart_friction_switch():
    rest = torch.zeros(6, dtype=F64)  # at rest with no force: sgn(0) = 0, so friction leaves it at rest too
    zero = torch.tensor(0.0, dtype=F64)
    for friction in (True, False):
        assert torch.equal(step_physics(rest, zero, DoublePoleConfig(cart_friction=friction)), rest)
    states = random_states(4, seed=3)
    force = torch.full((4,), 1.5, dtype=F64)
    on, off = (step_physics(states, force, DoublePoleConfig(cart_friction=f)) for f in (True, False))
    assert (on - off).abs().amax() > 1e-7


def test_step_physics_under_vmap_and_leading_dims():
    config = DoublePoleConfig()
    states = random_states(12, seed=4)
    forces = torch.linspace(-10, 10, 12, dtype=F64)
    batched = step_physics(states, forces, config)
    mapped = torch.func.vmap(lambda s, f: step_physics(s, f, config))(states, forces)
    torch.testing.assert_close(mapped, batched, rtol=1e-14, atol=1e-14)
    grid = step_physics(states.view(3, 4, 6), forces.view(3, 4), config)
    torch.testing.assert_close(grid.view(12, 6), batched, rtol=1e-14, atol=1e-14)


def test_step_physics_large_batch_matches_small_batches():
    # a large batch runs the vectorized loops of the elementwise kernels; the results must not move
    n = 3000
    states = random_states(n, seed=9)
    forces = torch.linspace(-10, 10, n, dtype=F64)
    for friction in (True, False):
        config = DoublePoleConfig(cart_friction=friction)
        large = step_physics(states, forces, config)
        small = torch.cat([step_physics(states[i:i + 7], forces[i:i + 7], config) for i in range(0, n, 7)])
        torch.testing.assert_close(large, small, rtol=1e-13, atol=1e-13)
        for i in (0, 1234, n - 1):
            expected = torch.tensor(reference_control_step(states[i].tolist(), forces[i].item(), friction), dtype=F64)
            torch.testing.assert_close(large[i], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("friction", [True, False])
def test_non_finite_cart_does_not_reach_the_poles(friction):
    # x does not enter the equations and x_dot only through sgn(x_dot): as in the scalar reference, an infinite
    # or NaN cart position or an infinite cart velocity leaves the poles' numbers finite
    states = random_states(4, seed=10)
    states[0, 0], states[1, 0], states[2, 1], states[3, 1] = math.inf, math.nan, -math.inf, math.inf
    forces = torch.tensor([1.0, -2.0, 3.0, 0.0], dtype=F64)
    got = step_physics(states, forces, DoublePoleConfig(cart_friction=friction))
    expected = torch.tensor([reference_control_step(s.tolist(), f.item(), friction) for s, f in zip(states, forces)],
                            dtype=F64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert torch.isfinite(got[:, 2:]).all()


def test_output_to_force():
    o = torch.tensor([-1.0, 0.0, 0.25, 0.499, 0.5, 0.5005, 0.75, 1.0, 2.0], dtype=F64)
    plain = output_to_force(o, DoublePoleConfig())
    torch.testing.assert_close(plain, torch.tensor([-10, -10, -5, -0.02, 0, 0.01, 5, 10, 10], dtype=F64))
    gomez = output_to_force(o, DoublePoleConfig(min_force=GOMEZ_MIN_FORCE))
    m = 10 / 256
    torch.testing.assert_close(gomez, torch.tensor([-10, -10, -5, -m, m, m, 5, 10, 10], dtype=F64))


def test_observe_scaling_and_bias():
    s = torch.tensor([[1.2, -0.5, 0.13, 0.4, -0.26, 3.0]], dtype=F64)
    markov = observe(s, DoublePoleConfig())
    expected = [1.2 / 4.8, -0.5 / 2, 0.13 / 0.52, 0.4 / 2, -0.26 / 0.52, 3.0 / 2, 0.5]
    torch.testing.assert_close(markov, torch.tensor([expected], dtype=F64))
    nonmarkov = observe(s, DoublePoleConfig(task="nonmarkov", bias=1.0))
    torch.testing.assert_close(nonmarkov, torch.tensor([[1.2 / 4.8, 0.13 / 0.52, -0.26 / 0.52, 1.0]], dtype=F64))


def test_observe_balanced_and_force_under_vmap_and_leading_dims():
    states = random_states(12, seed=11)
    for config in (DoublePoleConfig(), DoublePoleConfig(task="nonmarkov", bias=-1.25, min_force=GOMEZ_MIN_FORCE)):
        obs = observe(states, config)
        torch.testing.assert_close(observe(states.view(3, 4, 6), config).view(12, -1), obs, rtol=0, atol=0)
        torch.testing.assert_close(torch.func.vmap(lambda s: observe(s, config))(states), obs, rtol=0, atol=0)
        torch.testing.assert_close(observe(states[5], config), obs[5], rtol=0, atol=0)
        assert (obs[:, -1] == config.bias).all()
        o = torch.linspace(-0.5, 1.5, 12, dtype=F64)
        force = output_to_force(o, config)
        torch.testing.assert_close(torch.func.vmap(lambda v: output_to_force(v, config))(o), force, rtol=0, atol=0)
    inside = balanced(states)
    assert torch.equal(balanced(states.view(3, 4, 6)).view(12), inside)
    assert torch.equal(torch.func.vmap(balanced)(states), inside)


# ---------------------------------------------------------------- 2. batched equals one by one
def lqr_outputs(states, gains, noise):
    """Per-simulation feedback with its own gain and noise: o = 0.5 - gain K.s / 20 + noise."""
    return 0.5 - gains * (states @ K) / 20 + noise


def test_batched_equals_one_by_one():
    config = DoublePoleConfig()
    g = torch.Generator().manual_seed(5)
    starts = torch.cat([standard_starts(3, config), generalization_starts()[[0, 77, 312, 400, 624]]])
    n, steps = len(starts), 60
    gains = torch.tensor([0.0, 1.0, 1.0, 0.2, 1.0, 0.6, 0.4, 1.0], dtype=F64)
    noise = 0.3 * torch.randn(steps, n, generator=g, dtype=F64)
    noise[:, 2] *= 3  # a noisier one

    batch = DoublePole(config)
    batch.reset(starts)
    singles = [DoublePole(config) for _ in range(n)]
    for i, sim in enumerate(singles):
        sim.reset(starts[i:i + 1])
    failed_at = {}
    for k in range(steps):
        before = batch.state.clone()
        obs, alive = batch.step(lqr_outputs(batch.state, gains, noise[k]))
        for i, sim in enumerate(singles):
            obs_i, alive_i = sim.step(lqr_outputs(sim.state, gains[i:i + 1], noise[k, i:i + 1]))
            torch.testing.assert_close(sim.state[0], batch.state[i], rtol=0, atol=1e-12)
            torch.testing.assert_close(obs_i[0], obs[i], rtol=0, atol=1e-12)
            assert bool(alive_i[0]) == bool(alive[i]) and int(sim.steps[0]) == int(batch.steps[i])
        for i in range(n):
            if i in failed_at:  # frozen: state, alive and steps stay as they were when it failed
                assert torch.equal(batch.state[i], before[i]) and not alive[i]
                assert int(batch.steps[i]) == failed_at[i]
            elif not alive[i]:
                failed_at[i] = k  # failed at step k + 1: k steps balanced
                assert int(batch.steps[i]) == k
    assert len(set(failed_at.values())) >= 4, failed_at  # failures at different times
    assert len(failed_at) < n  # and some still balance


def test_step_takes_few_operator_calls():
    # a control step is stepped from Python, so for small N its time is its operator calls (about 240; the
    # textbook form of the physics takes about 530)
    sim = DoublePole(DoublePoleConfig())
    sim.reset(4)
    outputs = torch.full((4,), 0.6, dtype=F64)
    sim.step(outputs)
    with torch.profiler.profile() as profile:
        sim.step(outputs)
    calls = sum(event.count for event in profile.key_averages() if event.key.startswith("aten::"))
    assert calls <= 260, calls


def test_restart_puts_masked_simulations_back_to_the_standard_start():
    config = DoublePoleConfig(start_angle=0.05)
    sim = DoublePole(config)
    sim.reset(3)
    for _ in range(30):
        sim.step(torch.tensor([0.0, 0.5, 1.0], dtype=F64))
    state, steps = sim.state.clone(), sim.steps.clone()
    obs = sim.restart(torch.tensor([True, False, False]))
    assert torch.equal(sim.state[0], torch.tensor([0, 0, 0.05, 0, 0, 0], dtype=F64))
    assert torch.equal(sim.state[1:], state[1:]) and torch.equal(sim.steps[1:], steps[1:])
    assert int(sim.steps[0]) == 0 and bool(sim.alive[0])
    torch.testing.assert_close(obs, observe(sim.state, config))


# ---------------------------------------------------------------- 3. failure
@pytest.mark.parametrize("column, limit", [(0, TRACK), (2, ANGLE), (4, ANGLE)])
def test_failure_limits(column, limit):
    def state(value):
        s = torch.zeros(6, dtype=F64)
        s[column] = value
        return s

    inside = [limit, -limit, math.nextafter(limit, 0.0), 0.0]
    outside = [math.nextafter(limit, math.inf), -math.nextafter(limit, math.inf), limit + 1e-9, math.inf, math.nan]
    assert all(bool(balanced(state(v))) for v in inside)
    assert not any(bool(balanced(state(v))) for v in outside)
    sim = DoublePole()
    sim.reset(torch.stack([state(v) for v in inside + outside]))
    assert sim.alive.tolist() == [True] * len(inside) + [False] * len(outside)


def test_velocities_do_not_fail():
    s = torch.tensor([0.0, 1e6, 0.0, -1e6, 0.0, 1e6], dtype=F64)
    assert bool(balanced(s))


def test_step_fails_on_crossing_a_limit_and_on_nan():
    start = torch.tensor([[2.39, 1.0, 0, 0, 0, 0], [0, 0, 0.62, 1.0, 0, 0], [0, 0, 0, 0, 0.62, 5.0],
                          [2.0, 0.0, 0, 0, 0, 0], [0, 0, 0.07, 0, 0, 0]], dtype=F64)
    outputs = torch.tensor([0.5, 0.5, 0.5, 0.5, math.nan], dtype=F64)
    sim = DoublePole()
    sim.reset(start)
    assert sim.alive.all()
    _, alive = sim.step(outputs)
    assert alive.tolist() == [False, False, False, True, False]
    assert sim.steps.tolist() == [0, 0, 0, 1, 0]
    assert torch.isnan(sim.state[4]).all()  # the NaN force made the state NaN, which fails


# ---------------------------------------------------------------- 4. fitness
def test_damping_fitness_by_hand():
    steps = torch.tensor([0, 50, 99, 100, 500, 1000])
    jiggle_total = torch.tensor([1.0, 2.0, 3.0, 7.5, 0.75, 1.5], dtype=F64)
    expected = torch.tensor([0.0, 0.005, 0.0099, 0.01 + 0.09, 0.05 + 0.9, 0.1 + 0.45], dtype=F64)
    torch.testing.assert_close(damping_fitness(steps, jiggle_total), expected, rtol=1e-15, atol=0)


class SwitchingController:
    """Non-Markov test controller with memory: state feedback with velocities estimated by finite differences
    of the observed positions, until step switch_at[i] from which simulation i is pushed at +10 N."""

    def __init__(self, switch_at):
        self.switch_at = torch.tensor(switch_at)
        self.previous = None
        self.calls = 0

    def __call__(self, obs):
        positions = obs[:, :3] * torch.tensor([4.8, 0.52, 0.52], dtype=obs.dtype, device=obs.device)
        previous = positions if self.previous is None else self.previous
        velocities = (positions - previous) / 0.02
        self.previous = positions
        state = torch.stack([positions, velocities], dim=-1).flatten(1)  # x, x_dot, th1, th1_dot, th2, th2_dot
        feedback = 0.5 - (state @ K.to(obs.device)) / 20
        output = torch.where(self.calls >= self.switch_at, torch.ones_like(feedback), feedback)
        self.calls += 1
        return output


SWITCH_AT = [95, 96, 97, 150, 420]


def replay(switch_at, config, max_steps):
    """The spec's episode, stepped here: the states s_0 (start), s_1, ... while balanced, per simulation."""
    n = len(switch_at)
    controller = SwitchingController(switch_at)
    state = torch.zeros(n, 6, dtype=F64)
    state[:, 2] = config.start_angle
    trajectories = [[state[i].tolist()] for i in range(n)]
    running = [True] * n
    for _ in range(max_steps):
        obs = torch.stack([state[:, 0] / 4.8, state[:, 2] / 0.52, state[:, 4] / 0.52,
                           torch.full((n,), 0.5, dtype=F64)], dim=-1)
        force = (controller(obs).clamp(0, 1) - 0.5) * 20
        state = step_physics(state, force, config)
        for i in range(n):
            if running[i]:
                if reference_balanced(state[i].tolist()):
                    trajectories[i].append(state[i].tolist())
                else:
                    running[i] = False
        if not any(running):
            break
    return trajectories


def test_damping_fitness_of_episodes_with_windows_100_and_101():
    config = DoublePoleConfig(task="nonmarkov")
    trajectories = replay(SWITCH_AT, config, 1000)
    t = [len(states) - 1 for states in trajectories]  # steps balanced, the start state being state 0
    assert t == [99, 100, 101, 154, 424]  # f2 = 0 below 100; at 100 the 101 window holds the start state

    def jiggle_sum(states, window):
        assert len(states) >= window
        return sum(abs(s[0]) + abs(s[1]) + abs(s[2]) + abs(s[3]) for s in states[len(states) - window:])

    sim = DoublePole(config)
    obs = sim.reset(len(SWITCH_AT))
    windows = {size: JiggleWindow(sim.state, size) for size in (100, 101)}
    controller = SwitchingController(SWITCH_AT)
    for _ in range(1000):
        obs, alive = sim.step(controller(obs))
        for window in windows.values():
            window.record(sim.state, alive)
        if not alive.any():
            break
    assert sim.steps.tolist() == t
    for size, window in windows.items():
        for i in range(1, len(t)):
            assert math.isclose(window.total()[i].item(), jiggle_sum(trajectories[i], size), rel_tol=1e-12)
        expected = [0.1 * ti / 1000 + (0.9 * 0.75 / jiggle_sum(states, size) if ti >= 100 else 0.0)
                    for ti, states in zip(t, trajectories)]
        got = fitness(SwitchingController(SWITCH_AT), len(SWITCH_AT), make_config(config, fitness_window=size))
        torch.testing.assert_close(got, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=0)
    # the 101-state window adds the state just before the 100-state one: at t = 100, the start state
    s = trajectories[1][0]
    assert s == [0, 0, 0.07, 0, 0, 0]
    difference = windows[101].total() - windows[100].total()
    assert math.isclose(difference[1].item(), 0.07, rel_tol=1e-12)
    for i in range(2, len(t)):
        s = trajectories[i][-101]
        assert math.isclose(difference[i].item(), abs(s[0]) + abs(s[1]) + abs(s[2]) + abs(s[3]), rel_tol=1e-9)


def test_jiggle_window_counts_the_start_state_as_state_0():
    start = torch.tensor([[1.0, -2.0, 0.5, -0.25, 9.0, 9.0]], dtype=F64)
    window = JiggleWindow(start, 3)
    alive = torch.tensor([True])
    window.record(torch.tensor([[0.1, 0, 0, 0, 0, 0]], dtype=F64), alive)
    assert window.total().item() == 3.75 + 0.1
    window.record(torch.tensor([[0.01, 0, 0, 0, 0, 0]], dtype=F64), alive)
    window.record(torch.tensor([[0.001, 0, 0, 0, 0, 0]], dtype=F64), alive)  # replaces the start state
    assert math.isclose(window.total().item(), 0.111, rel_tol=1e-15)
    window.record(torch.tensor([[5.0, 0, 0, 0, 0, 0]], dtype=F64), torch.tensor([False]))  # failed: kept out
    assert math.isclose(window.total().item(), 0.111, rel_tol=1e-15)


@pytest.mark.parametrize("friction", [True, False])
def test_markov_fitness_is_steps_balanced(friction):
    config = DoublePoleConfig(cart_friction=friction)
    outputs = [0.0, 0.2, 0.5, 0.8, 1.0]
    expected = []
    for o in outputs:
        s, t = [0, 0, 0.07, 0, 0, 0], 0
        while True:
            s = reference_control_step(s, (o - 0.5) * 20, friction)
            if not reference_balanced(s):
                break
            t += 1
        expected.append(float(t))
    const = torch.tensor(outputs, dtype=F64)
    got = fitness(lambda obs: const, len(outputs), config)
    assert got.dtype == F64 and got.tolist() == expected
    assert balance(lambda obs: const, len(outputs), 10_000, config).tolist() == expected


def test_long_test_and_balance_with_a_stabilizing_controller():
    config = DoublePoleConfig()
    feedback = lambda obs: 0.5 - (obs[:, :6] * torch.tensor([4.8, 2, 0.52, 2, 0.52, 2], dtype=F64)) @ K / 20
    assert long_test(feedback, n=2, config=config, steps=300).tolist() == [True, True]
    assert not long_test(lambda obs: torch.full((1,), 0.5, dtype=F64), config=config, steps=300).item()
    starts = generalization_starts()[150:450:10]  # feedback K balances these
    assert balance(feedback, starts, 200, config).tolist() == [200] * len(starts)


def test_generalization_test_is_balance_from_the_625_starts():
    seen = []

    def controller(obs):
        seen.append(obs.shape)
        return torch.ones(len(obs), dtype=F64)  # +10 N: every start fails within 1,000 steps

    passed = generalization_test(controller, DoublePoleConfig(task="nonmarkov"))
    assert passed.shape == (625,) and passed.dtype == torch.bool and not passed.any()
    assert seen[0] == (625, 4) and len(seen) < 1000  # stopped early once all failed


# ---------------------------------------------------------------- 5. generalization starts
def test_generalization_starts():
    starts = generalization_starts()
    assert starts.shape == (625, 6) and starts.dtype == F64
    deg = math.pi / 180
    values = {
        0: [-1.944, -1.08, 0.0, 1.08, 1.944],
        1: [-1.215, -0.675, 0.0, 0.675, 1.215],
        2: [-3.24 * deg, -1.8 * deg, 0.0, 1.8 * deg, 3.24 * deg],
        3: [-7.74 * deg, -4.3 * deg, 0.0, 4.3 * deg, 7.74 * deg],
    }
    for column, expected in values.items():
        distinct = torch.unique(starts[:, column])
        torch.testing.assert_close(distinct, torch.tensor(expected, dtype=F64), rtol=0, atol=2e-6)
        assert (starts[:, column] == distinct[2]).sum() == 125  # each value in 125 starts
        assert distinct[2] == 0.0
    assert (starts[:, 4:] == 0).all()
    assert len(torch.unique(starts, dim=0)) == 625
    assert balanced(starts).all()


# ---------------------------------------------------------------- 6. Gymnasium
@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped)
    assert env.spec.max_episode_steps == (100_000 if env_id == IDS[0] else 1_000)
    assert env.observation_space.shape == ((7,) if env_id == IDS[0] else (4,))


def test_rgb_array_render():
    env = gym.make(IDS[1], render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.array([1.0], dtype=np.float32))
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert (frame != 255).any() and (frame == 255).any()
    assert gym.make(IDS[1]).unwrapped.render() is None


@pytest.mark.parametrize("env_id", IDS)
def test_episode_return_is_steps_balanced(env_id):
    env = gym.make(env_id, cart_friction=False)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32
    total, terminated, truncated = 0.0, False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, _ = env.step(np.array([0.3], dtype=np.float32))
        total += reward
    assert terminated and not truncated
    config = DoublePoleConfig(task=env.unwrapped.config.task, cart_friction=False)
    t = balance(lambda o: torch.full((1,), 0.3, dtype=F64), 1, 1000, config).item()
    assert total == t > 0


def test_time_limit_truncates():
    env = gym.make(IDS[1], max_episode_steps=15)
    env.reset()
    for _ in range(15):  # no force: the poles fall, but only after 22 steps
        _, reward, terminated, truncated, _ = env.step(np.array([0.5]))
        assert reward == 1.0 and not terminated
    assert truncated


def test_make_vec_gives_the_torch_vector_env():
    env = gym.make_vec(IDS[1], num_envs=4)
    assert isinstance(env.unwrapped, DoublePoleVectorEnv)
    assert env.num_envs == 4 and env.max_episode_steps == 1000 and env.config.task == "nonmarkov"
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 4) and obs.dtype == np.float32 and info == {}
    assert obs in env.observation_space
    env = gym.make_vec(IDS[0], num_envs=2, render_mode="rgb_array")
    env.reset()
    frames = env.render()
    assert len(frames) == 2 and frames[0].shape == (300, 600, 3) and frames[0].dtype == np.uint8


def test_vector_env_next_step_autoreset_matches_single_envs():
    n, limit, steps = 4, 10, 60
    vec = gym.make_vec(IDS[1], num_envs=n, max_episode_steps=limit)
    singles = [DoublePoleEnv(task="nonmarkov") for _ in range(n)]
    g = np.random.default_rng(6)
    obs, _ = vec.reset(seed=1)
    expected_obs = np.stack([env.reset()[0] for env in singles])
    np.testing.assert_array_equal(obs, expected_obs)
    lengths = np.zeros(n, dtype=int)
    autoreset = np.zeros(n, dtype=bool)
    ends = []
    for k in range(steps):
        actions = g.uniform(0.3, 0.7, size=(n, 1))
        actions[0] = 1.0  # env 0 fails fast, again and again
        actions[1] = 0.5  # env 1 is truncated (no force: it would fail after 22 steps)
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        assert rewards.shape == (n,) and terminated.dtype == bool and infos == {}
        for i, env in enumerate(singles):  # the documented next-step autoreset, with the single env
            if autoreset[i]:
                expected = (env.reset()[0], 0.0, False, False)
                lengths[i] = 0
            else:
                o, r, term, _, _ = env.step(actions[i])
                lengths[i] += 1
                expected = (o, r, term, bool(not term and lengths[i] >= limit))
            np.testing.assert_array_equal(obs[i], expected[0])
            assert (rewards[i], terminated[i], truncated[i]) == expected[1:]
            if terminated[i] or truncated[i]:
                ends.append((i, k, "terminated" if terminated[i] else "truncated"))
        autoreset = terminated | truncated
    kinds = {(i, kind) for i, _, kind in ends}
    assert (0, "terminated") in kinds and (1, "truncated") in kinds
    assert len([e for e in ends if e[0] == 0]) >= 3  # env 0 ended several episodes


# ---------------------------------------------------------------- 7. bad input
@pytest.mark.parametrize("fields, words", [
    (dict(task="pomdp"), ["task", "'markov'", "'nonmarkov'"]),
    (dict(fitness_window=102), ["fitness_window", "100", "101"]),
    (dict(fitness_window=100.0), ["fitness_window", "100", "101"]),
    (dict(fitness_window=True), ["fitness_window", "100", "101"]),
    (dict(start_angle=0.7), ["start_angle", "0.628329"]),
    (dict(start_angle=math.nan), ["start_angle", "0.628329"]),
    (dict(min_force=-1.0), ["min_force", "[0.0, 10.0]"]),
    (dict(cart_friction=1), ["cart_friction", "True or False"]),
    (dict(bias=math.inf), ["bias", "finite"]),
])
def test_bad_config_raises(fields, words):
    with pytest.raises(ValueError) as info:
        DoublePoleConfig(**fields)
    assert all(w in str(info.value) for w in words), str(info.value)
    with pytest.raises(ValueError, match=list(fields)[0]):
        gym.make(IDS[0], **fields)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"dtype=torch.float32 .*float64"):
        DoublePole(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"dtype=torch.float32 .*float64"):
        fitness(lambda obs: obs[:, 0], 2, dtype=torch.float32)
    sim = DoublePole()
    sim.reset(3)
    for bad in (torch.zeros(4, dtype=F64), torch.zeros(3, 2, dtype=F64), [0.5, 0.5, 0.5]):
        with pytest.raises(ValueError, match=r"outputs=.*\(3,\) or \(3, 1\)"):
            sim.step(bad)
    with pytest.raises(ValueError, match=r"starts=\(3, 5\).*\[N, 6\]"):
        sim.reset(torch.zeros(3, 5, dtype=F64))
    with pytest.raises(ValueError, match="n=0"):
        sim.reset(0)
    with pytest.raises(ValueError, match="max_steps=0"):
        balance(lambda obs: obs[:, 0], 1, 0)
    with pytest.raises(TypeError, match="window.*fields are"):
        make_config(window=100)
    with pytest.raises(ValueError, match="render_mode='human'"):
        DoublePoleEnv(render_mode="human")
    vec = DoublePoleVectorEnv(num_envs=4)
    vec.reset()
    with pytest.raises(ValueError, match=r"actions of shape \(2, 2\).*\(4, 1\) or \(4,\)"):
        vec.step(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="num_envs=0"):
        DoublePoleVectorEnv(num_envs=0)


# ---------------------------------------------------------------- 8. CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    config = DoublePoleConfig(task="nonmarkov")
    states = random_states(64, seed=7)
    forces = torch.linspace(-10, 10, 64, dtype=F64)
    torch.testing.assert_close(step_physics(states.cuda(), forces.cuda(), config).cpu(),
                               step_physics(states, forces, config), rtol=1e-12, atol=1e-12)
    cpu = fitness(SwitchingController(SWITCH_AT), len(SWITCH_AT), config)
    controller = SwitchingController(SWITCH_AT)
    controller.switch_at = controller.switch_at.cuda()
    gpu = fitness(controller, len(SWITCH_AT), config, device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=0)
