"""Neuroevolution: batched population evaluation against one-by-one rollouts, the searchers (each must climb a
quadratic, none may take a NaN fitness for the best), the success test (its exact periodicity shortcut, its
thresholds), the run directory and CLI, and the errors a user sees."""

from __future__ import annotations

import math
import re

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from fwp_rl.agents import neuroevolution as ne
from fwp_rl.bench.double_pole import balancing_policy
from fwp_rl.cli import main
from fwp_rl.config import ConfigError, PolicyConfig, RunConfig, from_dict
from fwp_rl.cores.rnn import ElmanCore
from fwp_rl.envs import double_pole
from fwp_rl.envs.double_pole import success
from fwp_rl.population import MemoryController
from fwp_rl.runs import load_checkpoint, read_metrics

from conftest import assert_frames_show_a_moving_picture

NONMARKOV = double_pole.DoublePoleConfig(task="nonmarkov")
CONTROLLERS = {"direct": dict(hidden_size=1, slow_size=3), "lstm": dict(hidden_size=3),
               "delta": dict(hidden_size=4, num_heads=1), "elman": dict(hidden_size=3)}


def make_config(core="direct", algorithm="cmaes", popsize=6, env_id=ne.DOUBLE_POLE, options=None, **search):
    return ne.NeuroevolutionConfig(
        name="test", env=ne.EnvConfig(id=env_id, options=options if options is not None else {"task": "nonmarkov"}),
        policy=PolicyConfig(torso="identity", core=core, core_options=CONTROLLERS.get(core, {}), action_squash=True),
        search=ne.SearchConfig(algorithm=algorithm, popsize=popsize, **search),
        run=RunConfig(wandb="disabled"))


def one_by_one_fitness(policy, flat, env):
    """The fitness episode of one parameter vector with the plain policy step (no vmap, no population)."""
    policy.set_flat_parameters(flat)
    sim = double_pole.DoublePole(env)
    obs = sim.reset(1)
    state = policy.initial_state(1)
    window = double_pole.JiggleWindow(sim.state, env.fitness_window)
    with torch.no_grad():
        for _ in range(env.episode_steps):
            actions, state, _, _ = policy.act(obs.to(policy.dtype), state, torch.zeros(1, dtype=torch.bool), True)
            obs, alive = sim.step(policy.env_actions(actions))
            window.record(sim.state, alive)
            if not bool(alive[0]):
                break
    return double_pole.damping_fitness(sim.steps, window.total())[0], sim.steps[0]


def assert_population_fitness_equals_one_by_one(policy, flat):
    """The batched population's fitness and steps of each vector of flat [P, n] equal its own rollout's."""
    fitness, steps = double_pole.population_fitness(policy, flat, NONMARKOV)
    for p in range(len(flat)):
        expected_fitness, expected_steps = one_by_one_fitness(policy, flat[p], NONMARKOV)
        assert int(steps[p]) == int(expected_steps)
        torch.testing.assert_close(fitness[p], expected_fitness, rtol=1e-12, atol=0)


@pytest.mark.parametrize("core", sorted(CONTROLLERS))
def test_population_fitness_equals_one_by_one(core):
    policy = ne.make_policy(make_config(core))
    g = torch.Generator().manual_seed(3)
    flat = policy.get_flat_parameters() + 0.5 * torch.randn(5, policy.num_flat_parameters, generator=g)
    assert_population_fitness_equals_one_by_one(policy, flat)


def test_population_fitness_equals_one_by_one_with_the_2024_layer_and_the_features_beside_the_core():
    """A delta controller with the layer options (its state two tensors) whose heads also read the torso's
    features: the batched population still scores each vector as its own rollout does."""
    config = make_config("delta")
    config.policy.core_options = dict(CONTROLLERS["delta"], conv_size=3, feature_map="silu_l2", sum_norm=False,
                                      output_norm=True, beta_bias=-1.0)
    config.policy.core_output = "core_and_features"
    policy = ne.make_policy(config)
    assert policy.actor.in_features == policy.core.output_size + policy.torso.output_size
    g = torch.Generator().manual_seed(3)
    flat = policy.get_flat_parameters() + 0.5 * torch.randn(3, policy.num_flat_parameters, generator=g)
    assert_population_fitness_equals_one_by_one(policy, flat)


