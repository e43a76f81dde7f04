"""Writing files so that a crash never leaves a half-written one: temp file in the same directory,
fsync, rename. Used for every file whose loss or corruption would lose work (journals, per-round
trainer state with its secret salt, keystores, deployment files, the embedded store)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically; `mode` sets permissions before the file appears.

    Raises OSError (callers turn it into their package's error with a hint).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
