"""The ``fwp-rl`` command line."""

from __future__ import annotations

import argparse
import sys

from fwp_rl.cores import CORES


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return values


def _core_list(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n not in CORES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown core {', '.join(unknown)}; allowed: {', '.join(CORES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fwp-rl", description="Reinforcement learning with fast weight programmers.")
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("bench", help="run a benchmark whose figures the README quotes")
    benches = bench.add_subparsers(dest="bench", required=True)
    cores = benches.add_parser("cores", help="forward+backward time of every memory core vs nn.LSTM")
    cores.add_argument("--seq-lens", type=_int_list, default=[32, 128, 512], help="sequence lengths T")
    cores.add_argument("--batch", type=int, default=64)
    cores.add_argument("--width", type=int, default=256, help="model width (input and hidden size)")
    cores.add_argument("--heads", type=int, default=4)
    cores.add_argument("--repeats", type=int, default=5, help="timed runs per entry; the median is shown")
    cores.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    cores.add_argument("--cores", type=_core_list, default=None, help="comma-separated core names (default: all)")
    cores.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench" and args.bench == "cores":
        import torch

        from fwp_rl.bench import run_cores_bench

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            print(f"fwp-rl: error: --device {args.device} but CUDA is not available here; use --device cpu",
                  file=sys.stderr)
            return 2
        run_cores_bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
