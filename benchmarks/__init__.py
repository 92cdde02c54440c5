"""taskguard's benchmarks: ``python -m benchmarks`` (``--quick`` for CI).

One run starts its own ``redis-server`` and reference CheckTaskState service on
127.0.0.1, measures every figure of the performance issue as a ratio against
raw building blocks measured in the same run, prints the table, writes
``benchmarks/results/latest.json`` and refreshes the README's Performance table.

Modules: ``runner`` (command line, orchestration), ``harness`` (rounds,
medians, pinning, figures), ``servers`` (the two servers), ``bench_local``
(P1), ``bench_redis`` (P2, P3, P6 Redis, P7), ``bench_http`` (P4, P5),
``bench_process`` and ``memprobe`` (P6 local, P8), ``peers`` (Powertools),
``report`` (table, JSON, README).
"""