def test_memory_controller_drives_a_population_as_stepping_it_by_hand():
    """P = 3 vectors, E = 2 episodes each: the controller's rows are the population's [P, E] rows in order, and
    its memory is the state the population's own steps carry."""
    policy = ne.make_policy(make_config("delta"))
    g = torch.Generator().manual_seed(6)
    flat = policy.get_flat_parameters() + 0.5 * torch.randn(3, policy.num_flat_parameters, generator=g)
    population = policy.population(flat)
    controller = MemoryController(population, 2)
    sim, by_hand = double_pole.DoublePole(NONMARKOV), double_pole.DoublePole(NONMARKOV)
    obs, obs_by_hand = sim.reset(6), by_hand.reset(6)
    state = population.initial_state(2)
    with torch.no_grad():
        for _ in range(40):
            obs, alive = double_pole.closed_loop_step(sim, controller, obs)
            actions, state = population.act(obs_by_hand.reshape(3, 2, -1), state)
            obs_by_hand, alive_by_hand = by_hand.step(actions.reshape(6, 1))
            assert torch.equal(obs, obs_by_hand) and torch.equal(alive, alive_by_hand)
            assert all(torch.equal(a, b) for a, b in zip(controller.state, state, strict=True))
    assert len(set(sim.steps.tolist())) > 1  # the rows ran different episodes


def test_double_pole_task_tests_the_champions_that_balanced_their_episode(monkeypatch):
    config = make_config("elman")
    policy = ne.make_policy(config)
    task = ne.make_task(config, policy)
    assert isinstance(task, ne.DoublePoleTask) and isinstance(task.problem, ne.DoublePoleProblem)
    assert task.milestone == double_pole.NONMARKOV_STEPS
    params, tested, generalization = policy.get_flat_parameters(), [], double_pole.GENERALIZATION_REQUIRED

    def champion_test(policy_, flat, env, episode_steps=None, compile=False):
        tested.append(episode_steps)
        return double_pole.SolutionTest(balanced=double_pole.MARKOV_STEPS, generalization=generalization)

    monkeypatch.setattr(double_pole, "champion_test", champion_test)
    report = ne.GenerationReport(1, 6, 0.25, 0.1, 0.25, params, 0.0)
    assert not task.judge(report, params, torch.tensor([0.25, 999.0]))  # fell in its episode: not tested
    assert (report.champion_steps, report.test, task.progress(report), tested) == (999, None, 999, [])
    assert task.judge(report, params, torch.tensor([0.25, 1000.0]))
    assert report.champion_steps == task.progress(report) == 1000 and tested == [1000]
    assert report.test == double_pole.SolutionTest(double_pole.MARKOV_STEPS, generalization)
    generalization -= 1  # one start short of solving
    assert not task.judge(report, params, torch.tensor([0.25, 1000.0])) and report.test.generalization == 199
    assert task.test_kept(None) == (None, False)
    assert task.test_kept(params) == (double_pole.SolutionTest(double_pole.MARKOV_STEPS, 199), False)
    assert tested == [1000, 1000, None]  # the kept solution's fitness episode is not known


def test_gym_task_is_solved_by_the_target():
    config = make_config("elman", env_id="CartPole-v1", options={}, target=300.0)
    policy = ne.make_policy(config)
    task = ne.make_task(config, policy)
    assert isinstance(task, ne.GymTask) and isinstance(task.problem, ne.GymProblem)
    params = policy.get_flat_parameters()
    evals = torch.tensor([299.0])
    report = ne.GenerationReport(1, 20, 299.0, 100.0, 299.0, params, 0.0)
    assert not task.judge(report, params, evals) and task.progress(report) == 0 == task.milestone
    report.best = 300.0
    assert task.judge(report, params, evals) and (report.champion_steps, report.test) == (None, None)
    assert task.test_kept(params) == (None, False)
    config.search.target = None
    assert not ne.make_task(config, policy).judge(report, params, evals)


