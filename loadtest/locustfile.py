"""Locust users of the pmmc-ray HTTP API (``FastHttpUser``).

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 \
        --headless -u 50 -r 10 -t 60s --csv results/run/locust --html results/run/report.html \
        --kv-mix write-heavy --kv-key-dist zipf

``--host`` is a gateway (``pmmc-ray up --gateway`` starts one on every node, on
127.0.0.1:8080 by default). Options, history and distributed mode: see kvload.py and
the README's Locust section. Each user runs a closed loop: one operation at a time,
drawn from the mix; every operation is recorded for ``pmmc-ray lincheck``.
"""

from __future__ import annotations

import time

from kvload import HISTORY, KVUserState, body_of, result_of, short
from locust import FastHttpUser, task


class HttpKVUser(FastHttpUser):
    """One client of the store, through the HTTP gateway."""

    # A gateway answers within its operation deadline (10 s by default) with a 504;
    # the margin keeps a slow answer from becoming a client-side timeout.
    network_timeout = 40.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.kv = KVUserState(self.environment)

    @task
    def operation(self) -> None:
        op = self.kv.next_op()
        name = op[0]
        entry = HISTORY.begin(self.kv.client, op)
        with self.client.post(
            f"/v1/{name}", json=body_of(op), name=name, catch_response=True
        ) as resp:
            code = resp.status_code
            data = None
            try:
                data = resp.json() if resp.content else None
            except ValueError:
                pass
            error = data.get("error") if isinstance(data, dict) else None
            if code == 200 or (code == 404 and name == "get" and error == "not_found"):
                result = None if code == 404 else result_of(op, data)
                HISTORY.returned(entry, result)
                self.kv.gen.observe(op, result)
                resp.success()
            elif code in (400, 404, 405, 409, 413, 503):
                # Refused before anything changed (malformed, unknown op, rejected by
                # the state machine, or not sent because no replica answers).
                HISTORY.discard(entry)
                resp.failure(f"{code} {error}: {short(data)}")
            else:
                # 504 outcome_unknown, another 5xx, or no HTTP answer at all.
                HISTORY.unknown(entry)
                self.kv.lost_track()
                resp.failure(f"{code} {error or 'no answer'}: outcome unknown")
        if self.kv.think_s:
            time.sleep(self.kv.think_s)
