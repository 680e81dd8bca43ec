"""Spike: a base load, a sudden spike to ``--users``, then the base load again.

    locust -f loadtest/locustfile.py,loadtest/shape_spike.py --headless \
        --host http://127.0.0.1:8080 -u 60 -t 60s --spike-base 6

Base ``--spike-base`` users (default a fifth of ``--users``) for the whole
``--run-time``, except from ``--spike-at`` (fraction of the run, default 0.4) for
``--spike-length`` (fraction, default 0.2), when it jumps to ``--users``, spawned
all within a second.
"""

from __future__ import annotations

from locust import LoadTestShape, events


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--spike-base", type=int, default=0, help="base users (0: users/5)")
    parser.add_argument("--spike-at", type=float, default=0.4, help="start, fraction of run")
    parser.add_argument("--spike-length", type=float, default=0.2, help="fraction of run")


class SpikeLoadShape(LoadTestShape):
    use_common_options = True  # reads --users and --run-time

    def tick(self):
        opts = self.runner.environment.parsed_options
        total = float(opts.run_time or 60)
        t = self.get_run_time()
        if t >= total:
            return None
        peak = max(1, opts.num_users)
        base = opts.spike_base or max(1, peak // 5)
        start = opts.spike_at * total
        if start <= t < start + opts.spike_length * total:
            return peak, float(peak)  # the whole spike within a second
        return base, float(peak)  # and back down as fast