@pytest.mark.skipif(double_pole.compile_unavailable("cpu") is not None, reason="torch.compile cannot run here")
def test_compiled_rollouts_equal_the_eager_ones():
    """search.compile: the fused step gives the eager results on episodes short enough that its reordered
    arithmetic cannot change how they end (a few tens of steps of random controllers)."""
    policy = ne.make_policy(make_config("delta"))
    g = torch.Generator().manual_seed(4)
    flat = policy.get_flat_parameters() + 0.5 * torch.randn(5, policy.num_flat_parameters, generator=g)
    eager = double_pole.population_fitness(policy, flat, NONMARKOV)
    compiled = double_pole.population_fitness(policy, flat, NONMARKOV, compile=True)
    assert torch.equal(compiled[1], eager[1]) and int(eager[1].max()) > 1
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-9, atol=0)
    best = flat[int(eager[1].argmax())]
    assert double_pole.long_balance(policy, best, NONMARKOV, steps=5_000, compile=True) == int(eager[1].max())


def test_long_balance_reports_the_failing_step():
    policy = ne.make_policy(make_config("direct"))
    flat = policy.get_flat_parameters()
    _, steps = double_pole.population_fitness(policy, flat[None], NONMARKOV)
    assert 0 < int(steps[0]) < 1000
    assert double_pole.long_balance(policy, flat, NONMARKOV, steps=5_000, check_every=7) == int(steps[0])


UPRIGHT = double_pole.DoublePoleConfig(task="nonmarkov", start_angle=0.0)  # the standard start at rest, upright
PUSH_AT = 1_200  # past the long test's first snapshot (step 1,000) and the steps compared with it


class PushAfterCore(ElmanCore):
    """An Elman core whose memory also counts its steps: from its step PUSH_AT + 1 on, its output is ``push``
    instead of its units' (which run on as before). State (h [B, H], steps [B, 1])."""

    def __init__(self, elman: ElmanCore, push: torch.Tensor):
        super().__init__(elman.input_size, elman.hidden_size)
        self.load_state_dict(elman.state_dict())
        self.to(elman.dtype)
        self.register_buffer("push", push.to(elman.dtype), persistent=False)

    def initial_state(self, batch_size: int, device=None):
        (h,) = super().initial_state(batch_size, device)
        return h, torch.zeros(batch_size, 1, device=h.device, dtype=h.dtype)

    def _step(self, x, state):
        h, steps = state
        y, (h,) = super()._step(x, (h,))
        steps = steps + 1
        return torch.where(steps > PUSH_AT, self.push, y), (h, steps)


def count_steps(monkeypatch) -> list[int]:
    """[control steps simulated so far], counted at ``closed_loop_step`` (long_balance's only step)."""
    count, step = [0], success.closed_loop_step

    def counted(*args, **kwargs):
        count[0] += 1
        return step(*args, **kwargs)

    monkeypatch.setattr(success, "closed_loop_step", counted)
    return count


@pytest.mark.parametrize("generalization", [double_pole.GENERALIZATION_REQUIRED - 1,
                                            double_pole.GENERALIZATION_REQUIRED])
