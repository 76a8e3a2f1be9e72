"""The command line itself: `fwp-rl --help` and argument errors answer without importing torch."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv, status", [(["--help"], 0), (["bench", "--help"], 0), (["train", "--seeds"], 2)])
def test_help_and_argument_errors_need_no_torch(argv, status):
    code = ("import sys\nfrom fwp_rl.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('torch' in sys.modules, e.code, file=sys.stderr)\n")
    child = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert child.stderr.splitlines()[-1] == f"False {status}"
