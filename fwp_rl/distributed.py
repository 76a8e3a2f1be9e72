"""One PPO run trained by several processes at once, data-parallel over torch.distributed: ``fwp-rl train CONFIG
--nproc N`` on one machine, or torchrun on one or several (README, docs/ppo.md).

Every process (a rank) steps its share of the run's envs, env.num_envs / ranks of them: rank r's env i is env
r * num_envs / ranks + i of the run, seeded as one process seeds that env, so the ranks together step the envs one
process would. Each rank collects its own rollout; each minibatch is the one a single process would take from all
the rollouts together (the same sequences, drawn by the same generator on every rank), every rank computes its part
of the loss (its sequences' sum over the minibatch's size over all ranks) and the gradients are summed over the ranks
before each optimizer step, so every rank takes the step one process would take on the same rollouts
(``fwp_rl.agents.ppo.ppo_update``). What one process normalizes over a minibatch or a rollout (the advantages, the
explained variance, the observation normalizer's statistics) is summed over the ranks first, and so are the figures
logged (losses, approx_kl, clipfrac, the episodes' returns and lengths); timings are rank 0's. Rank 0's parameters
are broadcast to the others at the start: machines whose arithmetic differs could initialize them apart.

Rank 0 alone writes the run (``fwp_rl.harness.Run``): its directory, metrics, W&B, TensorBoard, checkpoints and the
evaluations during training; a resume reads the checkpoint on rank 0 and sends it to the others. A request to stop
(Ctrl-C, SIGTERM) at any rank stops every rank after the update under way. Rank 0 samples its actions from torch's
generator as one process does (seeded by the run's seed, kept in the checkpoint); every other rank's is seeded by the
run's seed, its rank and the update it starts at.

A process joins its group from torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) with the gloo backend for tensors on the CPU and NCCL for tensors on a GPU; training on CUDA, each
process takes the GPU of its local rank. ``--nproc N`` (``train_in_processes``) is a small torchrun of its own: it
hosts the group's store, spawns N processes in sessions of their own, takes Ctrl-C and SIGTERM for them, and waits.
It is written here rather than taken from torch.distributed.launcher (torchrun's elastic agent) so that what stops
a rank reaches the user as the error itself (a one-line ConfigError, a RankFailed naming the rank) and a first Ctrl-C
stops every rank after its update, as ``--parallel`` does; the agent reports a ChildFailedError with its own
multi-line summary of each rank.

A rank that fails (an exception, or killed) stops the run: the other ranks' next collective fails (gloo sees the
connection close) and they end, or ``--nproc`` kills them ``SHUTDOWN_GRACE`` seconds after the first failure; its
message names the rank that failed first, and its error. Checkpoints are written atomically by rank 0, so whichever
rank fails the last checkpoint is whole, and the run resumes from it (``--resume RUN_DIR --nproc N``, with any N that
divides env.num_envs). A rank that hangs instead is found only by torch's timeout of a collective (its default: 30
minutes on gloo, 10 on NCCL), which also bounds how long the others wait for rank 0's evaluations and checkpoints.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing
from rich.console import Console
from torch import Tensor, nn

from fwp_rl.config import ConfigError, parse_device
from fwp_rl.learners import LEARNERS, learner
from fwp_rl.progress import StopOnInterrupt, ctrl_c_ignored, stop_with_group
from fwp_rl.runs import USER_ERRORS, NonFiniteError
from fwp_rl.workers import available_cpus

if TYPE_CHECKING:
    from fwp_rl.harness import Trained

T = TypeVar("T")

SHUTDOWN_GRACE = 30.0
"""Seconds ``--nproc`` gives the ranks to end by themselves after the first one failed (or after a second Ctrl-C),
before it kills them."""

DATA_PARALLEL = tuple(name for name, entry in LEARNERS.items() if entry.data_parallel)


class OtherRankFailed(RuntimeError):
    """This rank stopped because another one failed: a collective found it gone (or out of reach), or rank 0 sent
    the error that stopped it."""


class RankFailed(RuntimeError):
    """A rank of a run trained by several processes failed: reported as one line naming the rank."""


@dataclasses.dataclass(frozen=True)
class Ranks:
    """The processes that train one run together, as one of them sees them: its ``rank`` among ``world`` ranks, and
    its ``local_rank`` among those of its machine. ``Ranks()`` is a single process: rank 0 of 1, whose sums and
    broadcasts are the values themselves."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that writes the run."""
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world}"

    @contextlib.contextmanager
    def _collective(self) -> Iterator[None]:
        try:
            yield
        except RuntimeError as e:
            # gloo's "[file:line] Connection closed by peer [address]:port. This is typically caused by ..."
            said = re.sub(r"^\[[^\]]*\] ", "", str(e).strip()).split(". ")[0].splitlines()
            raise OtherRankFailed(f"{self} stopped: another rank ended or cannot be reached"
                                  + (f" ({said[0]})" if said else "")) from None

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the ranks, in place, and returned (on the CPU over gloo, on a GPU over NCCL)."""
        if self.world > 1:
            with self._collective():
                dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true at any rank."""
        return flag if self.world == 1 else bool(self.sum(torch.tensor(float(flag))) > 0)

    def sum_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace each parameter's gradient by its sum over the ranks (a parameter without one adds zeros), in one
        all_reduce."""
        if self.world == 1:
            return
        parameters = list(parameters)
        flat = self.sum(torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)
                                   for p in parameters]))
        for p, grad in zip(parameters, flat.split([p.numel() for p in parameters])):
            p.grad = grad.view_as(p)

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers into ``module`` at every rank."""
        if self.world > 1:
            with self._collective():
                for tensor in module.state_dict().values():
                    dist.broadcast(tensor, src=0)

    def from_main(self, make: Callable[[], T]) -> T:
        """What ``make()`` returns at rank 0, at every rank (pickled and broadcast; the other ranks do not call it).
        An exception it raises is raised at rank 0, and the others raise OtherRankFailed with its message."""
        box = [None]
        if self.main:
            try:
                box = [(make(), None)]
            except Exception as e:
                box = [(None, e)]
        if self.world > 1:
            with self._collective():
                dist.broadcast_object_list(box, src=0)
        value, error = box[0]
        if error is not None and self.main:
            raise error
        if error is not None:
            raise OtherRankFailed(f"{self} stopped: rank 0 failed: {error}")
        return value

    def place(self, device: torch.device) -> torch.device:
        """The device this rank trains on for a run on ``device``: on CUDA with several ranks, the GPU of its local
        rank, made the current CUDA device (NCCL's)."""
        if device.type != "cuda" or self.world == 1:
            return device
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device


