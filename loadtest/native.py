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

from kvload import HISTORY, KVUserState, short, sidecar
from locust import User, task


class NativeKVUser(User):
    """One paper client (one AsyncClient in the sidecar) per Locust user."""

    def on_start(self) -> None:
        self.kv = KVUserState(self.environment)
        self.conn = sidecar(self.environment).connect()

    def on_stop(self) -> None:
        self.conn.close()

    @task
    def operation(self) -> None:
        op = self.kv.next_op()
        name = op[0]
        entry = HISTORY.begin(self.kv.client, op)
        start = time.perf_counter()
        exc: Exception | None = None
        try:
            answer = self.conn.execute(op)
        except (OSError, ValueError) as e:  # no answer: the outcome is unknown
            HISTORY.unknown(entry)
            self.kv.lost_track()
            self.conn.close()
            self.conn = sidecar(self.environment).connect()
            answer, exc = None, RuntimeError(f"no answer from the sidecar: {e}")
        if answer is not None:
            if answer["ok"]:
                HISTORY.returned(entry, answer["result"])
                self.kv.gen.observe(op, answer["result"])
            elif answer["kind"] == "unknown":
                HISTORY.unknown(entry)
                self.kv.lost_track()
                exc = RuntimeError(f"outcome unknown: {short(answer['message'])}")
            else:  # invalid or rejected: nothing changed
                HISTORY.discard(entry)
                exc = RuntimeError(f"{answer['kind']}: {short(answer['message'])}")
        self.environment.events.request.fire(
            request_type="native",
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=0,
            exception=exc,
            context={},
        )
        if self.kv.think_s:
            time.sleep(self.kv.think_s)
