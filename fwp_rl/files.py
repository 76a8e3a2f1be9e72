"""Files written so that an interruption (Ctrl-C, a crash, a full disk) leaves the old file or the new one whole,
never a part of either: each is written to a temporary file beside it and then renamed over it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def _new_file(folder: Path, prefix: str, suffix: str) -> str:
    """Create an empty file of a new name in ``folder`` with the mode a plain open() gives (0o666 less the umask).
    Not tempfile.mkstemp: its files are private (0o600), and renamed over ``path`` they would make every file
    we write readable by its owner only."""
    while True:
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
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
    tmp = _new_file(path.parent, f".{path.name}.", f".tmp{path.suffix}")
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
