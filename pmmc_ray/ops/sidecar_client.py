"""The gevent side of :mod:`pmmc_ray.ops.sidecar`: start it, connect, send operations.

Only the standard library (``socket``, ``subprocess``), which gevent patches into
cooperative versions, so a Locust user blocked on the sidecar lets the others run.
Never imports Ray.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["SidecarConnection", "SidecarProcess"]


class SidecarProcess:
    """A sidecar child process serving deployment ``namespace`` on a Unix socket."""

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
        self._dir = tempfile.mkdtemp(prefix="pmmc-sidecar-")
        self.socket_path = os.path.join(self._dir, "s")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the process and wait until its socket accepts connections."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path or os.devnull, "ab")  # noqa: SIM115 (the child keeps it)
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
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=log)
        log.close()
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
                    self.stop()
                    raise TimeoutError(f"the sidecar did not serve within {timeout_s:g}s") from None
                time.sleep(0.2)

    def connect(self) -> SidecarConnection:
        # A blocked answer waits at most the operation deadline plus a margin.
        return SidecarConnection(self.socket_path, self.op_timeout_s + 30.0)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close its standard input (it exits), then make sure it is gone."""
        p, self.proc = self.proc, None
        if p is None:
            return
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
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass


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

        Raises OSError (or a timeout) if the sidecar does not answer: the outcome is
        then unknown, and this connection must not be used again.
        """
        self.sock.sendall(json.dumps({"op": list(op)}).encode() + b"\n")
        line = self._file.readline()
        if not line:
            raise ConnectionError("the sidecar closed the connection")
        return json.loads(line)

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self.sock.close()
