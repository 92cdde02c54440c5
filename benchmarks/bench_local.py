"""P1: the skip path, answered by the in-process tier, against a bare call.

A worker's handler is decorated with ``@guard.skip_if_closed`` and called with
a task whose workid the local tier knows is closed: the wrapper must find the
workid, validate it, read the tier and return without calling the handler.
Its cost is the decorated call minus a bare call of the same function with
the same argument. The peer is Powertools idempotency answering a repeat from
its local cache, given the same task dict.
"""

from __future__ import annotations

import itertools

from benchmarks.harness import Context, Figure, median, per_call, ratios, rounds, settings, us
from benchmarks.peers import PeerUnavailable, powertools_hit
from taskguard import TaskGuard
from taskguard.testing import FakeTaskStateService

__all__ = ["p1"]


def p1(ctx: Context) -> list[Figure]:
    mode = ctx.mode("in-process, no I/O")
    skip = Figure(
        "P1",
        "skip path: @skip_if_closed, closed in local tier, minus a bare call",
        "µs",
        ("<=", 1.0),
        mode,
    )
    peer = Figure(
        "P1",
        "skip path vs Powertools idempotency local-cache hit (faster by)",
        "x",
        (">=", 16.0),
        mode,
    )
    service = FakeTaskStateService()
    task = {"workid": "p1-closed-0001", "channel": "email"}
    with TaskGuard(settings(), transport=service) as guard:
        guard.mark_closed(task["workid"])

        @guard.skip_if_closed
        def handle(task: dict[str, str]) -> str:
            return "processed"

        def bare(task: dict[str, str]) -> str:
            return "processed"

        @guard.skip_if_closed
        def handle_str(workid: str) -> str:
            return "processed"

        if handle(task) is not None or service.requests:
            raise RuntimeError("P1: the closed task was not skipped from the local tier")
        n = ctx.scale.p1_calls
        wid = task["workid"]
        sides = {
            "guarded": lambda: per_call(handle, itertools.repeat(task, n), n),
            "bare": lambda: per_call(bare, itertools.repeat(task, n), n),
            "guarded_str": lambda: per_call(handle_str, itertools.repeat(wid, n), n),
            "bare_str": lambda: per_call(bare, itertools.repeat(wid, n), n),
        }
        try:
            pt = powertools_hit("127.0.0.1", ctx.redis_port, local_cache=True, workid=wid)
        except PeerUnavailable as exc:
            pt = None
            peer.note = f"peer unavailable: {exc}"
        else:
            m = ctx.scale.p1_peer_calls
            sides["powertools"] = lambda: per_call(pt, itertools.repeat(task, m), m)
        for side in sides.values():  # warm up: caches, branch predictors, lazy imports
            side()
        got = rounds(sides, ctx.scale.rounds)
    overhead = [g - b for g, b in zip(got["guarded"], got["bare"], strict=True)]
    skip.value = median(overhead) * 1e6
    str_overhead = [g - b for g, b in zip(got["guarded_str"], got["bare_str"], strict=True)]
    skip.note = f"handler(task_dict); {median(str_overhead) * 1e6:.2f} µs for handler(workid_str)"
    skip.raw = {
        "task": "a dict {'workid': ..., 'channel': ...} (the same input the peer gets)",
        "calls_per_round": n,
        "guarded_us": us(got["guarded"]),
        "bare_us": us(got["bare"]),
        "overhead_us": us(overhead),
        "str_workid_overhead_us": us(str_overhead),
    }
    if pt is not None:
        peer_overhead = [p - b for p, b in zip(got["powertools"], got["bare"], strict=True)]
        peer.value = median(ratios(peer_overhead, overhead))
        peer.raw = {
            "powertools_local_hit_us": us(got["powertools"]),
            "powertools_overhead_us": us(peer_overhead),
            "calls_per_round": ctx.scale.p1_peer_calls,
        }
        peer.note = f"Powertools local-cache hit: {median(peer_overhead) * 1e6:.1f} µs"
    return [skip, peer]
