"""Peak memory of one task, in a fresh interpreter: `python tests/memory_task.py < request.json`.

The request is a JSON object: `connection_string`, `warm` (a small query of the same kind),
`query` and `max_rows`. A process that already ran a big query keeps the memory it freed and
would show no growth whatever the next one does, so each measurement gets a new interpreter.
The warm-up query runs first, twice, so that imports, the engine, the connection, the
function allowlist and the converters for the kind of value are in the baseline; then the
peak (VmHWM, reset by writing 5 to /proc/self/clear_refs) is read after the measured task
and compared with the resident memory just before it. Prints one JSON object.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

# Run as a script from tests/, whose folder is then first on sys.path.
from worker_process import memory_kb


def main() -> None:
    request = json.load(sys.stdin)
    from sqladapter import run_query

    task = {"connection_string": request["connection_string"], "timeout_ms": 30_000}
    for _ in range(2):
        run_query(task, query=request["warm"], max_rows=request["max_rows"])
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = memory_kb(os.getpid(), "VmRSS")
    started = time.perf_counter()
    out = run_query(task, query=request["query"], max_rows=request["max_rows"])
    elapsed = time.perf_counter() - started
    peak = memory_kb(os.getpid(), "VmHWM")
    print(
        json.dumps(
            {
                "baseline_kb": before,
                "peak_kb": peak,
                "growth_kb": max(0, peak - before),
                "rowCount": out["rowCount"],
                "truncated": out["truncated"],
                "columns": out["columns"],
                "outputBytes": len(json.dumps(out, separators=(",", ":"))),
                "seconds": round(elapsed, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
