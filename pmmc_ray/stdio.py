"""Standard output for commands whose stdout must hold only their result.

Ray's threads and worker processes write to file descriptor 1 as well as to
``sys.stdout``; a command that prints a token or a JSON summary for a pipe points both
at standard error while Ray runs, and writes its result through the saved descriptor.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[int]:
    """Inside, ``sys.stdout`` and descriptor 1 point at standard error; yields a
    descriptor of the real standard output (valid inside only)."""
    sys.stdout.flush()
    saved_fd = os.dup(1)
    saved_obj = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield saved_fd
    finally:
        sys.stdout.flush()
        sys.stdout = saved_obj
        os.dup2(saved_fd, 1)
        os.close(saved_fd)


def write_to(fd: int, text: str) -> None:
    """Write ``text`` to descriptor ``fd`` (left open)."""
    with os.fdopen(os.dup(fd), "w") as out:
        out.write(text)
