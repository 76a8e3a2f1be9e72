"""The mutation score: does the test suite catch a broken learner?

Each mutation below changes one line of the code that matters (the update rules and their chunkwise
forms, resets, GAE, the PPO loss, the double pole physics and success test, the search objective,
checkpoints) the way a plausible bug would. The script applies one mutation at a time to the working
tree, runs the tests that guard that code, and restores the file, then prints a table: a mutation is
caught when a test fails (or the run times out); a mutant that does not even import is reported as
BROKEN, a mistake in the list. Every mutation of the list must be caught.

    .venv/bin/python tests/mutations.py                 # all, one after the other (about 7 minutes on 2 cores)
    .venv/bin/python tests/mutations.py --only ppo-surrogate-sign,gae-no-bootstrap-cut
    .venv/bin/python tests/mutations.py --list

Written by hand rather than with mutmut: the point is a fixed list of meaningful mutations, each checked
against the tests that claim to guard it, not every operator of every line. The files are changed in
place (the tests import the installed, editable package) and restored on exit, Ctrl-C included;
bytecode goes to a fresh folder each run so that a mutant's .pyc is never read back.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: files or node ids


OPS = ("tests/test_ops.py",)
CORES = ("tests/test_cores.py", "tests/test_cores_recurrent_fwp.py", "tests/test_cores_rnn_direct.py")
TRITON = ("tests/test_recurrent_fwp_triton.py",)
PPO = ("tests/test_ppo.py", "tests/test_learning.py")
DISTRIBUTED = ("tests/test_distributed.py::"
               "test_two_ranks_take_the_step_of_one_process_on_the_same_envs_and_minibatches",)
DOUBLE_POLE = ("tests/test_double_pole.py",)
SEARCH = ("tests/test_neuroevolution.py",)

MUTATIONS: tuple[Mutation, ...] = (
    # --- the update rules and their chunkwise forms
    Mutation("delta-error-sign", "fwp_rl/ops/delta.py",
             'error = v - torch.einsum("bhk,bhkv->bhv", k, S)', 'error = v + torch.einsum("bhk,bhkv->bhv", k, S)',
             OPS),
    Mutation("delta-gate-halved", "fwp_rl/ops/delta.py",
             "S = S * torch.exp(log_alpha)[..., None, None]", "S = S * torch.exp(0.5 * log_alpha)[..., None, None]",
             OPS),
    Mutation("delta-loop-no-reset", "fwp_rl/ops/delta.py",
             "S = S * (~starts[t]).to(S.dtype)[:, None, None, None]", "S = S", OPS),
    Mutation("linear-write-halved", "fwp_rl/ops/linear.py",
             "S = S + k.unsqueeze(-1) * v.unsqueeze(-2)", "S = S + 0.5 * k.unsqueeze(-1) * v.unsqueeze(-2)", OPS),
    Mutation("linear-normalizer-dropped", "fwp_rl/ops/linear.py",
             "return o[..., :-1] / (o[..., -1:] + eps)", "return o[..., :-1]", OPS),
    Mutation("chunk-ignores-resets", "fwp_rl/ops/chunk.py",
             "seg = torch.cumsum(starts.t().reshape(B, 1, N, C).long(), dim=-1)",
             "seg = torch.zeros_like(starts.t().reshape(B, 1, N, C).long())", OPS),
    Mutation("chunk-reads-the-future", "fwp_rl/ops/chunk.py",
             "causal = torch.ones(C, C, dtype=torch.bool, device=device).tril()",
             "causal = torch.ones(C, C, dtype=torch.bool, device=device).tril(1)", OPS),
    Mutation("chunk-state-survives-reset", "fwp_rl/ops/chunk.py",
             "torch.mul(S, keep[:, n], out=states[n + 1])", "torch.mul(S, 1.0, out=states[n + 1])", OPS),
    Mutation("chunk-backward-half-kk", "fwp_rl/ops/chunk.py",
             "d_k_n.baddbmm_(d_kk + d_kk.transpose(-1, -2), k_n)", "d_k_n.baddbmm_(d_kk, k_n)", OPS),
    Mutation("chunk-inverse-too-short", "fwp_rl/ops/chunk.py", "span *= 2", "span *= 4", OPS),
    Mutation("dpfp-rolls-by-zero", "fwp_rl/ops/feature_maps.py",
             "for i in range(1, nu + 1)", "for i in range(0, nu)", OPS + ("tests/test_cores.py",)),
    Mutation("sum-norm-off-by-one", "fwp_rl/ops/feature_maps.py",
             "phi = phi * (phi.sum(dim=-1, keepdim=True) + eps).reciprocal()",
             "phi = phi * (phi.sum(dim=-1, keepdim=True) + 1.0).reciprocal()", OPS + ("tests/test_cores.py",)),
    Mutation("rdn-sigmoid-feedback", "fwp_rl/ops/recurrent_fwp.py",
             'torch.einsum("bhi,hio->bho", torch.tanh(y_prev), R)',
             'torch.einsum("bhi,hio->bho", torch.sigmoid(y_prev), R)', CORES),
    Mutation("sequence-undo-sign", "fwp_rl/ops/inplace.py",
             "add_outer_(St, e, a, alpha=-1.0)", "add_outer_(St, e, a, alpha=1.0)", CORES),
    Mutation("sequence-reset-not-undone", "fwp_rl/ops/inplace.py",
             "St.index_copy_(0, index, S_rows.transpose(-1, -2))", "St.index_fill_(0, index, 0)", CORES),
    Mutation("triton-undo-sign", "fwp_rl/ops/recurrent_fwp_kernels.py",
             "S -= a[:, None] * e[None, :]  # S_{t-1}", "S += a[:, None] * e[None, :]  # S_{t-1}", TRITON),
    Mutation("triton-reset-not-restored", "fwp_rl/ops/recurrent_fwp_kernels.py",
             "return tl.where(started != 0, tl.load(", "return tl.where(started != 0, 0.0 * tl.load(", TRITON),
    Mutation("triton-rdn-rate-gradient", "fwp_rl/ops/recurrent_fwp_kernels.py",
             "beta_max * sig * (1.0 - sig)", "beta_max * sig", TRITON),
    Mutation("triton-delta-rnn-query-gradient", "fwp_rl/ops/recurrent_fwp_kernels.py",
             "dy_next = tl.where(started != 0, 0.0, _softmax_backward(s, ds))",
             "dy_next = tl.where(started != 0, 0.0, ds)", TRITON),
    Mutation("triton-delta-lstm-forget-gradient", "fwp_rl/ops/recurrent_fwp_kernels.py",
             "dc_next = tl.where(started != 0, 0.0, dc * (1.0 - ig))", "dc_next = tl.where(started != 0, 0.0, dc)",
             TRITON),
    Mutation("triton-srwm-restart-gradient-dropped", "fwp_rl/ops/recurrent_fwp_triton.py",
             "return dpx, S_kept.sum(0), dS0, None", "return dpx, torch.zeros_like(S_kept[0]), dS0, None", TRITON),
    Mutation("delta-rnn-sequence-query-gradient", "fwp_rl/ops/feature_maps.py",
             "return s * (ds - (s * ds).sum(-1, keepdim=True))", "return s * ds", CORES),
    Mutation("delta-lstm-sequence-forget-gradient", "fwp_rl/ops/recurrent_fwp.py",
             "dc_next = dc * (1.0 - i)", "dc_next = dc", CORES),
    Mutation("srwm-sequence-restart-gradient-dropped", "fwp_rl/ops/srwm.py",
             "dW0 += restart_episodes(St, dS, ctx.kept[t]).sum(0)", "restart_episodes(St, dS, ctx.kept[t])", CORES),
    Mutation("direct-sequence-count-off-by-one", "fwp_rl/ops/direct.py",
             "counts = (t - since + 1).to(x.dtype)", "counts = (t - since).to(x.dtype)", CORES),
    Mutation("delta-rnn-tanh-query", "fwp_rl/ops/recurrent_fwp.py",
             "r, R = delta_rule_step(torch.softmax(y_prev, dim=-1), k, v, beta, R)",
             "r, R = delta_rule_step(torch.tanh(y_prev), k, v, beta, R)", CORES),
    Mutation("delta-lstm-no-forget", "fwp_rl/ops/recurrent_fwp.py",
             "c = i * a_u + (1.0 - i) * c_prev", "c = i * a_u + c_prev", CORES),
    Mutation("srwm-update-sign", "fwp_rl/ops/srwm.py",
             "torch.sigmoid(b) * k, v - v_bar)", "torch.sigmoid(b) * k, v_bar - v)", CORES),
    Mutation("direct-additive-sets", "fwp_rl/ops/direct.py", "W = W + delta", "W = delta", CORES),
    Mutation("core-reset-keeps-state", "fwp_rl/cores/base.py",
             "torch.where(episode_start.view(-1, *([1] * (s.dim() - 1))), i.to(s.dtype), s)",
             "torch.where(episode_start.view(-1, *([1] * (s.dim() - 1))), s, s)", CORES),
    Mutation("rnn-fused-forward-ignores-resets", "fwp_rl/ops/rnn.py",
             "h, c = h * keep[t], c * keep[t]", "h, c = h, c", CORES),
    Mutation("rnn-fused-gradient-crosses-resets", "fwp_rl/ops/rnn.py",
             "dh, dc = dh * keep[t], dc * keep[t]", "dh, dc = dh, dc * keep[t]", CORES),
    Mutation("gru-fused-gate-derivative-dropped", "fwp_rl/ops/rnn.py",
             "d[:, :2 * H].mul_(rz - rz * rz)", "d[:, :2 * H].mul_(rz)", CORES),
    Mutation("rnn-packed-carries-state-past-resets", "fwp_rl/cores/rnn.py",
             "state0 = self.reset(tuple(s[first // T] for s in state), episode_starts.T.flatten()[first])",
             "state0 = tuple(s[first // T] for s in state)", CORES),
    Mutation("rnn-packed-final-state-of-first-segment", "fwp_rl/cores/rnn.py",
             "last = begins.sum(dim=1).cumsum(dim=0) - 1", "last = begins.sum(dim=1).cumsum(dim=0) - begins.sum(dim=1)",
             CORES),
    Mutation("rnn-ignores-a-reset-at-the-first-step", "fwp_rl/cores/rnn.py",
             "return self._run(x, self.reset(state, episode_starts[0]))", "return self._run(x, state)", CORES),
    # --- GAE and the PPO update
    Mutation("gae-no-bootstrap-cut", "agents/ppo.py",
             "alive = 1.0 - ended.to(rewards.dtype)", "alive = 1.0 - 0.0 * ended.to(rewards.dtype)", PPO),
    Mutation("gae-drops-lambda", "agents/ppo.py",
             "last = delta + gamma * lam * alive * last", "last = delta + gamma * alive * last", PPO),
    Mutation("ppo-surrogate-sign", "agents/ppo.py",
             "torch.max(-adv * ratio, -adv * ratio.clamp(", "torch.max(adv * ratio, adv * ratio.clamp(", PPO),
    Mutation("ppo-clip-takes-min", "agents/ppo.py",
             "torch.max(-adv * ratio, -adv * ratio.clamp(", "torch.min(-adv * ratio, -adv * ratio.clamp(", PPO),
    Mutation("ppo-clip-one-sided", "agents/ppo.py",
             "ratio.clamp(1 - hp.clip_coef, 1 + hp.clip_coef)", "ratio.clamp(1 - hp.clip_coef, None)", PPO),
    Mutation("ppo-value-clip-off", "agents/ppo.py",
             'torch.max((values - mb["returns"]) ** 2, (clipped - mb["returns"]) ** 2)',
             '((values - mb["returns"]) ** 2)', PPO),
    Mutation("ppo-no-adv-scale", "agents/ppo.py",
             "adv = (adv - mean) / (variance.sqrt() + 1e-8)", "adv = adv - mean", PPO),
    Mutation("ppo-entropy-sign", "agents/ppo.py",
             "loss = policy_loss - hp.ent_coef * entropy_mean", "loss = policy_loss + hp.ent_coef * entropy_mean",
             PPO),
    Mutation("ppo-lr-not-annealed", "agents/ppo.py",
             "frac = 1.0 - self.update_index / self.config.num_updates", "frac = 1.0", PPO),
    Mutation("ppo-target-kl-ignored", "agents/ppo.py",
             "float(epoch_kl) > hp.target_kl", "float(epoch_kl) > 1e9 * hp.target_kl", PPO),
    Mutation("ppo-sequences-ignore-resets", "agents/ppo.py",
             'policy.evaluate(mb["obs"], mb["actions"], state0, mb["starts"])',
             'policy.evaluate(mb["obs"], mb["actions"], state0, torch.zeros_like(mb["starts"]))', PPO),
    # --- data-parallel PPO
    Mutation("ddp-gradients-not-summed", "agents/ppo.py", "            ranks.sum_gradients(policy.parameters())",
             "            pass", DISTRIBUTED),
    Mutation("ddp-advantages-normalized-per-rank", "agents/ppo.py",
             "mean, variance = _mean_and_variance(adv, entries, ranks)",
             "mean, variance = _mean_and_variance(adv, adv.numel(), Ranks())", DISTRIBUTED),
    Mutation("ddp-statistics-of-one-rank", "agents/ppo.py",
             "self.policy.update_observation_statistics(rollout.obs, self.ranks.sum)",
             "self.policy.update_observation_statistics(rollout.obs)", DISTRIBUTED),
    # --- the double pole physics and success test
    Mutation("physics-gravity-sign", "envs/double_pole/physics.py",
             "torch.add(c.hinge * theta_dot, sin, alpha=GRAVITY)", "torch.add(c.hinge * theta_dot, sin, alpha=-GRAVITY)",
             DOUBLE_POLE),
    Mutation("physics-rk4-weights", "envs/double_pole/physics.py",
             "torch.add(k1, k2 + k3, alpha=2.0) + k4", "torch.add(k1, k2 + k3, alpha=1.0) + k4", DOUBLE_POLE),
    Mutation("physics-friction-sign", "envs/double_pole/physics.py",
             "torch.add(push, torch.sign(x_dot), alpha=-CART_FRICTION)",
             "torch.add(push, torch.sign(x_dot), alpha=CART_FRICTION)", DOUBLE_POLE),
    Mutation("force-half-range", "envs/double_pole/physics.py",
             "(output.clamp(0.0, 1.0) - 0.5) * (2.0 * MAX_FORCE)", "(output.clamp(0.0, 1.0) - 0.5) * MAX_FORCE",
             DOUBLE_POLE),
    Mutation("balanced-any-limit", "envs/double_pole/physics.py",
             "(state[..., 0::2].abs() <= _limits(state.device, state.dtype)).all(-1)",
             "(state[..., 0::2].abs() <= _limits(state.device, state.dtype)).any(-1)", DOUBLE_POLE),
    Mutation("damping-weights-swapped", "envs/double_pole/success.py",
             "return 0.1 * f1 + 0.9 * f2", "return 0.9 * f1 + 0.1 * f2", DOUBLE_POLE),
    Mutation("shortcut-ignores-memory", "envs/double_pole/success.py",
             "*(s.flatten().to(sim.state.dtype) for s in controller.state)])", "])", SEARCH + DOUBLE_POLE),
    Mutation("success-without-generalization", "envs/double_pole/success.py",
             "self.generalization >= GENERALIZATION_REQUIRED", "self.generalization >= 0",
             SEARCH + ("tests/test_bench_double_pole.py",)),
    Mutation("success-any-long-balance", "envs/double_pole/success.py",
             "long_ok = self.balanced == MARKOV_STEPS", "long_ok = self.balanced > 0",
             SEARCH + ("tests/test_bench_double_pole.py",)),
    # --- the search problem
    Mutation("search-minimizes", "agents/neuroevolution.py",
             'super().__init__("max", solution_length', 'super().__init__("min", solution_length', SEARCH),
    Mutation("search-miscounts-evaluations", "agents/neuroevolution.py",
             "self.evaluations += len(x)", "self.evaluations += 1", SEARCH),
    # --- checkpoints
    Mutation("checkpoint-without-format", "fwp_rl/runs.py",
             'payload = {"format": CHECKPOINT_FORMAT, **payload}', "payload = dict(payload)",
             ("tests/test_runs.py", "tests/test_ppo.py")),
    Mutation("checkpoint-format-unchecked", "fwp_rl/runs.py",
             'if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:',
             "if not isinstance(payload, dict):", ("tests/test_runs.py", "tests/test_ppo.py")),
    Mutation("resume-forgets-minibatch-order", "agents/ppo.py",
             'self.generator.set_state(payload["generator"])', "pass", ("tests/test_ppo.py",)),
    Mutation("atomic-write-not-flushed", "fwp_rl/files.py", "        write(f)\n        f.flush()\n",
             "        write(f)\n        f.truncate(0)\n", ("tests/test_files.py", "tests/test_runs.py")),
    # --- what a run promises
    Mutation("load-runs-code", "fwp_rl/runs.py", "map_location=map_location, weights_only=True)",
             "map_location=map_location, weights_only=False)", ("tests/test_runs.py",)),
    Mutation("nan-checkpoint-written", "fwp_rl/runs.py", 'spoiled = first_nonfinite(_tensors(payload, "the checkpoint"))',
             "spoiled = None", ("tests/test_runs.py",)),
    Mutation("previous-checkpoint-dropped", "fwp_rl/harness.py", 'previous=folder / "previous.pt" if keep else None',
             "previous=None", ("tests/test_runs.py", "tests/test_ppo.py")),
    Mutation("ppo-steps-through-nan", "agents/ppo.py", "if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):",
             "if False:", ("tests/test_ppo.py",)),
    Mutation("metrics-not-synced-before-checkpoint", "fwp_rl/harness.py", "            self._metrics.sync()",
             "            pass", ("tests/test_harness.py",)),
    Mutation("resume-config-unchecked", "fwp_rl/harness.py", "        if refused:\n", "        if False:\n",
             ("tests/test_harness.py", "tests/test_cli.py")),
    Mutation("run-dir-not-locked", "fwp_rl/runs.py", "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "pass",
             ("tests/test_runs.py", "tests/test_harness.py")),
    Mutation("sigterm-told-as-ctrl-c", "fwp_rl/progress.py", "self._requested, _stopped_by = True, signum",
             "self._requested, _stopped_by = True, signal.SIGINT", ("tests/test_progress.py", "tests/test_cli.py")),
    Mutation("evolution-resume-forgets-generator", "agents/neuroevolution.py",
             '        self.problem.load_state_dict(state["problem"])', "        pass",
             ("tests/test_neuroevolution_resume.py",)),
    Mutation("nan-fitness-can-win", "agents/neuroevolution.py", "fitness[~torch.isfinite(fitness)] = -math.inf",
             "pass", SEARCH),
)


def check(mutation: Mutation) -> str:
    """The file's text; an error naming the mutation when its line is no longer there exactly once."""
    text = (ROOT / mutation.path).read_text()
    found = text.count(mutation.old)
    if found != 1:
        raise SystemExit(f"mutation {mutation.name!r} does not apply: its line occurs {found} times in "
                         f"{mutation.path} (it must occur exactly once); update tests/mutations.py")
    return text


