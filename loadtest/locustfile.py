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

import os
import time

from kvload import HISTORY, KVUserState, body_of, result_of, short
from locust import FastHttpUser, task

from pmmc_ray.ops.loadgen import RETURNED, UNKNOWN, http_outcome


class HttpKVUser(FastHttpUser):
    """One client of the store, through the HTTP gateway."""

    # A gateway answers within its operation deadline (10 s by default) with a 504;
    # the margin keeps a slow answer from becoming a client-side timeout.
    network_timeout = 40.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.kv = KVUserState(self.environment)
        # A gateway that listens beyond loopback wants the deployment's bearer token
        # (pmmc-ray gateway token); from the environment, never on a command line.
        token = os.environ.get("PMMC_GATEWAY_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else None

    @task
    def operation(self) -> None:
        op = self.kv.next_op()
        name = op[0]
        entry = HISTORY.begin(self.kv.client, op)
        with self.client.post(
            f"/v1/{name}", json=body_of(op), name=name, catch_response=True, headers=self.headers
        ) as resp:
            code = resp.status_code or None  # 0: no HTTP answer at all
            data = None
            try:
                data = resp.json() if resp.content else None
            except ValueError:
                pass
            outcome = http_outcome(name, code, data)
            result = None
            if outcome == RETURNED and code == 200:
                result = result_of(op, data)
            self.kv.settle(entry, op, outcome, result)
            if outcome == RETURNED:
                resp.success()
            else:
                error = data.get("error") if isinstance(data, dict) else None
                what = "outcome unknown" if outcome == UNKNOWN else "changed nothing"
                resp.failure(f"{code} {error or 'no answer'} ({what}): {short(data)}")
        if self.kv.think_s:
            time.sleep(self.kv.think_s)
