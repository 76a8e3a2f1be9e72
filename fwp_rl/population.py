"""A population of one policy's parameter vectors, stepped as one batched program: how neuroevolution evaluates
its candidates (``PolicyPopulation``), and the adapter that drives a population's memory through episodes
(``MemoryController``). Only torch here, so that the environments' success tests can drive policies without
importing the model layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from fwp_rl.checks import check_starts

if TYPE_CHECKING:
    from fwp_rl.cores import State
    from fwp_rl.policy import RecurrentPolicy


class PolicyPopulation:
    """P parameter vectors of one policy, stepped together: how neuroevolution evaluates a population.

    The vectors are split into parameter tensors once, here; each ``act`` is then one forward of the
    policy under torch.func.vmap over the P dimension (functional_call swaps the batched parameters in).
    Nothing reads tensor values on the host, so on a GPU the steps of a population queue up without
    synchronizing.

    That forward is traced once per shape into a flat graph of the batched tensor operations it runs
    (``make_fx``), kept by the policy, and each ``act`` runs the graph. Evolved controllers are tiny, so a
    step's cost is the Python around its operations: vmap and functional_call cost several times the
    operations themselves. The graph computes exactly what the eager forward computes. Fusing its
    operations too is torch.compile's job: the double pole rollouts can compile each control step, this
    graph and the simulation together (``SearchConfig.compile``), which pays once a run is long enough to
    earn back tens of seconds of compiling.
    """

    def __init__(self, policy: RecurrentPolicy, flat_params: Tensor):
        policy._check_flat(flat_params, "flat_params", ("P",))
        self.policy = policy
        self.size = flat_params.shape[0]
        # A tensor subclass (EvoTorch hands out read-only ones) would send every operation of every step,
        # and of the simulation the actions drive, through its Python __torch_function__: several times
        # slower than the operations themselves.
        flat_params = flat_params.as_subclass(Tensor).to(device=policy.device, dtype=policy.dtype)
        self._params = policy._unflatten(flat_params)
        self._shared = policy._population_shared_parameters()  # detached views: they follow in-place updates

    def initial_state(self, episodes: int) -> State:
        """The initial state of size x ``episodes`` rows, each tensor [P, E, ...]."""
        return self.policy.population_initial_state(self.size, episodes)

    def act(self, obs: Tensor, state: State, episode_start: Tensor | None = None, deterministic: bool = True
            ) -> tuple[Tensor, State]:
        """obs [P, E, *obs shape], state from ``initial_state(E)`` or the last call (each tensor [P, E, ...]),
        episode_start [P, E] bool (None: no row starts) -> (env actions [P, E, *action shape], new state).
        Row p is what ``act`` (then ``env_actions``) gives after ``set_flat_parameters(flat_params[p])``."""
        policy = self.policy
        policy._check_obs(obs, "obs", ("P", "E"))
        if obs.shape[0] != self.size:
            raise ValueError(f"obs must have shape [P, E, ...] with P={self.size} (the rows of flat_params), "
                             f"got {tuple(obs.shape)}")
        if episode_start is not None:
            check_starts(episode_start, "episode_start", obs.shape[:2])
        for i, s in enumerate(state):
            if s.shape[:2] != obs.shape[:2]:
                raise ValueError(f"state[{i}] must have shape [P, E, ...] = {tuple(obs.shape[:2])} + ..., "
                                 f"got {tuple(s.shape)}")
        step = policy._population_graph(self._params, self._shared, obs, tuple(state), episode_start, deterministic)
        return step(self._params, self._shared, obs, tuple(state), episode_start)


class MemoryController:
    """A ``PolicyPopulation`` and its memory, driven through episodes as one function of the observations of
    all its rows: obs [P * E, *obs shape] -> env actions [P * E, *action shape] (deterministic), row p * E + e
    being episode e of vector p. The memory starts fresh and is carried from call to call in ``state`` (each
    tensor [P, E, ...]); no row starts anew, so each set of episodes takes a new controller. It is the
    double pole's ``Controller`` of a population, and what steps a population in a Gymnasium vector env."""

    def __init__(self, population: PolicyPopulation, episodes: int):
        self.population, self.episodes = population, episodes
        self.state = population.initial_state(episodes)

    def __call__(self, obs: Tensor) -> Tensor:
        actions, self.state = self.population.act(obs.unflatten(0, (self.population.size, self.episodes)),
                                                  self.state)
        return actions.flatten(0, 1)


__all__ = ["MemoryController", "PolicyPopulation"]