class _Restore:
    """Writes the original text back when the block ends, also on Ctrl-C or SIGTERM."""

    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text

    def _on_signal(self, signum, frame):
        self.path.write_text(self.text)
        raise KeyboardInterrupt

    def __enter__(self):
        self._old = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc):
        self.path.write_text(self.text)
        signal.signal(signal.SIGTERM, self._old)


def run(mutation: Mutation, timeout: float) -> tuple[str, str, float]:
    """Apply one mutation, run its tests, restore the file: (result, the first failing test, seconds)."""
    path = ROOT / mutation.path
    text = check(mutation)
    start = time.perf_counter()
    with _Restore(path, text), tempfile.TemporaryDirectory() as cache:
        path.write_text(text.replace(mutation.old, mutation.new))
        env = dict(os.environ, PYTHONPYCACHEPREFIX=cache)
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                   *mutation.tests]
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "caught", f"timeout after {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return "SURVIVED", "", seconds
    if done.returncode != 1:  # not a failing test: the mutant did not import, or pytest could not run
        return "BROKEN", f"pytest exit {done.returncode}: the mutation itself is wrong", seconds
    failed = re.search(r"^FAILED (\S+)", done.stdout, re.MULTILINE)
    return "caught", failed.group(1) if failed else "", seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutation names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutation's test run")
    args = parser.parse_args(argv)
    chosen = list(MUTATIONS)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {m.name for m in MUTATIONS})
        if unknown:
            parser.error(f"unknown mutation {', '.join(unknown)}; see --list")
        chosen = [m for m in MUTATIONS if m.name in names]
    for mutation in chosen:
        check(mutation)
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.path}: {m.old.strip()!r} -> {m.new.strip()!r}")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mutations")
    for column in ("mutation", "file", "result", "caught by", "s"):
        table.add_column(column, justify="right" if column == "s" else "left")
    missed = 0
    for i, mutation in enumerate(chosen, 1):
        result, by, seconds = run(mutation, args.timeout)
        missed += result != "caught"
        print(f"[{i}/{len(chosen)}] {mutation.name}: {result} {by} ({seconds:.0f} s)", flush=True)
        table.add_row(mutation.name, mutation.path, result, by, f"{seconds:.0f}")
    Console().print(table)
    print(f"{len(chosen) - missed} of {len(chosen)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
