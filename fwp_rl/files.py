"""Files written so that an interruption (Ctrl-C, a crash, a full disk) leaves the old file or the new one whole,
never a part of either: each is written to a temporary file beside it and then renamed over it.

The temporary file of ``<dir>/<name>`` is ``<dir>/.<name>.<12 hex digits>.tmp<suffix of name>`` (``TEMPORARY``
matches these names and no others). A process killed during a write (kill -9, a power cut) leaves it behind;
``remove_temporaries`` removes such leftovers where no other process writes (a run does so as it starts).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


TEMPORARY = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{12}\.tmp(?P<suffix>(\.[^.]*)?)")
"""The names ``_new_file`` gives temporary files (fullmatch): ``target`` is the name of the file it replaces."""


def _temporary_name(path: Path) -> str:
    """A new name for a temporary file that replaces ``path`` (matched by ``TEMPORARY``): hidden, beside it, keeping
    its suffix."""
    return f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}"


def temporary_target(name: str) -> str | None:
    """The name of the file that a temporary file called ``name`` was to replace; None for any other name."""
    match = TEMPORARY.fullmatch(name)
    if match is None or match["suffix"] != Path(match["target"]).suffix:
        return None
    return match["target"]


def remove_temporaries(folder: str | Path, targets: Callable[[str], bool] = lambda name: True) -> list[Path]:
    """Remove the temporary files in ``folder`` (not below it) left by writes that never finished, of the files
    whose names ``targets`` accepts -> the files removed. Only where no other process writes those files: a
    temporary file being written there would be lost."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            target = temporary_target(entry.name)
            if target is not None and targets(target) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _new_file(path: Path) -> str:
    """Create an empty temporary file for ``path`` beside it with the mode a plain open() gives (0o666 less the
    umask). Not tempfile.mkstemp: its files are private (0o600), and renamed over ``path`` they would make every
    file we write readable by its owner only."""
    while True:
        name = os.path.join(path.parent, _temporary_name(path))
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            continue


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; it replaces ``path`` when the block ends, and is removed if the block
    raises. It keeps ``path``'s suffix, for writers that choose the format by it (ffmpeg, matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file(path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file) on a temporary file beside ``path``, on disk before it is renamed to ``path``."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_copy(source: str | Path, path: str | Path) -> None:
    """Make ``path`` a copy of ``source``, atomically: a hard link to the same data where the file system has them
    (``source`` replaced by a rename later leaves it as it was), else a copy of the bytes."""
    with replacing(path) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
