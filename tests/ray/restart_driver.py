"""A driver process with its own local Ray, for the whole-cluster restart test.

``python restart_driver.py write CONFIG_JSON OUT``: start a local Ray, deploy (a new
deployment), append and put, write what was acknowledged and the history to OUT, print
READY, wait for a line on stdin, then stop Ray *without* shutting the deployment down:
the whole cluster goes away, its data directory stays.

``python restart_driver.py reattach CONFIG_JSON OUT``: start a new local Ray, deploy the
same config (which must re-attach), read and write, write the results to OUT, then
shut the deployment down (deleting its data) and stop Ray.

Times come from ``time.monotonic()``, one clock for every process on a Linux machine,
so the two phases' histories can be checked as one.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.pop("RAY_ADDRESS", None)


def main() -> None:
    phase, cfg_json, out_path = sys.argv[1:4]
    cfg = json.loads(cfg_json)
    import ray

    from pmmc_ray.runtime import HistoryRecorder, deploy

    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        namespace=cfg["namespace"],
    )
    rec = HistoryRecorder()
    out: dict = {"phase": phase}
    try:
        dep = deploy(cfg)
        out["reattached"] = dep.reattached
        out["deployment_id"] = dep.config.deployment_id
        kv = dep.client(timeout_s=60, recorder=rec)
        tag = "a" if phase == "write" else "b"
        if phase == "reattach":
            out["log_before"] = kv.get("log")
            out["reg_before"] = kv.get("reg")
        acked = []
        for i in range(12):
            token = f"[{tag}{i}]"
            kv.append("log", token)
            acked.append(token)
            if i % 4 == 0:
                kv.put("reg", f"{tag}{i}")
        out["acked"] = acked
        out["log_after"] = kv.get("log")
        out["ops"] = [
            {
                "client": o.client,
                "call": o.call,
                "return": o.ret,
                "op": list(o.op),
                "result": o.result,
            }
            for o in rec.operations()
        ]
        with open(out_path, "w") as f:
            json.dump(out, f)
        if phase == "write":
            print("READY", flush=True)
            sys.stdin.readline()
        else:
            dep.shutdown(delete_data=True)
    finally:
        ray.shutdown()  # stops this process's whole local cluster
    time.sleep(0.1)


if __name__ == "__main__":
    main()
