"""The recurrent actor-critic policy that both learners train: torso -> memory core -> actor and critic heads.

Shapes: B rows (environments) in a step, sequences time-major [T, B, ...], states batch first (each state
tensor [B, ...], as the core's ``initial_state`` makes them). In the population call, P parameter vectors
each run E rows: observations [P, E, ...], states [P, E, ...].

Actions:
- ``Discrete(n)``: a categorical distribution over the n logits; actions int64 [B].
- ``Box`` (floating, any shape): a diagonal Gaussian whose mean is the actor's output and whose log
  standard deviation is a parameter of the policy (state-independent), as in Stable-Baselines3's PPO.
  ``act`` and ``evaluate`` work with the unbounded Gaussian samples (their log-probs are exact);
  what goes to the environment is ``env_actions(actions)``, the samples clipped to the Box bounds. This
  is what Stable-Baselines3 does without ``squash_output``: ``predict`` and ``population_act`` return
  clipped actions, and a learner stores the unclipped ones for its log-probs.

The actor's last layer starts orthogonal with gain 0.01 (a near-uniform first policy) and the critic's
with gain 1, both with zero bias, as in Stable-Baselines3.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal
from torch.func import functional_call, vmap
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.utils import parameters_to_vector

from fwp_rl.checks import check_choice
from fwp_rl.cores import State, make_core
from fwp_rl.normalization import ObservationNormalizer
from fwp_rl.population import PolicyPopulation
from fwp_rl.torsos import make_torso

ACTION_SPACES = "Discrete (start 0) or a floating-point Box with at least one dimension"
# What the actor and critic heads read: the core's output, or the torso's features beside it (a skip connection
# around the core).
CORE_OUTPUTS = ("core", "core_and_features")
# How the torso computes: in the policy's dtype, or under bfloat16 autocast (its matrix products and convolutions in
# bfloat16, its weights kept in the policy's dtype, its features handed on in it).
TORSO_AUTOCASTS = ("none", "bfloat16")


class RecurrentPolicy(nn.Module):
    """torso -> core -> actor (action distribution) and critic (value).

    observation_space, action_space: gymnasium spaces; torso, torso_options: see ``fwp_rl.torsos``;
    core, core_options: see ``fwp_rl.cores.make_core``; log_std_init: the initial log standard deviation
    of Box actions; action_squash: Box actions reach the environment as low + (high - low) (tanh(a) + 1) / 2
    instead of clipped, so an output of 0 is the middle of the box (the sigmoid output unit of the classic
    neuroevolution controllers). Either way the map is part of what the environment does with an action,
    so log-probs stay those of the unsquashed samples. normalize_observations: observations pass through an
    ``ObservationNormalizer`` (running mean and variance, ``fwp_rl.normalization``) before the torso; its
    statistics learn only through ``update_observation_statistics``. It needs a floating-point Box observation.
    core_output: what the heads read, ``core`` (the core's output) or ``core_and_features`` (the core's output and
    the torso's features, concatenated: a skip connection around the memory). torso_autocast: ``bfloat16`` runs the
    torso under bfloat16 autocast (TORSO_AUTOCASTS), faster on CPUs with bfloat16 instructions and on GPUs.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, torso: str = "mlp",
                 torso_options: dict | None = None, core: str = "delta", core_options: dict | None = None,
                 log_std_init: float = 0.0, action_squash: bool = False, normalize_observations: bool = False,
                 core_output: str = "core", torso_autocast: str = "none"):
        super().__init__()
        if not isinstance(observation_space, spaces.Space):
            raise TypeError(f"observation_space must be a gymnasium space, got {type(observation_space).__name__}")
        check_choice("core_output", core_output, CORE_OUTPUTS)
        check_choice("torso_autocast", torso_autocast, TORSO_AUTOCASTS)
        self.core_output, self.torso_autocast = core_output, torso_autocast
        self.observation_space, self.action_space = observation_space, action_space
        self.action_squash = bool(action_squash)
        self._population_graphs: dict[tuple, Callable] = {}  # see PolicyPopulation
        self.observation_normalizer = None
        if normalize_observations:
            if not (isinstance(observation_space, spaces.Box) and np.issubdtype(observation_space.dtype, np.floating)):
                raise ValueError(f"normalize_observations needs a floating-point Box observation space, got "
                                 f"{observation_space}")
            self.observation_normalizer = ObservationNormalizer(observation_space.shape)
        self.torso = make_torso(torso, observation_space, **(torso_options or {}))
        self.core = make_core(core, self.torso.output_size, **(core_options or {}))
        hidden = self.core.output_size + self.torso.output_size * (core_output == "core_and_features")
        self.discrete = isinstance(action_space, spaces.Discrete)
        if self.discrete and action_space.start == 0:
            self.action_shape: tuple[int, ...] = ()
            self.actor = nn.Linear(hidden, int(action_space.n))
        elif (isinstance(action_space, spaces.Box) and np.issubdtype(action_space.dtype, np.floating)
              and len(action_space.shape) > 0):
            self.action_shape = tuple(action_space.shape)
            self.actor = nn.Linear(hidden, math.prod(self.action_shape))
            self.log_std = nn.Parameter(torch.full(self.action_shape, float(log_std_init)))
            self.register_buffer("action_low", torch.as_tensor(action_space.low), persistent=False)
            self.register_buffer("action_high", torch.as_tensor(action_space.high), persistent=False)
        else:
            raise ValueError(f"action_space={action_space} is not allowed: the policy takes {ACTION_SPACES}")
        self.critic = nn.Linear(hidden, 1)
        for layer, gain in ((self.actor, 0.01), (self.critic, 1.0)):
            nn.init.orthogonal_(layer.weight, gain=gain)
            nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        return self.critic.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.critic.weight.device

    @property
    def num_flat_parameters(self) -> int:
        """The length of the flat parameter vector (``get_flat_parameters``)."""
        return sum(p.numel() for _, p in self._flat_named_parameters())

    # ------------------------------------------------------------------ the network
    def _features(self, obs: Tensor, lead: int) -> Tensor:
        """obs [*lead dims, *observation shape] -> torso features [*lead dims, F]."""
        x = obs.reshape(-1, *self.torso.observation_shape).to(self.dtype)
        if self.observation_normalizer is not None:
            x = self.observation_normalizer(x)
        with (torch.autocast(x.device.type, dtype=torch.bfloat16) if self.torso_autocast == "bfloat16"
              else contextlib.nullcontext()):
            x = self.torso(x)
        return x.to(self.dtype).reshape(*obs.shape[:lead], x.shape[-1])

    def update_observation_statistics(self, obs: Tensor, sum_over_ranks: Callable[[Tensor], Tensor] | None = None
                                      ) -> None:
        """Merge observations [..., *obs shape] into the normalizer's statistics (``normalize_observations``;
        without it, nothing happens); with ``sum_over_ranks``, those of every rank
        (``ObservationNormalizer.update``)."""
        if self.observation_normalizer is not None:
            self.observation_normalizer.update(obs, sum_over_ranks)

    def _head_input(self, h: Tensor, features: Tensor) -> Tensor:
        """What the heads read (``core_output``), from the core's outputs h [..., H] and the torso's features
        [..., F] that the core read."""
        return h if self.core_output == "core" else torch.cat([h, features], dim=-1)

    def _heads(self, h: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """Head inputs [..., H'] (``_head_input``) -> (distribution parameters, values [...])."""
        return self._actor_head(h), self.critic(h).squeeze(-1)

    def _actor_head(self, h: Tensor) -> tuple[Tensor, ...]:
        """Head inputs [..., H'] -> distribution parameters: (logits,) or (mean, log std)."""
        out = self.actor(h)
        if self.discrete:
            return (out,)
        mean = out.unflatten(-1, self.action_shape)
        return (mean, self.log_std.expand_as(mean))

    def mode(self, head: tuple[Tensor, ...]) -> Tensor:
        """The most likely action of the distribution parameters ``forward`` returns, without building a
        distribution object."""
        return head[0].argmax(-1) if self.discrete else head[0]

    def distribution(self, head: tuple[Tensor, ...]) -> Distribution:
        """The action distribution of the parameters ``forward`` returns (logits, or mean and log std)."""
        # No argument validation: it would read values on the host at every step.
        if self.discrete:
            return Categorical(logits=head[0], validate_args=False)
        mean, log_std = head
        return Independent(Normal(mean, log_std.exp(), validate_args=False), len(self.action_shape),
                           validate_args=False)

    def forward(self, obs: Tensor, state: State, episode_start: Tensor | None, with_values: bool = True
                ) -> tuple[tuple[Tensor, ...], Tensor | None, State]:
        """One step without sampling and without checks on obs (``act`` checks them).

        obs [B, *obs shape], episode_start [B] bool (None: no row starts) -> (distribution parameters,
        values [B] (None without ``with_values``), new state).
        """
        features = self._features(obs, 1)
        h, state = self.core.step(features, state, episode_start)
        h = self._head_input(h, features)
        if not with_values:
            return self._actor_head(h), None, state
        head, values = self._heads(h)
        return head, values, state

    # ------------------------------------------------------------------ rollouts and training
    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The core's initial state for ``batch_size`` rows, each tensor [batch_size, ...], on ``device``
        (the policy's device by default)."""
        return self.core.initial_state(batch_size, self.device if device is None else device)

    def act(self, obs: Tensor, state: State, episode_start: Tensor, deterministic: bool = False
            ) -> tuple[Tensor, State, Tensor, Tensor]:
        """One step of B environments.

        obs [B, *obs shape], state from ``initial_state(B)`` or the last call, episode_start [B] bool
        (rows whose state is reset before obs is read) -> (actions [B, *action shape], new state,
        values [B], log-probs [B]). ``deterministic`` takes the distribution's mode instead of a sample.
        Box actions are unclipped samples: send ``env_actions(actions)`` to the environment.
        """
        self._check_obs(obs, "obs", ("B",))
        head, values, state = self(obs, state, episode_start)
        dist = self.distribution(head)
        actions = self.mode(head) if deterministic else dist.sample()
        return actions, state, values, dist.log_prob(actions)

    def evaluate(self, obs_seq: Tensor, actions: Tensor, state0: State, episode_starts: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """A training sequence through the core's sequence form (chunkwise-parallel where the rule allows).

        obs_seq [T, B, *obs shape], actions [T, B, *action shape] (as ``act`` returned them), state0 the
        state before step 0, episode_starts [T, B] bool -> (log-probs [T, B], entropy [T, B], values [T, B]).
        """
        self._check_obs(obs_seq, "obs_seq", ("T", "B"))
        self._check_actions(actions, obs_seq.shape[:2])
        features = self._features(obs_seq, 2)
        h, _ = self.core(features, state0, episode_starts)
        head, values = self._heads(self._head_input(h, features))
        dist = self.distribution(head)
        return dist.log_prob(actions), dist.entropy(), values

    def env_actions(self, actions: Tensor) -> Tensor:
        """What the environment receives: Box actions clipped (or squashed, with ``action_squash``) into the
        space's bounds; Discrete unchanged."""
        if self.discrete:
            return actions
        if self.action_squash:
            return self.action_low + (self.action_high - self.action_low) * (torch.tanh(actions) + 1) / 2
        return torch.clamp(actions, self.action_low, self.action_high)

    # ------------------------------------------------------------------ Stable-Baselines3
    def predict(self, observation: np.ndarray, state: State | None = None, episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, State]:
        """The Stable-Baselines3 ``predict``: numpy in, numpy out, so SB3's ``evaluate_policy`` takes the policy.

        observation [B, *obs shape] (or one observation [*obs shape]); state: None to start, then what the
        last call returned (opaque to the caller); episode_start [B] bool (None: no row starts) ->
        (env actions [B, *action shape] (or one action), state). Box actions are clipped to the bounds.
        """
        obs = np.asarray(observation)
        single = obs.shape == tuple(self.observation_space.shape)
        if single:
            obs = obs[None]
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, device=self.device)
            self._check_obs(obs_t, "observation", ("B",))
            batch = obs_t.shape[0]
            if state is None:
                state = self.initial_state(batch)
            if episode_start is None:
                starts = torch.zeros(batch, dtype=torch.bool, device=self.device)
            else:
                starts = torch.as_tensor(np.asarray(episode_start, dtype=bool).reshape(-1), device=self.device)
            actions, state, _, _ = self.act(obs_t, state, starts, deterministic)
            actions = self.env_actions(actions).cpu().numpy()
        return (actions[0] if single else actions), state

    # ------------------------------------------------------------------ flat parameters and populations
    def _flat_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The parameters of the flat vector, in ``named_parameters`` order: those the deterministic action
        depends on (torso, core, actor head). The critic and the log standard deviation of Box actions are
        left out: neuroevolution, which searches the flat vector, never uses them, and every dimension that
        does not change the fitness slows a search down."""
        return [(name, p) for name, p in self.named_parameters()
                if not name.startswith("critic.") and name != "log_std"]

    def get_flat_parameters(self) -> Tensor:
        """The acting parameters (``_flat_named_parameters``) as one vector [num_flat_parameters], a detached copy."""
        return parameters_to_vector([p for _, p in self._flat_named_parameters()]).detach()

    def set_flat_parameters(self, vec: Tensor) -> None:
        """Copy vec [num_flat_parameters] into the acting parameters (cast to their dtype and device; vec is
        not kept); the critic and the log standard deviation stay as they are."""
        self._check_flat(vec, "vec", ())
        # copy_ rather than torch.nn.utils.vector_to_parameters, which makes every parameter a view of vec.
        with torch.no_grad():
            for (_, p), value in zip(self._flat_named_parameters(), self._unflatten(vec).values()):
                p.copy_(value)

    def population_initial_state(self, population: int, episodes: int, device: torch.device | str | None = None
                                 ) -> State:
        """The initial state of ``population`` x ``episodes`` rows, each tensor [P, E, ...]."""
        rows = self.initial_state(population * episodes, device)
        return tuple(s.reshape(population, episodes, *s.shape[1:]) for s in rows)

    def population(self, flat_params: Tensor) -> PolicyPopulation:
        """P flat parameter vectors of this policy, flat_params [P, num_flat_parameters], bound for batched steps."""
        return PolicyPopulation(self, flat_params)

    def population_act(self, flat_params: Tensor, obs: Tensor, state: State, episode_start: Tensor | None,
                       deterministic: bool = True) -> tuple[Tensor, State]:
        """One step of P parameter vectors, each on its own E rows, as one batched forward:
        ``population(flat_params).act(obs, state, episode_start, deterministic)``. Many steps of one
        population should bind it once with ``population``."""
        return self.population(flat_params).act(obs, state, episode_start, deterministic)

    def _population_shared_parameters(self) -> dict[str, Tensor]:
        """The parameters outside the flat vector (critic, log std), shared by every member of a population."""
        flat = {name for name, _ in self._flat_named_parameters()}
        return {name: p.detach() for name, p in self.named_parameters() if name not in flat}

    def _population_step(self, params: dict[str, Tensor], shared: dict[str, Tensor], obs: Tensor, state: State,
                         episode_start: Tensor | None, deterministic: bool) -> tuple[Tensor, State]:
        """The eager population step: the policy's forward under vmap over P, params [P, ...] swapped in."""
        def one(params: dict[str, Tensor], obs: Tensor, state: State, episode_start: Tensor | None):
            head, _, state = functional_call(self, (params, shared), (obs, state, episode_start, False),
                                             tie_weights=False)
            return head, state

        head, state = vmap(one, in_dims=(0, 0, 0, None if episode_start is None else 0))(
            params, obs, state, episode_start)
        actions = self.mode(head) if deterministic else self.distribution(head).sample()
        return self.env_actions(actions), state

    def _population_graph(self, params: dict[str, Tensor], shared: dict[str, Tensor], obs: Tensor, state: State,
                          episode_start: Tensor | None, deterministic: bool) -> Callable:
        """``_population_step`` traced into a flat graph of tensor operations, once per shapes and dtypes.

        Every tensor it reads is an input of the graph, but for the action bounds (buffers fixed by the action
        space; the key holds their device and dtype). Sampling stays an operation of the graph, which draws
        anew at every call."""
        signature = [(tuple(t.shape), t.dtype, t.device) for t in (obs, *state, *params.values(), *shared.values())]
        key = (*signature, None if episode_start is None else tuple(episode_start.shape), deterministic)
        graph = self._population_graphs.get(key)
        if graph is None:
            graph = make_fx(functools.partial(self._population_step, deterministic=deterministic))(
                params, shared, obs, state, episode_start)
            self._population_graphs[key] = graph
        return graph

    def __getstate__(self) -> dict:
        # The traced graphs are a cache of this process: copies and pickles (Ray actors) trace their own.
        return {**self.__dict__, "_population_graphs": {}}

    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """flat [..., num_flat_parameters] -> {parameter name: [..., *parameter shape]}."""
        named = self._flat_named_parameters()
        chunks = flat.split([p.numel() for _, p in named], dim=-1)
        return {name: c.reshape(*flat.shape[:-1], *p.shape) for (name, p), c in zip(named, chunks)}

    # ------------------------------------------------------------------ checks
    def _check_flat(self, flat: Tensor, name: str, lead: Sequence[str]) -> None:
        layout = "[" + ", ".join([*lead, f"num_flat_parameters={self.num_flat_parameters}"]) + "]"
        if not isinstance(flat, Tensor) or not flat.is_floating_point():
            got = flat.dtype if isinstance(flat, Tensor) else type(flat).__name__
            raise TypeError(f"{name} must be a floating point torch.Tensor {layout}, got {got}")
        if flat.dim() != len(lead) + 1 or flat.shape[-1] != self.num_flat_parameters:
            raise ValueError(f"{name} must have shape {layout}, got {tuple(flat.shape)}")

    def _check_obs(self, obs: Tensor, name: str, lead: Sequence[str]) -> None:
        shape = tuple(self.observation_space.shape)
        layout = "[" + ", ".join([*lead, *map(str, shape)]) + "]"
        if not isinstance(obs, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(obs).__name__}")
        if obs.dim() != len(lead) + len(shape) or tuple(obs.shape[len(lead):]) != shape:
            raise ValueError(f"{name} must have shape {layout} for observation space {self.observation_space}, "
                             f"got {tuple(obs.shape)}")
        if self.torso.uint8_frames and obs.dtype != torch.uint8:
            raise TypeError(f"{name} must be torch.uint8 frames (0..255) for torso "
                            f"{type(self.torso).__name__}, got dtype {obs.dtype}")
        if obs.is_complex():
            raise TypeError(f"{name} must be a real tensor (floating, integer or bool), got dtype {obs.dtype}")

    def _check_actions(self, actions: Tensor, lead: torch.Size) -> None:
        layout = "[" + ", ".join(["T", "B", *map(str, self.action_shape)]) + "]"
        kind = "integer" if self.discrete else "floating point"
        if not isinstance(actions, Tensor) or actions.is_floating_point() == self.discrete or actions.is_complex():
            got = actions.dtype if isinstance(actions, Tensor) else type(actions).__name__
            raise TypeError(f"actions must be a {kind} torch.Tensor {layout}, got {got}")
        if tuple(actions.shape) != (*lead, *self.action_shape):
            raise ValueError(f"actions must have shape {layout} = {(*lead, *self.action_shape)} to match obs_seq, "
                             f"got {tuple(actions.shape)}")


__all__ = ["RecurrentPolicy"]
