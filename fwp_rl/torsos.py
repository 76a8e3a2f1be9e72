"""Torsos: the feed-forward networks that turn an observation into the features a memory core reads.

- ``mlp``: a Box of any shape, flattened, through fully connected layers (vector observations);
- ``nature_cnn``: the DQN conv stack (Mnih et al. 2015) on uint8 frames [C, H, W], H and W >= 36;
- ``impala``: the IMPALA ResNet (Espeholt et al. 2018) on uint8 frames [C, H, W], the torso of the
  reference fast-weight Atari agents (3 stages of 16, 32, 32 channels; 4 x 84 x 84 frames give 3872
  features before the Linear to 256);
- ``identity``: a Box of any shape, flattened and multiplied by a fixed ``scale`` (default 1): tiny evolved
  controllers, whose core reads the observation itself.

``make_torso(name, observation_space, **options)`` builds one after checking that it can take the space.
Every torso maps x [N, *observation_shape] (already cast to a floating dtype) to [N, output_size]; the
image torsos divide by 255 themselves, so frames stay uint8 until they reach the network.
"""

from __future__ import annotations

import inspect
import math

import torch
from gymnasium import spaces
from torch import Tensor, nn

from fwp_rl.checks import check_choice, check_size


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def check_sizes(name: str, value) -> None:
    """Raise a ValueError naming ``name`` unless value is a non-empty list (or tuple) of integers >= 1."""
    if (not isinstance(value, (tuple, list)) or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise ValueError(f"{name}={value!r} is not allowed: it must be a non-empty list of integers >= 1")


class Torso(nn.Module):
    """Base class: ``observation_shape`` -> ``output_size`` features."""

    # What the torso accepts, in words, for error messages.
    accepts = ""
    # Whether observations must be uint8 frames (scaled by 1/255 inside the torso).
    uint8_frames = False
    observation_shape: tuple[int, ...]
    output_size: int

    @classmethod
    def can_take(cls, space: spaces.Space) -> bool:
        raise NotImplementedError


class _FlatBoxTorso(Torso):
    accepts = "a Box of any shape (flattened)"

    @classmethod
    def can_take(cls, space: spaces.Space) -> bool:
        return isinstance(space, spaces.Box) and len(space.shape) > 0


class Identity(_FlatBoxTorso):
    """x [N, *shape] -> scale * x.flatten(1): no parameters.

    ``scale`` is a fixed input gain. It changes no function a controller can compute, only the weights
    that compute it, and so the search: when a good controller must respond strongly to small changes
    of its inputs (the velocities a non-Markov double pole controller reads from differences of
    consecutive positions), a gain puts those weights within reach of a search that starts at order one.
    """

    def __init__(self, observation_space: spaces.Box, scale: float = 1.0):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale={scale!r} is not allowed: it must be a finite number > 0")
        self.observation_shape = tuple(observation_space.shape)
        self.output_size = math.prod(self.observation_shape)
        self.scale = float(scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) * self.scale


class MLP(_FlatBoxTorso):
    """x [N, *shape] -> flatten -> (Linear -> activation) for each of ``hidden_sizes`` -> [N, hidden_sizes[-1]]."""

    def __init__(self, observation_space: spaces.Box, hidden_sizes: tuple[int, ...] | list[int] = (64, 64),
                 activation: str = "tanh"):
        super().__init__()
        check_sizes("hidden_sizes", hidden_sizes)
        check_choice("activation", activation, tuple(ACTIVATIONS))
        self.observation_shape = tuple(observation_space.shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.observation_shape)
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        self.net = nn.Sequential(*layers)
        self.output_size = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _FrameTorso(Torso):
    """Conv torsos on uint8 frames [C, H, W] (channels first), at least ``min_size`` pixels high and wide."""

    uint8_frames = True
    min_size = 1

    @classmethod
    def can_take(cls, space: spaces.Space) -> bool:
        return (isinstance(space, spaces.Box) and space.dtype == "uint8" and len(space.shape) == 3
                and min(space.shape[1:]) >= cls.min_size)

    def _finish(self, observation_space: spaces.Box, convs: nn.Module, features: int) -> None:
        """Set the head: flatten the conv output, Linear to ``features``, ReLU."""
        self.observation_shape = tuple(observation_space.shape)
        with torch.no_grad():
            flat = convs(torch.zeros(1, *self.observation_shape)).shape[1]
        self.convs = convs
        self.head = nn.Sequential(nn.Linear(flat, check_size("features", features)), nn.ReLU())
        self.output_size = features

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.convs(x / 255.0))


class NatureCNN(_FrameTorso):
    """The DQN torso: conv 8x8/4 (32), conv 4x4/2 (64), conv 3x3/1 (64), Linear to ``features``, ReLU each."""

    accepts = "a uint8 Box of frames [C, H, W] (channels first) with H, W >= 36"
    min_size = 36

    def __init__(self, observation_space: spaces.Box, features: int = 512):
        super().__init__()
        convs = nn.Sequential(
            nn.Conv2d(observation_space.shape[0], 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        self._finish(observation_space, convs, features)


class ResidualBlock(nn.Module):
    """x + conv3x3(relu(conv3x3(relu(x)))), channels kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                 nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class ImpalaResNet(_FrameTorso):
    """IMPALA ResNet: per stage conv 3x3, max-pool 3/2, two residual blocks; ReLU, Linear to ``features``, ReLU."""

    accepts = "a uint8 Box of frames [C, H, W] (channels first)"

    def __init__(self, observation_space: spaces.Box, channels: tuple[int, ...] | list[int] = (16, 32, 32),
                 features: int = 256):
        super().__init__()
        check_sizes("channels", channels)
        layers: list[nn.Module] = []
        width = observation_space.shape[0]
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1),
                       nn.MaxPool2d(3, stride=2, padding=1), ResidualBlock(out), ResidualBlock(out)]
            width = out
        layers += [nn.ReLU(), nn.Flatten()]
        self._finish(observation_space, nn.Sequential(*layers), features)


TORSOS: dict[str, type[Torso]] = {"mlp": MLP, "nature_cnn": NatureCNN, "impala": ImpalaResNet, "identity": Identity}


def torso_options(name: str) -> dict:
    """The options torso ``name`` takes (beyond the observation space), with their defaults."""
    check_choice("torso", name, tuple(TORSOS))
    params = inspect.signature(TORSOS[name].__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "observation_space")}


def make_torso(name: str, observation_space: spaces.Space, **options) -> Torso:
    """Build torso ``name`` for ``observation_space``; a space it cannot take or an unknown option raises."""
    allowed = torso_options(name)
    cls = TORSOS[name]
    if not cls.can_take(observation_space):
        raise ValueError(f"torso {name!r} cannot take the observation space {observation_space}: "
                         f"it accepts {cls.accepts}")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"torso {name!r} has no option {', '.join(unknown)}; its options are: "
                         f"{', '.join(allowed) or '(none)'}")
    return cls(observation_space, **options)


__all__ = ["ImpalaResNet", "Identity", "MLP", "NatureCNN", "TORSOS", "Torso", "make_torso", "torso_options"]
