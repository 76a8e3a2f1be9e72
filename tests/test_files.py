"""Files replaced whole or not at all (fwp_rl.files): what every checkpoint, config, report and video is written
with."""

import os
import stat

import pytest

from fwp_rl.files import atomic_write_text, replacing


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
