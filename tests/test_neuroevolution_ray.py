"""Neuroevolution over EvoTorch's Ray actors (search.num_actors) on a local Ray: the actors evaluate a population
as this process does, the run counts every evaluation, a double pole run resumes exactly, and the Gymnasium path runs
there too, each piece of the population with episodes of its own."""

from __future__ import annotations

import io
import math

import pytest
import torch

ray = pytest.importorskip("ray")

from fwp_rl.agents import neuroevolution as ne  # noqa: E402  (EvoTorch imports Ray)
from fwp_rl.config import PolicyConfig, RunConfig  # noqa: E402
from fwp_rl.envs import double_pole  # noqa: E402

DIRECT = dict(hidden_size=1, slow_size=3)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # address="local": a Ray of this test alone, even where RAY_ADDRESS or a `ray start` cluster exists.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_config(num_actors, env_id=ne.DOUBLE_POLE, core="direct", core_options=DIRECT, popsize=8, **search):
    options = {"task": "nonmarkov"} if env_id == ne.DOUBLE_POLE else {}
    return ne.NeuroevolutionConfig(
        name="ray", env=ne.EnvConfig(id=env_id, options=options),
        policy=PolicyConfig(torso="identity", core=core, core_options=core_options, action_squash=True),
        search=ne.SearchConfig(algorithm="cmaes", popsize=popsize, num_actors=num_actors, **search),
        run=RunConfig(wandb="disabled"))


def test_actors_evaluate_a_population_as_this_process_does():
    policy = ne.make_policy(make_config(0))
    g = torch.Generator().manual_seed(5)
    flat = policy.get_flat_parameters() + torch.randn(8, policy.num_flat_parameters, generator=g)
    # The policy goes to the actors with its traced graphs left behind (RecurrentPolicy.__getstate__).
    double_pole.population_fitness(policy, flat, double_pole.make_config(task="nonmarkov"))
    here_key = next(iter(policy._population_graphs))
    evals = {}
    for num_actors in (0, 2):
        problem = ne.make_task(make_config(num_actors), policy).problem
        batch = problem.generate_batch(len(flat))
        batch.set_values(flat)
        problem.evaluate(batch)
        assert problem.evaluations == len(flat)
        evals[num_actors] = batch.evals.clone()
        if num_actors:
            caches = ray.get([actor.get.remote("policy._population_graphs") for actor in problem.actors])
            assert all(caches) and all(here_key not in cache for cache in caches)  # each traced its own half
            problem.kill_actors()
    assert torch.equal(evals[2], evals[0])
    assert len(set(evals[0][:, 1].tolist())) > 1  # the candidates balanced for different numbers of steps


def test_evolve_over_actors_counts_every_evaluation():
    reports = {0: [], 2: []}
    results = {n: ne.evolve(make_config(n, max_generations=2), on_generation=reports[n].append) for n in reports}
    result = results[2]
    assert result.generations == 2 and result.evaluations == reports[2][-1].evaluations == 16
    assert [r.evaluations for r in reports[2]] == [r.evaluations for r in reports[0]] == [8, 16]
    # The first population is drawn before the actors start and scores the same; starting them draws their seeds
    # from the problem's generator, so the later populations differ from a run in this process.
    first, first_here = reports[2][0], reports[0][0]
    assert (first.best, first.mean, first.champion_steps) == (first_here.best, first_here.mean,
                                                             first_here.champion_steps)
    assert torch.equal(first.best_ever_params, first_here.best_ever_params)
    assert math.isfinite(result.fitness) and result.flat_params.shape == results[0].flat_params.shape


def test_gymnasium_path_over_actors():
    config = make_config(2, env_id="CartPole-v1", core="elman", core_options=dict(hidden_size=3), max_generations=1)
    config.env.episodes = 2
    reports = []
    result = ne.evolve(config, on_generation=reports.append)
    assert result.generations == 1 and result.evaluations == 8
    # Every episode earns at least the reward of its first step.
    assert math.isfinite(result.fitness) and result.fitness >= reports[0].mean >= 1.0


def test_gymnasium_pieces_play_episodes_of_their_own():
    """Eight copies of one controller, four per actor, one episode each: each copy starts its own episode, so the
    two pieces do not repeat each other's returns."""
    config = make_config(2, env_id="CartPole-v1", core="elman", core_options=dict(hidden_size=3))
    config.env.episodes = 1
    policy = ne.make_policy(config)
    g = torch.Generator().manual_seed(3)
    flat = (policy.get_flat_parameters() + torch.randn(policy.num_flat_parameters, generator=g)).expand(8, -1)
    problem = ne.make_task(config, policy).problem
    batch = problem.generate_batch(8)
    batch.set_values(flat)
    problem.evaluate(batch)
    problem.kill_actors()
    returns = batch.evals[:, 0]
    assert len(set(returns.tolist())) > 1  # the controller's return depends on the start
    assert not torch.equal(returns[:4], returns[4:])


def test_a_double_pole_run_over_actors_resumes_exactly():
    """The resumed run's actors start before its generator is restored (they draw their seeds from it), so its
    searcher samples what the run's would have; double pole fitnesses need no actor seed."""
    config = make_config(2)
    saved = ne.Evolution(config)
    for _ in range(2):
        saved.step()
    buffer = io.BytesIO()
    torch.save(saved.state_dict(), buffer)
    buffer.seek(0)
    restored = ne.Evolution(config)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(2):
        a, b = saved.step(), restored.step()
        assert torch.equal(saved.searcher.population.values, restored.searcher.population.values)
        assert (a.evaluations, a.best, a.mean, a.champion_steps) == (b.evaluations, b.best, b.mean, b.champion_steps)
    saved.problem.kill_actors()
    restored.problem.kill_actors()
