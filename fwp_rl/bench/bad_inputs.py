"""What a user can get wrong, as a table: ``BAD_INPUTS``, each case a command line of fwp-rl with the files it names,
and a part of the one-line error it must give. ``try_case`` runs one in this process; ``fwp-rl bench faults`` tries
them all and counts the clear errors (exit code 2, one line on stderr, no traceback), and tests/test_faults.py
asserts each.

The files a case needs are made in a folder of its own, from three tiny valid configs (``CONFIGS``, one per
learner) and the run directories ``_fake_run`` writes; {dir} in a case's command line is that folder.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

RECALL = "env: {id: fwp_rl/Recall-v0, num_envs: 2, options: {k: 3, delay: 2}}\n"
PPO_STEPS = "ppo: {total_steps: 48, num_steps: 24, num_minibatches: 2, update_epochs: 1, device: cpu}\n"
CONFIGS = {
    "ppo": f"learner: ppo\nname: p\n{RECALL}policy: {{torso: mlp, core: delta}}\n{PPO_STEPS}",
    "ne": "learner: neuroevolution\nname: n\nenv: {id: double_pole, options: {task: nonmarkov}}\n"
          "policy: {torso: identity, core: direct, core_options: {hidden_size: 1, slow_size: 2}}\n"
          "search: {algorithm: cmaes, popsize: 8, max_generations: 1}\n",
    "gym": "learner: neuroevolution\nname: g\nenv: {id: CartPole-v1}\n"
           "policy: {torso: identity, core: elman, core_options: {hidden_size: 2}}\n"
           "search: {algorithm: snes, popsize: 4, max_generations: 1}\n",
    "sb3": f"learner: sb3_recurrent_ppo\nname: s\n{RECALL}policy: MlpLstmPolicy\n"
           f"policy_kwargs: {{lstm_hidden_size: 8}}\n{PPO_STEPS}",
}


@dataclass(frozen=True)
class Case:
    """One mistake: ``argv`` after "fwp-rl" ({dir}: the case's folder, which holds every config of ``CONFIGS`` as
    <name>.yaml, written with run.root {dir}/runs), ``expected`` a part of its error message, ``setup`` what else
    the folder needs."""

    argv: tuple[str, ...]
    expected: str
    setup: Callable[[Path], None] | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return " ".join(self.argv).replace("{dir}/", "")


def _train(config: str, *overrides: str) -> tuple[str, ...]:
    return ("train", f"{{dir}}/{config}.yaml", *(part for o in overrides for part in ("--set", o)))


def _set(config: str, override: str, expected: str) -> Case:
    return Case(_train(config, override), expected)


# ---------------------------------------------------------------------------------------------- files
def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def _fake_run(name: str = "run", checkpoint: Callable[[Path], None] | None = None, config: str = "ppo",
              metrics: str = '{"step": 24, "update": 1, "episodic_return": 0.5}\n') -> Callable[[Path], None]:
    """A run directory {dir}/runs/<name> of config ``config`` with metrics.jsonl and a checkpoint: what
    ``checkpoint(path)`` writes at checkpoints/latest.pt, or else a real one of update 1 (not trained: the weights of
    a fresh policy)."""
    def setup(folder: Path) -> None:
        from fwp_rl.agents.ppo import Trainer
        from fwp_rl.config import dump_yaml, to_dict
        from fwp_rl.learners import load_config
        from fwp_rl.runs import save_checkpoint

        run_dir = folder / "runs" / name
        (run_dir / "checkpoints").mkdir(parents=True)
        cfg = load_config(str(folder / f"{config}.yaml"), [])
        dump_yaml(cfg, run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").write_text(metrics)
        latest = run_dir / "checkpoints" / "latest.pt"
        if checkpoint is not None:
            checkpoint(latest)
            return
        trainer = Trainer(cfg)
        try:
            state = trainer.state_dict()
        finally:
            trainer.close()
        save_checkpoint(latest, {"learner": "ppo", "config": to_dict(cfg), **state, "update": 1, "global_step": 24})
    return setup


class _Crafted:
    def __reduce__(self):
        return (print, ("this ran",))


def _crafted(path: Path) -> None:
    torch.save({"format": 1, "learner": "ppo", "policy": _Crafted()}, path)


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _torch(payload) -> Callable[[Path], None]:
    return lambda path: torch.save(payload, path)


# ---------------------------------------------------------------------------------------------- the table
BAD_INPUTS: list[Case] = [
    # PPO's config, through --set
    *(_set("ppo", o, e) for o, e in [
        ("ppo.num_minibatches=3", "ppo.num_minibatches=3 is not allowed"),
        ("ppo.num_minibatches=0", "ppo.num_minibatches=0 is not allowed"),
        ("ppo.sequence_length=5", "ppo.sequence_length=5 is not allowed"),
        ("ppo.sequence_length=0", "ppo.sequence_length=0 is not allowed"),
        ("ppo.gamma=1.5", "ppo.gamma=1.5 is not allowed"),
        ("ppo.gamma=-0.1", "ppo.gamma=-0.1 is not allowed"),
        ("ppo.gae_lambda=2", "ppo.gae_lambda=2"),
        ("ppo.learning_rate=0", "ppo.learning_rate=0"),
        ("ppo.learning_rate=-1e-3", "ppo.learning_rate=-0.001"),
        ("ppo.learning_rate=fast", "ppo.learning_rate"),
        ("ppo.learning_rate=.nan", "ppo.learning_rate=nan"),
        ("ppo.clip_coef=0", "ppo.clip_coef=0"),
        ("ppo.max_grad_norm=-1", "ppo.max_grad_norm=-1"),
        ("ppo.total_steps=0", "ppo.total_steps=0"),
        ("ppo.total_steps=1.5", "ppo.total_steps"),
        ("ppo.num_steps=0", "ppo.num_steps=0"),
        ("ppo.update_epochs=0", "ppo.update_epochs=0"),
        ("ppo.update_epochs=true", "ppo.update_epochs"),
        ("ppo.target_kl=-1", "ppo.target_kl=-1"),
        ("ppo.ent_coef=abc", "ppo.ent_coef"),
        ("ppo.device=tpu", "ppo.device='tpu'"),
        ("ppo.device=cuda:x", "ppo.device='cuda:x'"),
        ("ppo.nonfinite=ignore", "ppo.nonfinite='ignore' is not allowed"),
        ("ppo.bogus=1", "unknown key 'bogus'"),
        ("ppo=3", "ppo"),
        ("env.id=NoSuchEnv-v0", "env.id='NoSuchEnv-v0'"),
        ("env.id=no_such_module:Env-v0", "module 'no_such_module' cannot be imported"),
        ("env.id=json:Env-v0", "module 'json' registers no Gymnasium id 'Env-v0'"),
        ("env={id: 'atari:pongg', num_envs: 2}", "did you mean 'pong'"),
        ("env.num_envs=0", "env.num_envs=0"),
        ("env.num_envs=-2", "env.num_envs=-2"),
        ("env.num_envs=two", "env.num_envs"),
        ("env.options.k=0", "k"),
        ("env.options.bogus=1", "bogus"),
        ("env.options=[1]", "env.options"),
        ("policy.core=nope", "core"),
        ("policy.torso=nope", "torso"),
        ("policy.torso=nature_cnn", "nature_cnn"),
        ("policy.dtype=float16", "policy.dtype='float16' is not allowed"),
        ("policy.core_options.bogus=1", "bogus"),
        ("policy.core_options.hidden_size=-1", "hidden_size"),
        ("policy.core_options.heads=3", "heads"),
        ("policy.core_options.conv_size=1", "conv_size=1"),
        ("policy.core_options.output_norm=maybe", "output_norm"),
        ("policy.core_options.beta_bias=.nan", "beta_bias"),
        ("policy.core_options.feature_map=relu", "feature_map='relu'"),
        ("policy.core_output=sideways", "policy.core_output"),
        ("env.options.difficulty=extreme", "difficulty"),
        ("policy.action_squash=maybe", "policy.action_squash"),
        ("policy.normalize_observations=maybe", "policy.normalize_observations"),
        ("seed=-1", "seed=-1"),
        ("seed=abc", "seed"),
        ("seed=1.5", "seed"),
        ("learner=nope", "learner='nope' is not allowed"),
        ("name=", "name"),
        ("name=../outside", "name"),
        ("name=a/b", "name"),
        ("run.wandb=maybe", "run.wandb='maybe' is not allowed"),
        ("run.checkpoint_every=0", "run.checkpoint_every=0"),
        ("run.checkpoint_every=often", "run.checkpoint_every"),
        ("run.eval_every=-1", "run.eval_every=-1 is not allowed"),
        ("run.eval_every=often", "run.eval_every"),
        ("run.eval_episodes=0", "run.eval_episodes=0 is not allowed"),
        ("run.eval_deterministic=maybe", "run.eval_deterministic"),
        ("run.eval_video_every=-1", "run.eval_video_every=-1 is not allowed"),
        ("run.eval_video_every=2", "run.eval_video_every=2 records the video of an evaluation: set run.eval_every"),
        ("run.tags=mine", "run.tags: expected a list, got 'mine'"),
        ("run.tags=[1]", "run.tags[0]=1 is not allowed: expected str"),
        ("run.tags=['']", "run.tags[0]='' is not allowed: a W&B tag has 1 to 64 characters"),
        (f"run.tags=[{'x' * 65}]", "run.tags[0]="),
        ("run.entity=''", "run.entity='' is not allowed: name a W&B user or team"),
        ("run.entity=[a]", "run.entity=['a'] is not allowed"),
        ("run.tensorboard=maybe", "run.tensorboard='maybe' is not allowed"),
        ("run.bogus=1", "unknown key 'bogus'"),
    ]),
    # neuroevolution's config
    *(_set("ne", o, e) for o, e in [
        ("search.algorithm=nope", "search.algorithm='nope' is not allowed"),
        ("search.popsize=1", "search.popsize=1 is too small"),
        ("search.popsize=-4", "search.popsize=-4"),
        ("search.stdev_init=0", "search.stdev_init=0"),
        ("search.init_bound=-1", "search.init_bound=-1"),
        ("search.max_evaluations=0", "search.max_evaluations=0"),
        ("search.num_actors=-1", "search.num_actors=-1"),
        ("search.device=tpu", "search.device='tpu'"),
        ("search.restart_after=0", "search.restart_after=0"),
        ("search.restart_unbalanced_after=-5", "search.restart_unbalanced_after=-5"),
        ("search.target=100", "search.target is allowed for Gymnasium ids only"),
        ("search.options.bogus=1", "search.options"),
        ("search.bogus=1", "unknown key 'bogus'"),
        ("env.episodes=0", "env.episodes=0"),
        ("env.episodes=2", "env.episodes=2 is not allowed for double_pole"),
        ("env.options.task=nope", "task"),
        ("env.options.bogus=1", "bogus"),
        ("env.id=NoSuchEnv-v0", "env.id='NoSuchEnv-v0' is neither 'double_pole', a registered Gymnasium id"),
        ("env.id=atari:pong", "env.id='atari:pong' is not allowed for neuroevolution"),
        ("env.id=no_such_module:Env-v0", "module 'no_such_module' cannot be imported"),
        ("env.id=json:Env-v0", "module 'json' registers no Gymnasium id 'Env-v0'"),
        ("policy.core=nope", "core"),
        ("policy.dtype=int8", "policy.dtype='int8' is not allowed"),
        ("policy.normalize_observations=true", "policy.normalize_observations=true is not allowed for "
         "neuroevolution"),
        ("run.eval_every=5", "run.eval_every is allowed for Gymnasium ids only"),
    ]),
    *(_set("gym", o, e) for o, e in [
        ("search.compile=true", "search.compile=true is allowed for env.id='double_pole' only"),
        ("search.restart_after=100", "search.restart_after is allowed for env.id='double_pole' only"),
        ("search={algorithm: ga, max_generations: 1}", "search.popsize must be set for algorithm 'ga'"),
        ("search={algorithm: pgpe, popsize: 5}", "search.popsize=5 is not allowed for 'pgpe'"),
        ("env.options.bogus=1", "bogus"),
        ("run.eval_deterministic=false", "run.eval_deterministic=false is not allowed for neuroevolution"),
    ]),
    # the SB3 baseline's config
    *(_set("sb3", o, e) for o, e in [
        ("policy=MlpPolicy", "policy='MlpPolicy' is not allowed"),
        ("policy=CnnLstmPolicy", "CnnLstmPolicy"),
        ("policy_kwargs.bogus=1", "bogus"),
        ("normalize_observations=maybe", "normalize_observations"),
        ("ppo.sequence_length=12", "ppo.sequence_length=12 is not allowed for sb3_recurrent_ppo"),
        ("ppo.nonfinite=skip", "ppo.nonfinite='skip' is not allowed for sb3_recurrent_ppo"),
        ("ppo.num_minibatches=5", "ppo.num_minibatches=5 is not allowed"),
        ("env.options.vectorization_mode=async", "vectorization_mode='async' is not allowed"),
        ("env.id=atari:pong", "env.options"),
        ("env.id=no_such_module:Env-v0", "module 'no_such_module' cannot be imported"),
    ]),
    # --set itself
    *(_set("ppo", o, e) for o, e in [
        ("ppo.gamma", "must look like key=value"),
        ("=0.9", "must look like key=value"),
        ("ppo.gamma.x=1", "ppo.gamma={'x': 1} is not allowed"),
        ("ppo.gamma={", "ppo.gamma"),
        ("ppo.gamma=[0.9, 0.99]", "ppo.gamma"),
    ]),
    # config files
    Case(("train", "{dir}/missing.yaml"), "config file '{dir}/missing.yaml' does not exist"),
    Case(("train", "{dir}"), "does not exist"),
    Case(("train", "{dir}/empty.yaml"), "learner=None is not allowed", _write("empty.yaml", "")),
    Case(("train", "{dir}/list.yaml"), "must hold a mapping of keys, got list", _write("list.yaml", "- 1\n- 2\n")),
    Case(("train", "{dir}/broken.yaml"), "is not valid YAML", _write("broken.yaml", "learner: ppo\nppo: {gamma: \n")),
    Case(("train", "{dir}/binary.yaml"), "config file", _write("binary.yaml", b"\x00\xff\xfe\x80")),
    Case(("train", "{dir}/nolearner.yaml"), "learner=None is not allowed", _write("nolearner.yaml", "name: x\n")),
    Case(("train", "{dir}/section.yaml"), "env", _write("section.yaml", "learner: ppo\nenv: 3\n")),
    Case(("train", "{dir}/unknown.yaml"), "unknown key 'bogus'", _write("unknown.yaml", "learner: ppo\nbogus: 1\n")),
    Case(("train",), "train needs a CONFIG file"),
    # train's options
    Case((*_train("ppo"), "--seeds", "x"), "--seeds"),
    Case((*_train("ppo"), "--seeds", "3-1"), "--seeds"),
    Case((*_train("ppo"), "--seeds", "0-20000"), "--seeds"),
    Case((*_train("ppo"), "--seeds", "0,1", "--parallel", "0"), "--parallel"),
    Case((*_train("ppo"), "--parallel", "2"), "--parallel"),
    Case((*_train("ppo"), "--nproc", "0"), "--nproc 0 is not allowed"),
    Case((*_train("ppo"), "--nproc", "4096"), "--nproc 4096 is not allowed"),
    Case((*_train("ppo"), "--nproc", "2", "--seeds", "0,1"), "--nproc 2 trains one run in several processes"),
    Case((*_train("ne"), "--nproc", "2"), "--nproc 2 is not allowed for a 'neuroevolution' run"),
    # run directories
    Case(("train", "--resume", "{dir}/nowhere"), "is not a run directory"),
    Case(("train", "--resume", "{dir}/ppo.yaml"), "is not a run directory"),
    Case(("train", "--resume", "{dir}"), "is not a run directory"),
    Case(("train", "--resume", "{dir}/runs/run", "--seeds", "0,1"), "--seeds starts new runs",
         _fake_run()),
    Case(("train", "{dir}/ppo.yaml", "--resume", "{dir}/runs/run"), "--resume continues a run with the config in its "
         "directory", _fake_run()),
    Case(("train", "--resume", "{dir}/runs/run"), "without checkpoints/latest.pt",  # but with previous.pt
         lambda folder: (_fake_run()(folder), (folder / "runs" / "run" / "checkpoints" / "latest.pt").rename(
             folder / "runs" / "run" / "checkpoints" / "previous.pt"))),
    Case(("train", "--resume", "{dir}/runs/run"), "not a readable fwp-rl checkpoint",
         _fake_run(checkpoint=_bytes(b""))),
    Case(("train", "--resume", "{dir}/runs/run"), "not a readable fwp-rl checkpoint",
         _fake_run(checkpoint=_bytes(b"PK\x03\x04 truncated"))),
    Case(("train", "--resume", "{dir}/runs/run"), "holds print, which loading would run code",
         _fake_run(checkpoint=_crafted)),
    Case(("train", "--resume", "{dir}/runs/run"), "is not an fwp-rl checkpoint", _fake_run(checkpoint=_torch([1, 2]))),
    Case(("train", "--resume", "{dir}/runs/run"), "holds a 'neuroevolution' run, not a 'ppo' run",
         _fake_run(checkpoint=_torch({"format": 1, "learner": "neuroevolution"}))),
    Case(("train", "--resume", "{dir}/runs/run", "--set", "policy.core=lstm"), "policy",
         _fake_run()),
    Case(("train", "--resume", "{dir}/runs/run", "--set", "ppo.gamma=2"), "ppo.gamma=2", _fake_run()),
    Case(("train", "--resume", "{dir}/runs/run", "--set", "run.eval_episodes=5"), "run.eval_episodes 10 -> 5",
         _fake_run()),
    Case(("train", "--resume", "{dir}/runs/run"), "config file",
         lambda folder: (_fake_run()(folder), (folder / "runs" / "run" / "config.yaml").write_text("a: [\n"))),
    # checkpoints to evaluate
    Case(("evaluate", "{dir}/nowhere.pt"), "checkpoint '{dir}/nowhere.pt' does not exist"),
    Case(("evaluate", "{dir}"), "is a directory without checkpoints/latest.pt"),
    Case(("evaluate", "{dir}/ppo.yaml"), "not a readable fwp-rl checkpoint"),
    Case(("evaluate", "{dir}/runs/run"), "not a readable fwp-rl checkpoint", _fake_run(checkpoint=_bytes(b"x" * 100))),
    Case(("evaluate", "{dir}/runs/run"), "holds print", _fake_run(checkpoint=_crafted)),
    Case(("evaluate", "{dir}/runs/run"), "is not an fwp-rl checkpoint of format 1",
         _fake_run(checkpoint=_torch({"format": 99}))),
    Case(("evaluate", "{dir}/runs/run"), "is a checkpoint of learner 'dqn'",
         _fake_run(checkpoint=_torch({"format": 1, "learner": "dqn"}))),
    Case(("evaluate", "{dir}/runs/run"), "config",
         _fake_run(checkpoint=_torch({"format": 1, "learner": "ppo"}))),
    Case(("evaluate", "{dir}/runs/run"), "config",
         _fake_run(checkpoint=_torch({"format": 1, "learner": "ppo", "config": {"learner": "ppo", "bogus": 1}}))),
    Case(("evaluate", "{dir}/runs/run", "--episodes", "0"), "--episodes=0 is not allowed", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--seed", "-1"), "--seed=-1 is not allowed", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--memory-view"), "--memory-view draws into the video", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--video", "{dir}/ppo.yaml"), "ppo.yaml", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--video", "{dir}/v", "--fps", "0"), "--fps 0.0 is not allowed: it must be a "
         "positive number", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--video", "{dir}/v", "--fps", "inf"), "--fps inf is not allowed", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--fps", "10"), "--fps sets the frame rate of the video: give --video DIR too",
         _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--video", "{dir}/v", "--memory-view", "--shared-scale", "0"),
         "--shared-scale 0.0 is not allowed: it must be a positive number", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--video", "{dir}/v", "--shared-scale", "2"),
         "--shared-scale colours the memory view", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--checkpoint", "best"), "the run had no evaluation (set run.eval_every)",
         _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--checkpoint", "previous"), "has no checkpoints/previous.pt", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--checkpoint", "step_9.pt"), "does not exist", _fake_run()),
    Case(("evaluate", "{dir}/runs/run/checkpoints/latest.pt", "--checkpoint", "best"),
         "picks a checkpoint of a run directory", _fake_run()),
    Case(("evaluate", "{dir}/runs/run", "--checkpoint", "{dir}/ppo.yaml"), "not a readable fwp-rl checkpoint",
         _fake_run()),
    # metrics files and reports
    Case(("compare", "{dir}/nowhere"), "nowhere"),
    Case(("compare", "{dir}"), "no run directories"),
    Case(("compare", "{dir}/runs/run"), "metrics.jsonl", _fake_run(metrics='{"step": 24}\nnot json\n{"step": 48}\n')),
    Case(("compare", "{dir}/runs/run"), "metrics.jsonl", _fake_run(metrics='[1, 2]\n{"step": 48}\n')),
    Case(("compare", "{dir}/runs/run"), "metrics.jsonl", _fake_run(metrics='{"update": 1}\n{"step": 48}\n')),
    Case(("compare", "{dir}/runs/run", "--metric", "nope"), "nope", _fake_run()),
    Case(("compare", "{dir}/runs/run", "--window", "0"), "--window", _fake_run()),
    Case(("compare", "{dir}/runs/run", "--out", "{dir}/ppo.yaml"), "ppo.yaml", _fake_run()),
    Case(("compare", "{dir}/runs/run", "--group-by", "ppo.nope"), "--group-by 'ppo.nope' is not allowed", _fake_run()),
    Case(("train", "--resume", "{dir}/runs/run"), "metrics.jsonl",
         _fake_run(metrics='{"step": 24}\n{"step": "x"}\n{"step": 48}\n')),
    # benchmarks' options
    Case(("bench", "cores", "--seq-lens", "0"), "--seq-lens"),
    Case(("bench", "cores", "--batch", "0"), "--batch"),
    Case(("bench", "cores", "--cores", "nope"), "nope"),
    Case(("bench", "cores", "--device", "tpu"), "tpu"),
    Case(("bench", "ppo", "--updates", "0"), "--updates 0 is not allowed"),
    Case(("bench", "ppo", "--configs", "{dir}/missing.yaml"), "does not exist"),
    Case(("bench", "double-pole", "--configs", "{dir}/ne.yaml", "--seeds", "0"), "--seeds"),
    Case(("bench", "double-pole", "--configs", "{dir}/ne.yaml", "--tasks", "nope"), "nope"),
    Case(("bench", "double-pole"), "no config files in configs/double_pole/"),
    Case(("bench", "double-pole", "--configs", "{dir}/ppo.yaml"), "ppo.yaml"),
    Case(("bench", "faults", "--kills", "0"), "--kills 0 is not allowed"),
    Case(("bench", "faults", "--learners", "dqn"), "--learners dqn is not allowed"),
    Case(("bench", "faults", "--max-delay", "-1"), "--max-delay -1.0 is not allowed"),
]


@dataclass
class Outcome:
    """What fwp-rl did with a case: its exit code and what it wrote to stderr."""

    code: int
    stderr: str

    @property
    def clear(self) -> bool:
        """Exit code 2 and one line of error, no traceback (argparse's usage lines before its error are fine)."""
        errors = [line for line in self.stderr.splitlines() if "error:" in line]
        return self.code == 2 and len(errors) == 1 and "Traceback" not in self.stderr


def try_case(case: Case, folder: Path) -> Outcome:
    """Run ``case`` in this process, in ``folder`` (empty), where its files are made."""
    from fwp_rl.cli import main

    for name, text in CONFIGS.items():
        (folder / f"{name}.yaml").write_text(text + f"run: {{root: {str(folder / 'runs')!r}, wandb: disabled}}\n")
    if case.setup is not None:
        case.setup(folder)
    argv = [part.replace("{dir}", str(folder)) for part in case.argv]
    stderr = io.StringIO()
    # in the folder: what a case writes to a default place (compare's reports/, runs/) stays there
    with contextlib.chdir(folder), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001 - what the table is there to find
            import traceback

            traceback.print_exc()
            code = 1
    return Outcome(code, stderr.getvalue().replace(str(folder), "{dir}"))
