"""The layers stay apart: the environments need neither the memory cores nor the policy (their checks live in
fwp_rl.checks, the population machinery their success tests drive in fwp_rl.population)."""

import subprocess
import sys


def test_the_environments_import_no_model_layer():
    code = "import sys, fwp_rl.envs; print(' '.join(sorted(m for m in sys.modules if m.startswith('fwp_rl'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "fwp_rl.envs.double_pole.success" in loaded  # the import did reach the success test
    assert not [m for m in loaded if m.startswith(("fwp_rl.cores", "fwp_rl.policy", "fwp_rl.torsos", "fwp_rl.agents"))]