def test_champion_test_takes_the_exact_shortcut_on_a_closed_loop_that_repeats(monkeypatch, generalization):
    """The hand-made regulator at the upright start outputs exactly 0.5 (no force), so plant and memory stay exactly
    where they are: the long test ends at its first comparison with a snapshot (step 1,001 of 100,000) with every
    step balanced, and the task is solved. It runs only once the generalization reached GENERALIZATION_REQUIRED."""
    policy = balancing_policy()
    monkeypatch.setattr(success, "generalization_score", lambda *args, **kwargs: generalization)
    simulated = count_steps(monkeypatch)
    test = double_pole.champion_test(policy, policy.get_flat_parameters(), UPRIGHT)
    passed = generalization >= double_pole.GENERALIZATION_REQUIRED
    assert test == double_pole.SolutionTest(balanced=double_pole.MARKOV_STEPS if passed else 0, generalization=generalization)
    assert test.solved(UPRIGHT) == passed
    assert simulated == [1_001 if passed else 0]


def test_champion_test_runs_a_plant_that_repeats_with_a_memory_that_does_not_to_its_failing_step(monkeypatch):
    """The regulator with a step counter in its memory that pushes the cart (+10 N) from step PUSH_AT + 1 on: at the
    upright start its plant stands still for PUSH_AT steps while its memory counts, so no closed-loop state repeats
    and the long test must simulate every step up to the one that fails. A shortcut comparing the plant alone would
    report 100,000 steps balanced and call it solved."""
    policy = balancing_policy()
    flat = policy.get_flat_parameters()
    policy.core = PushAfterCore(policy.core, 100.0 * policy.actor.weight.detach()[0].sign())  # tanh(a) = 1: o = 1
    calls = [0]

    def no_force_then_push(obs):  # the same outputs, from a controller outside the policy
        calls[0] += 1
        return torch.full((1,), 1.0 if calls[0] > PUSH_AT else 0.5, dtype=torch.float64)

    failing = int(double_pole.balance(no_force_then_push, 1, double_pole.MARKOV_STEPS, UPRIGHT)[0])
    assert PUSH_AT < failing < PUSH_AT + 100
    monkeypatch.setattr(success, "generalization_score", lambda *args, **kwargs: 625)
    simulated = count_steps(monkeypatch)
    test = double_pole.champion_test(policy, flat, UPRIGHT)
    assert test == double_pole.SolutionTest(balanced=failing, generalization=625) and not test.solved(UPRIGHT)
    assert simulated == [failing + 1]  # every step, the one that failed included


def test_solved_needs_the_whole_long_test_and_the_required_generalization():
    """SolutionTest.solved at its thresholds: 100,000 steps, and (non-Markov) at least 200 of the 625 starts."""
    full, required = double_pole.MARKOV_STEPS, double_pole.GENERALIZATION_REQUIRED
    markov = double_pole.DoublePoleConfig(task="markov")
    assert double_pole.SolutionTest(full, required).solved(NONMARKOV) and double_pole.SolutionTest(full, 625).solved(NONMARKOV)
    assert not double_pole.SolutionTest(full, required - 1).solved(NONMARKOV)
    assert not double_pole.SolutionTest(full, None).solved(NONMARKOV)
    assert not double_pole.SolutionTest(full - 1, 625).solved(NONMARKOV)
    assert double_pole.SolutionTest(full, 0).solved(markov) and double_pole.SolutionTest(full, None).solved(markov)
    assert not double_pole.SolutionTest(full - 1, 625).solved(markov)


def test_markov_champion_test_takes_the_fitness_episode_as_the_long_test(monkeypatch):
    markov = double_pole.DoublePoleConfig(task="markov")
    policy = ne.make_policy(make_config("elman", options={"task": "markov"}))
    monkeypatch.setattr(success, "long_balance", lambda *args, **kwargs: pytest.fail("the long test ran again"))
    test = double_pole.champion_test(policy, policy.get_flat_parameters(), markov,
                                     episode_steps=double_pole.MARKOV_STEPS)
    assert test.balanced == double_pole.MARKOV_STEPS and test.solved(markov) and 0 <= test.generalization <= 625


