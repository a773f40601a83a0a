"""Peak memory of one bounded query, in a fresh process: `python -m benchmarks.memory_probe URL`.

A process that already ran bigger queries keeps their freed memory and would show no growth
whatever happened, so each measurement gets a new interpreter: it opens the connection with a
five-row query, then records how far resident memory rises above that while `SELECT *` on the
million-row table runs with the default max_rows. The control is the tutorial's approach on
the same table (fetch all rows), which shows the measurement sees a full fetch when there is
one. Prints one JSON object.
"""

from __future__ import annotations

import json
import sys

from sqladapter import run_query

from .measure import peak_rss_growth_mb


def main(connection_string: str, control: str) -> None:
    run_query(connection_string=connection_string, query="SELECT * FROM people")
    bounded = peak_rss_growth_mb(lambda: run_query(connection_string=connection_string, query="SELECT * FROM people_1m"))
    result = {"bounded_mb": bounded}
    if control:
        from .run import BACKENDS

        backend = BACKENDS[control]

        def fetch_all() -> int:
            conn = backend.connect()
            cur = conn.cursor()
            cur.execute("SELECT * FROM people_1m")
            rows = cur.fetchall()
            conn.close()
            return len(rows)

        result["fetch_all_mb"] = peak_rss_growth_mb(fetch_all)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
