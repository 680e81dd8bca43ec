"""Locust users of the native Python client, through a sidecar process.

    locust -f loadtest/native.py --headless -u 16 -r 8 -t 30s \
        --kv-namespace pmmc --kv-ray-address auto --csv results/native/locust

Locust patches the standard library with gevent, which breaks Ray in the same
process. So the first native user of each Locust process starts a sidecar
(``python -m pmmc_ray.ops.sidecar``): a plain child process that joins the Ray
cluster and runs one :class:`pmmc_ray.runtime.AsyncClient` per user, reached over a
Unix socket. The time Locust reports includes that local hop (tens of microseconds).
Load both kinds of users with ``-f loadtest/locustfile.py,loadtest/native.py``.
"""

from __future__ import annotations

import time
from typing import Any

from kvload import HISTORY, KVUserState, short, sidecar
from locust import User, task

from pmmc_ray.ops.loadgen import DISCARDED, RETURNED, UNKNOWN, sidecar_outcome
from pmmc_ray.ops.sidecar_client import NotSent, SidecarConnection


class NativeKVUser(User):
    """One paper client (one AsyncClient in the sidecar) per Locust user."""

    def on_start(self) -> None:
        self.kv = KVUserState(self.environment)
        self.conn: SidecarConnection | None = sidecar(self.environment).connect()

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()

    @task
    def operation(self) -> None:
        op = self.kv.next_op()
        entry = HISTORY.begin(self.kv.client, op)
        start = time.perf_counter()
        outcome, result, why = self._send(op)
        self.kv.settle(entry, op, outcome, result)
        self.environment.events.request.fire(
            request_type="native",
            name=op[0],
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=0,
            exception=None if outcome == RETURNED else RuntimeError(why),
            context={},
        )
        if self.kv.think_s:
            time.sleep(self.kv.think_s)

    def _send(self, op: tuple) -> tuple[str, Any, str]:
        """(outcome, result, what went wrong) of one operation through the sidecar."""
        if self.conn is None:
            try:
                self.conn = sidecar(self.environment).connect()
            except (OSError, RuntimeError) as e:
                time.sleep(1.0)  # the sidecar is gone: do not spin
                return DISCARDED, None, f"no connection to the sidecar: {e}"
        try:
            answer = self.conn.execute(op)
        except (OSError, ValueError) as e:
            self.conn.close()  # never used again: the next operation reconnects
            self.conn = None
            if isinstance(e, NotSent):
                return DISCARDED, None, str(e)
            return UNKNOWN, None, f"no answer from the sidecar: {e}"
        outcome = sidecar_outcome(answer)
        if outcome == RETURNED:
            return outcome, answer["result"], ""
        what = "outcome unknown" if outcome == UNKNOWN else "changed nothing"
        return outcome, None, f"{answer.get('kind')} ({what}): {short(answer.get('message'))}"
