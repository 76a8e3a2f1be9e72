"""The ``fwp-rl`` command line.

Exit status: 0 done (a run that Ctrl-C stopped and saved too); 1 a run that made a nan or an infinity (its last good
checkpoint kept), a seed of ``train --seeds --parallel`` lost with its worker process, or a ``bench faults`` whose
promises broke; 2 a user mistake (a bad config or option, a path that is not a run or checkpoint, a broken
metrics.jsonl, a run that another process is training), reported in one line; 130 stopped at once by a second
Ctrl-C (or SIGTERM); 143 (128 + SIGTERM) a ``train`` that SIGTERM stopped after the update under way, saved, so that
``--resume`` goes on from there.
"""

from __future__ import annotations

import argparse
import sys


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return values


def _core_list(text: str) -> list[str]:
    from fwp_rl.cores import CORES  # here, not at the top: it imports torch, which takes seconds

    names = text.split(",")
    unknown = [n for n in names if n not in CORES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown core {', '.join(unknown)}; allowed: {', '.join(CORES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    from fwp_rl.learners import LEARNERS, RESUMABLE

    parser = argparse.ArgumentParser(prog="fwp-rl", description="Reinforcement learning with fast weight programmers.")
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("bench", help="run a benchmark whose figures docs/benchmarks/ quotes")
    benches = bench.add_subparsers(dest="bench", required=True)
    cores = benches.add_parser("cores", help="forward+backward time of every memory core vs nn.LSTM")
    cores.add_argument("--seq-lens", type=_int_list, default=[32, 128, 512], help="sequence lengths T")
    cores.add_argument("--batch", type=int, default=64)
    cores.add_argument("--width", type=int, default=256, help="model width (input and hidden size)")
    cores.add_argument("--heads", type=int, default=4)
    cores.add_argument("--repeats", type=int, default=5, help="timed runs per entry; the median is shown")
    cores.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    cores.add_argument("--cores", type=_core_list, default=None, help="comma-separated core names (default: all)")
    cores.add_argument("--reset-rate", type=float, default=0.01,
                       help="the share of steps where an episode starts, in the cores' sequences (nn.LSTM has none)")
    cores.add_argument("--json", default=None, help="also write the rows to this JSON file")

    ppo = benches.add_parser("ppo", help="PPO training steps per second and where the time goes")
    ppo.add_argument("--configs", type=lambda t: t.split(","), default=None,
                     help="comma-separated PPO config files (default: Pong with lstm, delta and rdn)")
    ppo.add_argument("--updates", type=int, default=3, help="timed updates per config; the median is shown")
    ppo.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    ppo.add_argument("--num-envs", type=int, default=None, help="envs per config (default: each config's env.num_envs)")
    ppo.add_argument("--json", default=None, help="also write the rows to this JSON file")

    double_pole = benches.add_parser(
        "double-pole", help="neuroevolution on the double pole: success over seeds beside the published table, and "
                            "simulated steps/s of our batched evaluation vs EvoTorch's VecGymNE",
        description="For each config and task, runs seeds 0..N-1 of fwp_rl.agents.neuroevolution.evolve (each stops "
                    "when solved or at search.max_evaluations) and prints success rate, mean and median evaluations "
                    "to solve and mean generalization (of 625) over the solved runs, and mean wall time per run, "
                    "beside the published evaluations of docs/double_pole.md. Then times one evaluation of a "
                    "population on the non-Markov task, ours (DoublePoleProblem, on the CPU and on CUDA when there "
                    "is one) against EvoTorch's VecGymNE on fwp_rl/DoublePoleNoVel-v0, with the same controller on "
                    "both sides, and prints simulated steps per second and the ratio.")
    double_pole.add_argument("--configs", type=lambda t: t.split(","), default=None,
                             help="comma-separated neuroevolution double pole config files "
                                  "(default: every file in configs/double_pole/)")
    double_pole.add_argument("--tasks", type=lambda t: t.split(","), default=["markov", "nonmarkov"],
                             help="comma-separated tasks, markov and/or nonmarkov (default: both); each run sets "
                                  "env.options.task")
    double_pole.add_argument("--seeds", type=int, default=50, metavar="N",
                             help="independent runs per config and task, seeds 0..N-1 (default: 50)")
    double_pole.add_argument("--max-evaluations", type=int, default=None, metavar="N",
                             help="override search.max_evaluations of every config")
    double_pole.add_argument("--parallel", type=int, default=1, metavar="N",
                             help="runs at a time, in worker processes of one torch thread each (default: 1, "
                                  "in this process)")
    double_pole.add_argument("--popsize", type=int, default=64,
                             help="candidates per evaluation in the steps/s comparison (default: 64)")
    double_pole.add_argument("--larger-popsizes", type=_int_list, default=[], metavar="N,N",
                             help="also time our evaluation at these population sizes, against VecGymNE's steps/s "
                                  "at --popsize (VecGymNE's one env per candidate would take hours at 65,536)")
    double_pole.add_argument("--devices", type=lambda t: t.split(","), default=None, metavar="cpu,cuda",
                             help="where our evaluation is timed (default: the CPU, and CUDA when there is one); "
                                  "VecGymNE runs on the CPU")
    double_pole.add_argument("--repeats", type=int, default=3,
                             help="timed evaluations per side in the steps/s comparison; the median is shown")
    double_pole.add_argument("--only", choices=("success", "throughput"), default=None,
                             help="run only the success table or only the steps/s comparison")
    double_pole.add_argument("--compile", action="store_true",
                             help="set search.compile in every run (torch.compile fuses each control step), and "
                                  "time our evaluation compiled too in the steps/s comparison")
    double_pole.add_argument("--json", default=None,
                             help="also write the runs, rows and speeds to this JSON file, each run as it finishes; "
                                  "given the file of an interrupted bench with the same options, keep its runs and "
                                  "make the others")

    gym = benches.add_parser(
        "gym", help="neuroevolution on Gymnasium tasks: evaluations to reach each config's target over seeds, "
                    "held-out returns, and env steps/s beside EvoTorch's VecGymNE",
        description="For each config (configs/gym/: a neuroevolution config of a Gymnasium id with search.target), "
                    "runs seeds 0..N-1 (each stops at its target or at search.max_evaluations) and prints how many "
                    "reached the target, the evaluations they needed (mean, median) and each run's kept controller's "
                    "mean return over held-out episodes; then times one population evaluation of every config's "
                    "controller and of EvoTorch's VecGymNE (an LSTM of the same size) on the same task, and prints "
                    "env steps per second and the ratio (see fwp_rl.bench.gym_evolution).")
    gym.add_argument("--configs", type=lambda t: t.split(","), default=None,
                     help="comma-separated config files (default: every file in configs/gym/)")
    gym.add_argument("--seeds", type=int, default=5, metavar="N", help="runs per config, seeds 0..N-1 (default: 5)")
    gym.add_argument("--max-evaluations", type=int, default=None, metavar="N",
                     help="override search.max_evaluations of every config")
    gym.add_argument("--parallel", type=int, default=1, metavar="N",
                     help="runs at a time, in worker processes of one torch thread each (default: 1, in this "
                          "process)")
    gym.add_argument("--held-out-episodes", type=int, default=20, metavar="N",
                     help="episodes of each run's kept controller on seeds the search never drew (default: 20)")
    gym.add_argument("--popsize", type=int, default=64,
                     help="candidates per evaluation in the steps/s comparison (default: 64)")
    gym.add_argument("--repeats", type=int, default=3,
                     help="timed evaluations per side in the steps/s comparison; the median is shown")
    gym.add_argument("--only", choices=("success", "throughput"), default=None,
                     help="run only the success table or only the steps/s comparison")
    gym.add_argument("--json", default=None, help="also write the runs, rows and speeds to this JSON file")

    faults = benches.add_parser(
        "faults", help="what a run promises, tried: bad inputs must give clear errors, and runs killed at random "
                       "moments and resumed must lose nothing",
        description="Runs every case of fwp_rl.bench.bad_inputs (a config, --set value, run directory, checkpoint or "
                    "metrics file a user can get wrong) and counts the clear one-line errors; then trains a small run "
                    "of each learner once uninterrupted and once killed (SIGKILL) again and again and resumed, and "
                    "prints what survived (see fwp_rl.bench.faults). Exit code 1 when a promise broke.")
    faults.add_argument("--kills", type=int, default=10, help="kills per run (default: 10)")
    faults.add_argument("--learners", type=lambda t: t.split(","), default=None,
                        help="comma-separated learners whose runs are killed (default: every learner)")
    faults.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    faults.add_argument("--max-delay", type=float, default=1.0, metavar="SECONDS",
                        help="each kill lands within this many seconds of the run's first new record (default: 1)")
    faults.add_argument("--only", choices=("inputs", "kills"), default=None, help="run only one of the two parts")
    faults.add_argument("--json", default=None, help="also write the counts to this JSON file")

    train = commands.add_parser("train", help="train from a YAML config")
    train.add_argument("config", nargs="?", help="YAML config file (configs/...); with --resume, the run's own")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set search.popsize=32 (repeatable)")
    train.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help=f"continue the {' or '.join(RESUMABLE)} run in RUN_DIR from its latest checkpoint; --set "
                            "may change its budget, device and run settings, nothing else (see fwp_rl.learners)")
    train.add_argument("--seeds", default=None, metavar="0,1,2",
                       help="seeds, comma-separated, each a seed or a range a-b (0,1,2 or 0-13 or 0-4,10): one "
                            "run per seed, grouped: runs/<name>/seed_<k>/ (see fwp_rl.seeds)")
    train.add_argument("--parallel", type=int, default=None, metavar="N",
                       help="with --seeds: train N seeds at a time in worker processes (default: one after another)")
    train.add_argument("--nproc", type=int, default=None, metavar="N",
                       help="train the run in N processes on this machine, data-parallel (PPO; one per CPU core, or "
                            "per GPU on CUDA; env.num_envs must divide by N; see fwp_rl.distributed). On several "
                            "machines start `python -m fwp_rl.cli train CONFIG` with torchrun instead (README)")

    compare = commands.add_parser("compare", help="learning curves and tables of runs grouped by config, with "
                                                  "bootstrap intervals over seeds (see fwp_rl.compare)")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_GROUP",
                         help="run directories, or directories holding run directories (a --seeds group, runs/)")
    compare.add_argument("--out", default=None, metavar="DIR",
                         help="write curves.png and table.csv/.json/.md here (default: a fresh reports/compare-<env>/)")
    compare.add_argument("--force", action="store_true", help="overwrite the report files already in --out")
    compare.add_argument("--group-by", default="name", metavar="name|core|KEY",
                         help="name: one group per config, runs of configs that differ in more than seed, name and "
                              "run.* never pooled (the default); core: one per policy.core; a dotted config key such "
                              "as ppo.learning_rate: one per value")
    compare.add_argument("--metric", default=None, metavar="NAME",
                         help="the logged value to compare (default: " + ", ".join(
                             f"{entry.default_metric} for {name}" for name, entry in LEARNERS.items()) + ")")
    compare.add_argument("--window", type=int, default=10, metavar="K",
                         help="average the values over windows of K records (curves, final and best scores)")
    compare.add_argument("--reference", default="lstm", metavar="GROUP_OR_CORE",
                         help="the group of the reference columns: the group of that label, else the only group of "
                              "that core's runs (default: lstm)")
    compare.add_argument("--seed-lines", action="store_true", help="also draw each seed's curve, thin")
    compare.add_argument("--wandb", choices=("online", "offline", "disabled"), default=None,
                         help="also log the report to W&B, or write it for `wandb sync` with offline (default: "
                              "online when every run logged online, else disabled)")

    evaluate = commands.add_parser("evaluate", help="replay a checkpoint")
    evaluate.add_argument("checkpoint", help="a checkpoint file or a run directory (its latest checkpoint)")
    evaluate.add_argument("--checkpoint", dest="which", default=None, metavar="best|latest|previous|PATH",
                          help="which checkpoint of the run directory: checkpoints/best.pt (the best evaluation "
                               "during training, run.eval_every), latest.pt (the default), previous.pt, or a "
                               "checkpoint file's PATH relative to the run directory")
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes to run (one after another)")
    evaluate.add_argument("--deterministic", action="store_true", help="take the most likely action")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the env and of action sampling")
    evaluate.add_argument("--video", default=None, metavar="DIR",
                          help="write an mp4 of the first episode into DIR, as <run>_seed<run seed>_"
                               "<checkpoint>_evalseed<--seed>_ep0.mp4, <run> being the --seeds group or else the "
                               "run directory's name (_memory.mp4 with --memory-view)")
    evaluate.add_argument("--overwrite", action="store_true", help="with --video: replace a video already there")
    evaluate.add_argument("--fps", type=float, default=None, metavar="N",
                          help="with --video: frames a second (default: the env's render_fps, else 30)")
    evaluate.add_argument("--memory-view", action="store_true",
                          help="with --video: show the memory (fast weights per head, the direct FWP's fast net, "
                               "or the recurrent state over time) and the outputs over time (action probabilities; "
                               "double pole: the output o, the inputs and prediction errors) beside the game")
    evaluate.add_argument("--shared-scale", type=float, default=None, metavar="S",
                          help="with --memory-view: colour the memory from -S to S, the same in every video given "
                               "it (default: each episode's largest |value|, printed)")
    evaluate.add_argument("--wandb", choices=("online", "offline"), default=None,
                          help="also log the figures and the video to W&B, in the training run's group (offline: "
                               "written beside the run for `wandb sync`)")
    return parser


def _train(args) -> int:
    from fwp_rl import distributed
    from fwp_rl.config import ConfigError
    from fwp_rl.learners import learner
    from fwp_rl.progress import terminated
    from fwp_rl.seeds import parse_seeds, train_seeds

    if args.parallel is not None and args.seeds is None:
        raise ConfigError("--parallel N trains N of the --seeds at a time: give --seeds too")
    if args.parallel is not None and args.parallel < 1:
        raise ConfigError(f"--parallel {args.parallel} is not allowed: it must be >= 1")
    if args.nproc is not None and args.seeds is not None:
        raise ConfigError(f"--nproc {args.nproc} trains one run in several processes and --seeds one run per seed: "
                          "give one of them")
    if args.resume is not None and args.seeds is not None:
        raise ConfigError("--seeds starts new runs and --resume continues one: resume each seed's run "
                          "directory on its own (--resume runs/<name>/seed_<k>)")
    if distributed.launched():  # a rank that torchrun started
        if args.nproc is not None or args.seeds is not None:
            raise ConfigError("under torchrun, train takes CONFIG or --resume RUN_DIR, and --set: not --nproc or "
                              "--seeds (torchrun's --nnodes and --nproc-per-node say how many processes)")
        return _status(distributed.train_as_rank(lambda: _run_config(args)).finished, terminated())
    seeds = None if args.seeds is None else parse_seeds(args.seeds)
    if seeds is not None and any(item.partition("=")[0] == "seed" for item in args.overrides):
        raise ConfigError("--set seed=... and --seeds both set the seed: give one of them")
    config, resume = _run_config(args)
    if args.nproc is not None:
        distributed.check_nproc(config, args.nproc)
    if args.nproc is not None and args.nproc > 1:
        return _status(distributed.train_in_processes(config, resume, args.nproc).finished, terminated())
    if seeds is None:
        return _status(learner(config.learner).train(config, resume=resume).finished, terminated())
    runs = train_seeds(config, seeds, args.parallel or 1)
    return 1 if any(r.lost for r in runs) else _status(all(r.finished for r in runs), terminated())


def _run_config(args):
    """The config of a train command and the run directory it resumes (None: a new run)."""
    from pathlib import Path

    from fwp_rl.config import ConfigError
    from fwp_rl.learners import load_config

    if args.resume is None:
        if args.config is None:
            raise ConfigError("train needs a CONFIG file (or --resume RUN_DIR)")
        return load_config(args.config, args.overrides), None
    if args.config is not None:
        raise ConfigError("--resume continues a run with the config in its directory: give RUN_DIR only "
                          "(and --set to change values such as ppo.total_steps)")
    config_path = Path(args.resume) / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"--resume {args.resume!r} is not a run directory (no config.yaml in it)")
    return load_config(str(config_path), args.overrides), args.resume


