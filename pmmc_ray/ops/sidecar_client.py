"""The gevent side of :mod:`pmmc_ray.ops.sidecar`: start it, connect, send operations.

Only the standard library (``socket``, ``subprocess``), which gevent patches into
cooperative versions, so a Locust user blocked on the sidecar lets the others run.
Never imports Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["NotSent", "SidecarConnection", "SidecarProcess"]


class NotSent(ConnectionError):
    """The request never reached the sidecar whole, so it was not performed (the sidecar
    performs only complete lines). The connection must not be used again."""


class SidecarProcess:
    """A sidecar child process serving deployment ``namespace`` on a Unix socket in a
    private temporary folder, which goes when the process does."""

    def __init__(
        self,
        namespace: str,
        *,
        address: str = "auto",
        op_timeout_s: float = 10.0,
        log_path: str | Path | None = None,
    ) -> None:
        self.namespace, self.address, self.op_timeout_s = namespace, address, op_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self._dir: str | None = None
        self.socket_path: str | None = None
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the process and wait until its socket accepts connections; on any
        failure nothing is left behind (no process, no folder)."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._dir = tempfile.mkdtemp(prefix="pmmc-sidecar-")
        self.socket_path = os.path.join(self._dir, "s")
        cmd = [
            sys.executable,
            "-m",
            "pmmc_ray.ops.sidecar",
            "--address",
            self.address,
            "--namespace",
            self.namespace,
            "--socket",
            self.socket_path,
            "--op-timeout",
            str(self.op_timeout_s),
            "--remove-dir",
        ]
        try:
            with open(self.log_path or os.devnull, "ab") as log:  # the child keeps its copy
                self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=log)
            self._wait_serving(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_serving(self, timeout_s: float) -> None:
        assert self.proc is not None and self.socket_path is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the sidecar exited with status {self.proc.returncode} before serving"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                SidecarConnection(self.socket_path, 5.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the sidecar did not serve within {timeout_s:g}s") from None
                time.sleep(0.2)

    def connect(self) -> SidecarConnection:
        assert self.socket_path is not None, "start() first"
        # A blocked answer waits at most the operation deadline plus a margin.
        return SidecarConnection(self.socket_path, self.op_timeout_s + 30.0)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close its standard input (it exits), make sure it is gone, remove its folder."""
        p, self.proc = self.proc, None
        if p is not None:
            try:
                if p.stdin is not None:
                    p.stdin.close()
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        d, self._dir = self._dir, None
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)


class SidecarConnection:
    """One paper client inside the sidecar; one request at a time."""

    def __init__(self, path: str, timeout_s: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self._file = self.sock.makefile("rb")

    def execute(self, op: tuple | list) -> dict[str, Any]:
        """Send one operation; its answer (see :mod:`pmmc_ray.ops.sidecar`).

        Raises :class:`NotSent` if the request could not be sent whole (it was not
        performed), OSError (or a timeout) if the sidecar does not answer (the outcome is
        then unknown); either way this connection must not be used again.
        """
        try:
            # The newline comes last: a request cut off anywhere is not a line, and the
            # sidecar never performs it.
            self.sock.sendall(json.dumps({"op": list(op)}).encode() + b"\n")
        except OSError as e:
            raise NotSent(f"the request did not reach the sidecar: {e}") from e
        line = self._file.readline()
        if not line:
            raise ConnectionError("the sidecar closed the connection")
        return json.loads(line)

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self.sock.close()