def launched() -> bool:
    """Whether this process was started as a rank of a group (by torchrun, or by ``--nproc``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _device(config) -> torch.device:
    return parse_device(f"ppo.device={config.ppo.device!r}", config.ppo.device, auto=True)


def check_world(config, world: int, what: str, here: bool = False) -> None:
    """A ConfigError unless ``world`` processes can train ``config`` together; ``what`` says where ``world`` comes
    from ("--nproc 3", "WORLD_SIZE=3"). ``here``: all of them on this machine, at most one per CPU core (training on
    the CPU) or per GPU (on CUDA)."""
    if world < 1:
        raise ConfigError(f"{what} is not allowed: it must be >= 1")
    if config.learner not in DATA_PARALLEL:
        raise ConfigError(f"{what} is not allowed for a {config.learner!r} run: only "
                          f"{', '.join(map(repr, DATA_PARALLEL))} runs train in several processes")
    device = _device(config)
    if device.type == "cuda" and device.index is not None and world > 1:
        raise ConfigError(f"ppo.device={config.ppo.device!r} is not allowed with {what}: each process takes the GPU "
                          "of its local rank; use 'cuda' or 'auto'")
    if device.type == "cuda" and world > 1 and not dist.is_nccl_available():
        raise ConfigError(f"ppo.device={config.ppo.device!r} with {what} needs NCCL, which this build of torch lacks: "
                          "install a CUDA build of torch with NCCL, or train on 'cpu' (gloo)")
    if here and device.type == "cuda" and world > torch.cuda.device_count():
        raise ConfigError(f"{what} is not allowed: training on CUDA takes one GPU per process and this machine has "
                          f"{torch.cuda.device_count()}")
    if here and device.type == "cpu" and world > available_cpus():
        raise ConfigError(f"{what} is not allowed: training on the CPU takes a core per process and this process may "
                          f"use {available_cpus()}")
    if config.env.num_envs % world:
        raise ConfigError(f"env.num_envs={config.env.num_envs} is not allowed with {what}: it must be a multiple of "
                          f"{world}, each process stepping num_envs / {world} of the envs")


def check_nproc(config, nproc: int) -> None:
    """A ConfigError unless ``--nproc nproc`` can train ``config`` on this machine (``check_world``)."""
    check_world(config, nproc, f"--nproc {nproc}", here=True)


@contextlib.contextmanager
def joined() -> Iterator[Ranks]:
    """This process in its group (torchrun's environment variables), as ``Ranks``; it leaves the group when the
    block ends."""
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    dist.init_process_group(backend)
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    finally:
        dist.destroy_process_group()


def train_as_rank(load: Callable[[], tuple[object, str | None]], console: Console | None = None) -> Trained:
    """Train as one rank of a group: rank 0 loads the config and the run directory to resume (``load()``: (config,
    None) for a new run) and checks them, and sends them to the others; then every rank trains its part of the run.
    Returns what rank 0 trained (the other ranks: no run directory). Errors name the rank: one that says what is
    wrong with the run keeps its type, anything else becomes a RankFailed (its traceback printed first) or, where a
    collective failed because another rank ended, an OtherRankFailed."""
    with joined() as ranks:
        try:
            def checked() -> tuple[object, str | None]:
                config, resume = load()
                check_world(config, ranks.world, f"WORLD_SIZE={ranks.world}")
                return config, resume

            config, resume = ranks.from_main(checked)
            console = console if ranks.main else Console(quiet=True)
            return learner(config.learner).train(config, resume=resume, console=console, ranks=ranks)
        except OtherRankFailed:
            raise
        except (*USER_ERRORS, NonFiniteError) as e:
            raise type(e)(f"{ranks}: {e}") from None
        except Exception as e:
            traceback.print_exc()
            raise RankFailed(f"{ranks} failed: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------------------------- --nproc
_DONE, _FAILED = "done", "failed"


def _die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when the process that started it dies (PR_SET_PDEATHSIG): a rank
    whose ``--nproc`` process was killed stops after its update instead of training on alone."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def torchrun_environment(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment torchrun gives rank ``rank`` of ``world`` processes on this machine whose group's store
    (a ``torch.distributed.TCPStore`` at 127.0.0.1:``port``) its caller hosts, as torchrun's agent does."""
    return dict(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True")


def _rank_process(rank: int, world: int, port: int, threads: int, config, resume: str | None, stop, connection
                  ) -> None:
    """The body of one rank that ``--nproc`` started: a session of its own, so that Ctrl-C at the terminal reaches
    only ``--nproc``, which asks the run to stop by setting the event ``stop`` (``fwp_rl.progress.stop_with_group``);
    the environment torchrun would give it (``torchrun_environment``); ``train_as_rank``. Then it sends back (_DONE,
    what it trained) or (_FAILED, the error)."""
    os.setsid()
    stop_with_group(stop.is_set)
    _die_with_parent()
    os.environ.update(torchrun_environment(rank, world, port))
    torch.set_num_threads(threads)
    try:
        connection.send((_DONE, train_as_rank(lambda: (config, resume), Console())))
    except Exception as e:
        connection.send((_FAILED, e))


def _ended(process) -> RankFailed:
    process.join(SHUTDOWN_GRACE)
    code = process.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited ({code})"
    return RankFailed(f"{process.name} {how} before it finished")


def train_in_processes(config, resume: str | None, nproc: int, console: Console | None = None) -> Trained:
    """Train ``config`` (or resume the run in ``resume``) in ``nproc`` processes on this machine (module docstring;
    check ``check_nproc`` first) -> what rank 0 trained.

    Ctrl-C or SIGTERM here (``fwp_rl.progress.StopOnInterrupt``) asks every rank to stop after the update under way; a
    second one kills them at once, as ``--parallel`` kills its workers (the last checkpoint is whole), and raises
    KeyboardInterrupt. A rank that failed raises its error here, the first one's that is not an OtherRankFailed: the
    error itself when it says what is wrong with the run, else a RankFailed naming the rank."""
    console = console or Console()
    context = torch.multiprocessing.get_context("spawn")
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    stop = context.Event()
    threads = max(1, available_cpus() // nproc)
    processes, pending = [], {}  # pending: a rank's end of its pipe -> its rank, until the rank reported or ended
    results, failures = {}, []  # results: rank -> what it trained; failures: errors in the order they came
    deadline = None  # from the first failure on: when the ranks still running are killed
    try:
        # Ctrl-C would reach a rank until it has a session of its own; it asks this process to stop them from here on.
        with ctrl_c_ignored():
            for rank in range(nproc):
                here, there = context.Pipe(duplex=False)
                process = context.Process(target=_rank_process, name=f"rank {rank} of {nproc}",
                                          args=(rank, nproc, store.port, threads, config, resume, stop, there))
                process.start()
                there.close()  # once the rank ends, reading here finds the end of the pipe
                processes.append(process)
                pending[here] = rank
        with StopOnInterrupt(console, "after this update", stop.set):
            while pending and (deadline is None or time.monotonic() < deadline):
                for connection in wait(list(pending), None if deadline is None else deadline - time.monotonic()):
                    rank = pending.pop(connection)
                    try:
                        status, value = connection.recv()
                    except EOFError:
                        status, value = _FAILED, _ended(processes[rank])
                    if status == _DONE:
                        results[rank] = value
                    else:
                        failures.append(value)
                        deadline = deadline or time.monotonic() + SHUTDOWN_GRACE
    finally:
        for process in processes:
            process.kill()  # a no-op for one that has ended; SIGTERM would only ask its run to stop
            process.join()
    if failures:
        raise next((e for e in failures if not isinstance(e, OtherRankFailed)), failures[0])
    return results[0]


__all__ = ["OtherRankFailed", "RankFailed", "Ranks", "check_nproc", "check_world", "joined", "launched",
           "torchrun_environment", "train_as_rank", "train_in_processes"]