def test_gym_problem_equals_one_by_one_episodes():
    config = make_config("lstm", env_id="CartPole-v1", options={}, popsize=4)
    config.env.episodes = 2
    policy = ne.make_policy(config)
    problem = ne.make_task(config, policy).problem
    g = torch.Generator().manual_seed(0)
    flat = policy.get_flat_parameters() + torch.randn(3, policy.num_flat_parameters, generator=g)
    batch = problem.generate_batch(3)
    batch.set_values(flat)
    problem.evaluate(batch)
    for p in range(3):
        policy.set_flat_parameters(flat[p])
        returns = []
        for e in range(2):
            env = gym.make("CartPole-v1")
            obs, _ = env.reset(seed=config.seed + e)  # every candidate plays the same starts
            state, done, total = None, False, 0.0
            while not done:
                action, state = policy.predict(obs, state, deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += reward
                done = terminated or truncated
            returns.append(total)
        assert float(batch.evals[p, 0]) == pytest.approx(np.mean(returns))
    assert problem.evaluations == 3 and problem._episode_seed == config.seed + 2  # the next evaluation's starts


@pytest.mark.parametrize("algorithm", ne.ALGORITHMS)
def test_every_algorithm_runs_and_counts_evaluations(algorithm):
    config = make_config("direct", algorithm, popsize=8, max_generations=2)
    reports = []
    result = ne.evolve(config, on_generation=reports.append)
    assert [r.generation for r in reports] == [1, 2]
    assert result.generations == 2 and result.evaluations == reports[-1].evaluations >= 16
    assert reports[1].best_ever == max(r.best for r in reports)  # the best so far (see the quadratic test below)
    assert result.flat_params.shape == (ne.make_policy(config).num_flat_parameters,)


def search_problem(monkeypatch, problem_class) -> None:
    """``evolve`` searches ``problem_class`` (a ``_PolicyProblem``) instead of its config's env, as a GymTask."""
    def task(config, policy):
        task = ne.GymTask(policy, config.env, config.search, config.seed)
        task.problem = problem_class(policy, config.search, config.seed)
        return task

    monkeypatch.setattr(ne, "make_task", task)


class Quadratic(ne._PolicyProblem):
    """-|x - 2|^2 over a policy's flat parameters (the optimum lies outside the first populations' bounds)."""

    def _evaluate_batch(self, batch):
        batch.set_evals(-((batch.values - 2.0) ** 2).sum(-1))


@pytest.mark.parametrize("algorithm", ne.ALGORITHMS)
def test_every_algorithm_climbs_a_quadratic(algorithm, monkeypatch):
    """Each searcher, with the objective sense the policy problems set, improves on its first generation: the best
    of its 20th generation is at most half as far (squared) from the optimum as the best of its first. A running
    maximum would pass with any search; a search that minimised would walk away from the optimum."""
    search_problem(monkeypatch, Quadratic)
    config = make_config("elman", algorithm, popsize=16, env_id="CartPole-v1", options={}, max_generations=20)
    config.policy.core_options = {"hidden_size": 1}  # 11 parameters
    reports = []
    ne.evolve(config, on_generation=reports.append)
    assert len(reports) == 20
    assert -reports[-1].best < -reports[0].best / 2


class NaNForTheBetterHalf(ne._PolicyProblem):
    """Fitness x[0], but NaN for the candidates whose x[0] is above their population's median: without the rule of
    ``_PolicyProblem`` they would be the champions (EvoTorch's argmax and sorts take NaN for the best)."""

    def _evaluate_batch(self, batch):
        x = batch.values[:, 0]
        batch.set_evals(torch.where(x > x.median(), torch.nan, x))


@pytest.mark.parametrize("algorithm", ne.ALGORITHMS)
def test_a_nan_fitness_never_becomes_the_champion_or_the_solution_kept(algorithm, monkeypatch):
    search_problem(monkeypatch, NaNForTheBetterHalf)
    config = make_config("elman", algorithm, popsize=8, env_id="CartPole-v1", options={}, max_generations=5)
    config.policy.core_options = {"hidden_size": 1}
    reports = []
    result = ne.evolve(config, on_generation=reports.append)
    assert all(math.isfinite(r.best) for r in reports)
    assert result.fitness == max(r.best for r in reports) == float(result.flat_params[0])


def test_a_population_without_one_finite_fitness_is_a_one_line_error(monkeypatch):
    class AllNaN(ne._PolicyProblem):
        def _evaluate_batch(self, batch):
            batch.set_evals(torch.full((len(batch),), torch.nan, dtype=batch.values.dtype))

    search_problem(monkeypatch, AllNaN)
    config = make_config("elman", env_id="CartPole-v1", options={})
    with pytest.raises(ConfigError, match=r"^every candidate of the first 6 evaluations scored a NaN or infinite "
                                          r"fitness: CartPole-v1 gives this policy no finite fitness to search on$"):
        ne.evolve(config)


class NaNRewardOnRight(gym.Wrapper):
    """CartPole whose reward is NaN for every push to the right."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float("nan") if action == 1 else reward, terminated, truncated, info


@pytest.mark.filterwarnings("ignore:.*The reward is a NaN value:UserWarning")  # Gymnasium's env checker
def test_a_gymnasium_env_returning_nan_rewards_scores_those_candidates_as_failures():
    gym.register("NaNRewardOnRight-v0", entry_point=lambda **kwargs: NaNRewardOnRight(gym.make("CartPole-v1")))
    try:
        config = make_config("elman", env_id="NaNRewardOnRight-v0", options={})
        policy = ne.make_policy(config)
        problem = ne.make_task(config, policy).problem
        batch = problem.generate_batch(16)
        problem.evaluate(batch)
    finally:
        del gym.registry["NaNRewardOnRight-v0"]
    fitness = batch.evals[:, 0]
    assert not fitness.isnan().any()
    assert (fitness == -math.inf).any() and fitness.isfinite().any()  # some pushed right, some never did


def test_restart_after_starts_a_fresh_search_when_the_champions_stop_improving():
    """Until the first restart the run is the run without restarts; each restart starts when restart_after
    evaluations brought no champion that balanced longer than every earlier one of its search."""
    plain, restarting = [], []
    ne.evolve(make_config("elman", popsize=6, max_generations=12), on_generation=plain.append)
    result = ne.evolve(make_config("elman", popsize=6, max_generations=12, restart_after=12),
                       on_generation=restarting.append)
    assert result.restarts == restarting[-1].restarts >= 1 and plain[-1].restarts == 0
    first = next(i for i, r in enumerate(restarting) if r.restarts)
    assert [r.best for r in restarting[:first]] == [r.best for r in plain[:first]]
    assert restarting[first].best != plain[first].best
    longest, since = 0, 0  # the rule, replayed from the reports
    for before, r in zip(restarting, restarting[1:]):
        if before.champion_steps > longest:
            longest, since = before.champion_steps, before.evaluations
        assert r.restarts == before.restarts + (before.evaluations - since >= 12)
        if r.restarts > before.restarts:
            longest, since = 0, before.evaluations


def test_restart_unbalanced_after_starts_a_fresh_search_when_no_champion_balanced_in_time():
    """However the champions still improve, a search none of whose champions balanced the whole fitness episode
    within restart_unbalanced_after evaluations of its start gives way to a fresh one."""
    plain, restarting = [], []
    ne.evolve(make_config("elman", popsize=6, max_generations=10), on_generation=plain.append)
    result = ne.evolve(make_config("elman", popsize=6, max_generations=10, restart_unbalanced_after=18),
                       on_generation=restarting.append)
    assert max(r.champion_steps for r in restarting) < 1000  # so every search is cut after 18 evaluations
    assert [r.restarts for r in restarting] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3] and result.restarts == 3
    assert [r.best for r in restarting[:3]] == [r.best for r in plain[:3]]
    assert restarting[3].best != plain[3].best


def test_a_search_that_collapses_numerically_restarts_and_its_generation_counts(monkeypatch):
    """CMA-ES's Cholesky factor fails when rounding leaves its covariance not positive definite, after the
    generation was evaluated: the run goes on (no traceback), the generation's champion and evaluations count, and
    the next generation starts a fresh search even with no restart settings; a run resumed in between does the same."""
    from evotorch.algorithms import CMAES

    original, steps = CMAES._step, []

    def collapsing(self):
        original(self)
        steps.append(self)
        if len(steps) == 3:
            raise torch.linalg.LinAlgError("linalg.cholesky: the input is not positive-definite")

    monkeypatch.setattr(CMAES, "_step", collapsing)
    evolution = ne.Evolution(make_config("elman", popsize=6, max_generations=6))
    reports = [evolution.step() for _ in range(3)]
    collapsed = evolution.searcher.population
    assert reports[2].best == float(collapsed.evals[:, 0].max()) and reports[2].evaluations == 18
    resumed = ne.Evolution(make_config("elman", popsize=6, max_generations=6))
    resumed.load_state_dict(evolution.state_dict())
    went_on, resumed_on = ([run.step() for _ in range(3)] for run in (evolution, resumed))
    for after in (went_on, resumed_on):
        assert [(r.restarts, r.evaluations) for r in after] == [(1, 24), (1, 30), (1, 36)]
    assert [r.best for r in went_on] == [r.best for r in resumed_on]
    steps.clear()
    result = ne.evolve(make_config("elman", popsize=6, max_generations=6))  # the same collapse, in a whole run
    assert (result.generations, result.evaluations, result.restarts) == (6, 36, 1)

def test_cartpole_target_stops_the_search():
    config = make_config("elman", env_id="CartPole-v1", options={}, popsize=20, max_generations=40, target=300.0)
    result = ne.evolve(config)
    assert result.solved and result.fitness >= 200.0 and result.generations < 40


@pytest.mark.parametrize("data, message", [
    ({"search": {"algorithm": "adam"}}, r"search.algorithm='adam' is not allowed; choose one of: cmaes, snes"),
    ({"search": {"algorithm": "cem", "popsize": 2}}, r"search.popsize=2 is too small for 'cem': it needs at least 4"),
    ({"search": {"algorithm": "ga"}}, r"search.popsize must be set for algorithm 'ga'"),
    ({"search": {"algorithm": "pgpe", "popsize": 7}}, r"popsize=7 is not allowed for 'pgpe'"),
    ({"search": {"popsize": 8, "stepsize": 1}}, r"search: unknown key 'stepsize'; allowed keys: algorithm"),
    ({"env": {"id": "NoSuchEnv-v9"}}, r"env.id='NoSuchEnv-v9' is neither 'double_pole', a registered Gymnasium id"),
    ({"env": {"options": {"task": "hard"}}}, r"env.options: task='hard' is not allowed"),
    ({"env": {"options": {"gravity": 1}}}, r"env.options: 'gravity' is not a field of DoublePoleConfig"),
    ({"learner": "sgd"}, r"learner"),
    ({"seed": -1}, r"seed=-1 is not allowed: it must be an integer from 0 to 1073741823"),
    ({"search": {"device": "gpu"}}, r"search.device='gpu' is not allowed: 'cpu', 'cuda', 'cuda:1', \.\.\.$"),
    ({"env": {"id": "CartPole-v1"}, "search": {"compile": True}},
     r"search.compile=true is allowed for env.id='double_pole' only .* got env.id='CartPole-v1'"),
    ({"search": {"max_generations": 0}}, r"search.max_generations=0 is not allowed: it must be >= 1, or null"),
    ({"search": {"restart_after": 0}}, r"search.restart_after=0 is not allowed: a number of evaluations >= 1"),
    ({"env": {"id": "CartPole-v1"}, "search": {"restart_after": 500}},
     r"search.restart_after is allowed for env.id='double_pole' only .* got env.id='CartPole-v1'"),
    ({"search": {"restart_unbalanced_after": -5}},
     r"search.restart_unbalanced_after=-5 is not allowed: a number of evaluations >= 1, or null"),
    ({"env": {"id": "CartPole-v1"}, "search": {"restart_unbalanced_after": 500}},
     r"search.restart_unbalanced_after is allowed for env.id='double_pole' only .* got env.id='CartPole-v1'"),
    ({"search": {"target": 0.5}}, r"search.target is allowed for Gymnasium ids only: env.id='double_pole' is solved"),
    ({"policy": {"core_output": "skip"}},
     r"^policy.core_output='skip' is not allowed; choose one of: 'core', 'core_and_features'$"),
])
def test_config_errors_name_the_key_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ne.NeuroevolutionConfig, data)


def test_unknown_controller_is_a_config_error():
    config = make_config("transformer")
    with pytest.raises(ConfigError, match=r"policy: core='transformer' is not allowed; choose one of: 'lstm'"):
        ne.make_policy(config)


def test_train_writes_a_run_and_evaluate_replays_it(tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("learner: neuroevolution\nname: tiny\nenv: {options: {task: nonmarkov}}\n"
                           "policy: {torso: identity, core: direct, core_options: {hidden_size: 1, slow_size: 2}}\n"
                           "search: {algorithm: snes, popsize: 6, max_generations: 3}\n"
                           f"run: {{root: {tmp_path / 'runs'}, wandb: disabled, checkpoint_every: 2}}\n")
    assert main(["train", str(config_file), "--set", "seed=1"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "config.yaml").is_file()
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["generation"] for r in records] == [1, 2, 3] and records[-1]["step"] == 18
    payload = load_checkpoint(run_dir)
    assert payload["learner"] == "neuroevolution" and payload["evaluations"] == 18
    assert "generalization" in capsys.readouterr().out
    assert main(["evaluate", str(run_dir), "--video", str(tmp_path / "video")]) == 0
    out = capsys.readouterr().out
    assert "generalization_of_625" in out
    # The video of the episode from the standard start: the cart and poles moving, frame after frame, until the
    # poles fall.
    assert_frames_show_a_moving_picture(imageio.mimread(tmp_path / "video" / "tiny_seed1_latest_evalseed0_ep0.mp4"))


def test_the_progress_line_says_it_compiles_then_shows_evaluations_per_second(tmp_path, monkeypatch):
    """With search.compile the line says it compiles before the first generation (the compile is replaced by the
    eager step here, for speed); each generation's line then has the run's evaluations per second so far."""
    from fwp_rl import harness

    shown = []
    monkeypatch.setattr(harness.Run, "show", lambda self, status: shown.append(status))
    monkeypatch.setattr(success, "_compiled_closed_loop_step", lambda: success._closed_loop_step)
    monkeypatch.setattr(double_pole, "compile_unavailable", lambda device: None)
    config = from_dict(ne.NeuroevolutionConfig, {
        "name": "tiny", "env": {"options": {"task": "nonmarkov"}},
        "policy": {"torso": "identity", "core": "direct", "core_options": CONTROLLERS["direct"]},
        "search": {"algorithm": "snes", "popsize": 6, "max_generations": 2, "compile": True},
        "run": {"root": str(tmp_path), "wandb": "disabled"}})
    ne.train(config)
    assert len(shown) == 3 and shown[0].startswith("compiling the rollouts (torch.compile)")
    assert all(re.fullmatch(rf"gen {g}  [\d,]+ evals/s  best .+", status) for g, status in zip((1, 2), shown[1:]))


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("learner: neuroevolution\nsearch: {algorithm: cmaes, popsize: 2}\n")
    assert main(["train", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "fwp-rl: error: search.popsize=2 is too small for 'cmaes': it needs at least 4"
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
