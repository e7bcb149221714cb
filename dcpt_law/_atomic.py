"""Writing a result file whole or not at all: a temporary file beside it, renamed over it.

Every file the package and the runner keep (fits, reports, figures, loss tables, base models, checkpoints, token
memmaps, corpora) goes through :func:`atomic_path`, so a process killed mid-write never leaves half a file under
the real name, and two writers of the same file never share a temporary one. (The tokenizer is a directory:
small_runs/tokenizer.py renames it into place itself.)
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path, mode: int = 0o644) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for the block to write; when the block ends without an error the
    file is flushed to disk and renamed over ``path`` (atomic on POSIX and Windows), when it raises, it is removed.
    ``mode``: the file's permissions (a result is for everyone to read; mkstemp alone gives 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:  # the writer may have closed its own handle: sync through a new one
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` whole or not at all (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