def _status(finished: bool, terminated: bool) -> int:
    """The exit status of a train that saved what it trained: 143 (128 + SIGTERM) when SIGTERM stopped it early
    (``terminated``), so that a job scheduler sees it terminated; else 0 (Ctrl-C stops are the user's own)."""
    import signal

    return 128 + signal.SIGTERM if not finished and terminated else 0


def _run(args) -> int:
    if args.command == "train":
        return _train(args)
    if args.command == "compare":
        from fwp_rl.compare import compare

        compare(args.runs, out=args.out, metric=args.metric, window=args.window, reference=args.reference,
                force=args.force, wandb_mode=args.wandb, group_by=args.group_by, seed_lines=args.seed_lines)
        return 0
    if args.command == "evaluate":
        from fwp_rl.config import ConfigError
        from fwp_rl.evaluate import evaluate_checkpoint

        if args.memory_view and args.video is None:
            raise ConfigError("--memory-view draws into the video: give --video DIR too")
        if args.overwrite and args.video is None:
            raise ConfigError("--overwrite replaces a video already there: give --video DIR too")
        if args.fps is not None and args.video is None:
            raise ConfigError("--fps sets the frame rate of the video: give --video DIR too")
        if args.shared_scale is not None and not args.memory_view:
            raise ConfigError("--shared-scale colours the memory view: give --video DIR --memory-view too")
        evaluate_checkpoint(args.checkpoint, episodes=args.episodes, deterministic=args.deterministic,
                            video_dir=args.video, seed=args.seed, memory_view=args.memory_view,
                            overwrite=args.overwrite, which=args.which, fps=args.fps, shared_scale=args.shared_scale,
                            wandb_mode=args.wandb)
        return 0
    if args.command == "bench" and args.bench == "cores":
        from fwp_rl.bench.cores import CoresOptions, run_cores_bench

        run_cores_bench(CoresOptions(seq_lens=args.seq_lens, batch=args.batch, width=args.width, heads=args.heads,
                                     repeats=args.repeats, device=args.device, cores=args.cores,
                                     reset_rate=args.reset_rate, json=args.json))
    if args.command == "bench" and args.bench == "ppo":
        from fwp_rl.bench.ppo import PpoOptions, run_ppo_bench

        run_ppo_bench(PpoOptions(configs=args.configs, updates=args.updates, device=args.device, json=args.json,
                                 num_envs=args.num_envs))
    if args.command == "bench" and args.bench == "double-pole":
        from fwp_rl.bench.double_pole import DoublePoleOptions, run_double_pole_bench

        return run_double_pole_bench(DoublePoleOptions(
            configs=args.configs, tasks=args.tasks, seeds=args.seeds, max_evaluations=args.max_evaluations,
            parallel=args.parallel, popsize=args.popsize, larger_popsizes=args.larger_popsizes, devices=args.devices,
            repeats=args.repeats, only=args.only, compile=args.compile, json=args.json))
    if args.command == "bench" and args.bench == "gym":
        from fwp_rl.bench.gym_evolution import GymBenchOptions, run_gym_bench

        return run_gym_bench(GymBenchOptions(
            configs=args.configs, seeds=args.seeds, max_evaluations=args.max_evaluations, parallel=args.parallel,
            held_out_episodes=args.held_out_episodes, popsize=args.popsize, repeats=args.repeats, only=args.only,
            json=args.json))
    if args.command == "bench" and args.bench == "faults":
        from fwp_rl.bench.faults import FaultsOptions, run_faults_bench

        return run_faults_bench(FaultsOptions(learners=args.learners, kills=args.kills, seed=args.seed,
                                              max_delay=args.max_delay, only=args.only, json=args.json))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # what stops at once (a second Ctrl-C in training, any Ctrl-C elsewhere): what was saved is kept, and
        # where the interrupted code was is no news to the user
        print("fwp-rl: stopped by Ctrl-C", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)  # first: --help and argument errors need no torch
    from fwp_rl.distributed import OtherRankFailed, RankFailed
    from fwp_rl.runs import USER_ERRORS, NonFiniteError

    try:
        return _run(args)
    except USER_ERRORS as e:  # what the user gave is wrong
        print(f"fwp-rl: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:  # training diverged; the last good checkpoint is kept
        print(f"fwp-rl: error: {e}", file=sys.stderr)
        return 1
    except (RankFailed, OtherRankFailed) as e:  # one of the processes training a run together failed
        print(f"fwp-rl: error: {e}; every rank stopped, and the run keeps its last checkpoint (--resume RUN_DIR "
              "goes on from it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
