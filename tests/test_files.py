"""Files replaced whole or not at all (fwp_rl.files): what every checkpoint, config, report and video is written
with."""

import os
import stat

import pytest

from fwp_rl.files import TEMPORARY, atomic_write_text, remove_temporaries, replacing, temporary_target


def test_replacing_keeps_the_suffix_and_replaces_the_file_only_at_the_end(tmp_path):
    path = tmp_path / "sub" / "table.csv"
    with replacing(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".csv" and tmp.name.startswith(".table.csv.")
        tmp.write_text("new")
        assert not path.exists()
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["table.csv"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "seed: 1\n")
    with pytest.raises(KeyboardInterrupt):
        with replacing(path) as tmp:
            tmp.write_text("se")
            raise KeyboardInterrupt
    assert path.read_text() == "seed: 1\n" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_written_files_get_the_mode_of_a_plain_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o666 & ~umask


def test_the_temporary_names_written_are_the_ones_recognized_and_removed(tmp_path):
    """``TEMPORARY`` matches the names ``replacing`` gives (and names the file each was to replace);
    ``remove_temporaries`` removes those a kill left behind, of the targets asked for, and nothing else."""
    names = []
    for target in ("latest.pt", "config.yaml", "Makefile", "latest.pt.eval.json"):
        with pytest.raises(KeyboardInterrupt):
            with replacing(tmp_path / target) as tmp:
                names.append(tmp.name)
                raise KeyboardInterrupt
        assert temporary_target(names[-1]) == target and TEMPORARY.fullmatch(names[-1])
    others = [".latest.pt.0123456789ab.tmp.yaml", ".latest.pt.xyz.tmp.pt", "latest.pt.0123456789ab.tmp.pt",
              ".latest.pt.0123456789ab.tmp.pt~", "step_3.pt", ".lock"]
    assert [temporary_target(n) for n in others] == [None] * len(others)
    leftovers = [".latest.pt.0123456789ab.tmp.pt", ".previous.pt.ba9876543210.tmp.pt",
                 ".latest.pt.eval.json.0123456789ab.tmp.json"]
    for name in [*leftovers, *others]:
        (tmp_path / name).write_text("x")
    removed = remove_temporaries(tmp_path, lambda target: target.endswith(".pt"))
    assert sorted(p.name for p in removed) == sorted(leftovers[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([leftovers[2], *others])
    assert remove_temporaries(tmp_path / "not_there") == []
