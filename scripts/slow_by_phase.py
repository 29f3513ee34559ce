#!/usr/bin/env python3
"""Where in the second a load run's slow requests fell.

Reads the per-request record that `oha --db-url FILE` writes (SQLite) and
prints, for requests slower than a threshold (1 ms unless given): their
share of all requests, and the share of them that started in the busiest
200 ms of the second (the second folded onto itself in 50 ms bins, the
busiest four adjacent bins, wrapping). Spread evenly, slow requests put
about 20 % there; keyward's request-log flush, once a second, showed up as
60-90 % (docs/PERFORMANCE.md, fifteenth session). Also prints the share of
slow requests per bin, which shows the window's shape.

    scripts/slow_by_phase.py run.db [threshold_ms]
"""
import sqlite3
import sys

BINS = 20  # of 50 ms
WINDOW = 4  # bins: 200 ms


def main():
    path = sys.argv[1]
    threshold = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.001
    rows = sqlite3.connect(path).execute(
        # With --latency-correction, a request counts from when it should
        # have started.
        "SELECT coalesce(start_latency_correction, start), end FROM oha"
    ).fetchall()
    if not rows:
        sys.exit(f"{path}: no requests recorded")
    first = min(start for start, _ in rows)
    total = [0] * BINS
    slow = [0] * BINS
    for start, end in rows:
        at = int(((start - first) % 1.0) * BINS)
        total[at] += 1
        slow[at] += end - start > threshold
    slow_count = sum(slow)
    busiest = max(
        sum(slow[(at + i) % BINS] for i in range(WINDOW)) for at in range(BINS)
    )
    in_window = 100 * busiest / slow_count if slow_count else 0.0
    per_bin = " ".join(f"{100 * s / max(t, 1):.0f}" for s, t in zip(slow, total))
    print(
        f"{100 * slow_count / len(rows):.1f} % of {len(rows)} requests over "
        f"{threshold * 1000:g} ms, {in_window:.0f} % of them in the busiest "
        f"200 ms of the second; % slow per 50 ms: {per_bin}"
    )


if __name__ == "__main__":
    main()
