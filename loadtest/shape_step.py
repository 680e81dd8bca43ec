"""Step load: add users in equal steps up to ``--users``, then stop at ``--run-time``.

    locust -f loadtest/locustfile.py,loadtest/shape_step.py --headless \
        --host http://127.0.0.1:8080 -u 50 -r 50 -t 100s --shape-steps 5

With ``-u 50 -t 100s --shape-steps 5``: 10 users for 20 s, 20 for 20 s, ... 50 for the
last 20 s. Each step is spawned at ``--spawn-rate`` users per second.
"""

from __future__ import annotations

import math

from locust import LoadTestShape, events


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--shape-steps", type=int, default=5, help="number of load steps")


class StepLoadShape(LoadTestShape):
    use_common_options = True  # reads --users, --spawn-rate and --run-time

    def tick(self):
        opts = self.runner.environment.parsed_options
        total = float(opts.run_time or 60)
        t = self.get_run_time()
        if t >= total:
            return None
        steps = max(1, opts.shape_steps)
        step = min(steps, int(t / (total / steps)) + 1)
        users = max(1, math.ceil(opts.num_users * step / steps))
        return users, float(opts.spawn_rate)
