"""The mutation list of tests/mutations.py stays in step with the code: every mutation still applies, names
the tests that exist, and a file is restored whatever happens while it is mutated."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("mutations", ROOT / "tests" / "mutations.py")
mutations = sys.modules["mutations"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(mutations)


def test_the_list_is_long_enough_and_names_are_unique():
    names = [m.name for m in mutations.MUTATIONS]
    assert len(names) >= 25
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("mutation", mutations.MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_applies_once_and_names_existing_tests(mutation):
    text = mutations.check(mutation)
    assert mutation.new != mutation.old
    assert text.replace(mutation.old, mutation.new) != text
    for test in mutation.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test


def test_a_mutated_file_is_restored_when_the_block_raises(tmp_path):
    path = tmp_path / "code.py"
    path.write_text("x = 1\n")
    with pytest.raises(RuntimeError):
        with mutations._Restore(path, "x = 1\n"):
            path.write_text("x = 2\n")
            raise RuntimeError
    assert path.read_text() == "x = 1\n"


def test_a_mutation_that_no_longer_applies_is_a_clear_error():
    stale = mutations.Mutation("stale", "agents/ppo.py", "this line is not in the file", "x", ("tests/test_ppo.py",))
    with pytest.raises(SystemExit, match="does not apply: its line occurs 0 times"):
        mutations.check(stale)
