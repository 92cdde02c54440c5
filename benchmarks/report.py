"""What a run leaves behind: the printed table, ``results/latest.json``, and the
README's Performance table (only the lines between the perf markers).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from benchmarks.harness import SIGNS, Figure, Pinning, Scale, format_value

__all__ = [
    "BEGIN",
    "END",
    "collect_metadata",
    "print_table",
    "readme_block",
    "update_readme",
    "write_json",
]

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            # --no-optional-locks: reading must not even refresh git's index.
            ["git", "--no-optional-locks", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def collect_metadata(pin: Pinning, scale: Scale, redis_server: str) -> dict[str, Any]:
    """Where and on what the numbers were taken."""
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit or None,
        "uncommitted_changes": dirty,
        "scale": scale.name,
        "pinning": pin.mode,
        "pinned_cpu": pin.cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "taskguard": _version("taskguard"),
            "redis-py": _version("redis"),
            "hiredis": _version("hiredis"),
            "urllib3": _version("urllib3"),
            "aiohttp": _version("aiohttp"),
            "aws-lambda-powertools": _version("aws-lambda-powertools"),
            "redis-server": redis_server,
        },
        "method": (
            "ratios against raw building blocks measured in the same run; the sides of a "
            "ratio timed in alternating rounds; medians of the per-round figures; GC off "
            "inside timed loops"
        ),
    }


def print_table(figures: list[Figure], out: TextIO = sys.stdout) -> None:
    rows = [("#", "figure", "value", "goal", "result", "taken")]
    rows += [(f.key, f.label, f.value_text(), f.goal_text(), f.status, f.mode) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for n, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[5]]), file=out)
        if n == 0:
            print("  ".join("-" * w for w in [*widths, 5]), file=out)
    notes = [f for f in figures if f.note]
    if notes:
        print(file=out)
    for f in notes:
        print(f"{f.key} {f.label}: {f.note}", file=out)


def write_json(path: Path, meta: dict[str, Any], figures: list[Figure]) -> None:
    """Write atomically: a reader never sees half a file."""
    document = {**meta, "figures": [f.as_json() for f in figures]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _goal_text(goal: dict[str, Any] | None, unit: str) -> str:
    if goal is None:
        return "reported"
    op = SIGNS[goal["op"]]
    return f"{op} {format_value(goal['value'], unit)}"


def readme_block(document: dict[str, Any]) -> str:
    """The markdown between the perf markers, built from a results document."""
    v = document["versions"]
    commit = (document.get("commit") or "unknown")[:12]
    if document.get("uncommitted_changes"):
        commit += ", with uncommitted changes"
    lines = [
        f"Measured by `python -m benchmarks` on {document['date'][:10]} at commit `{commit}`: "
        f"Python {v['python']}, redis-py {v['redis-py']} (hiredis {v['hiredis']}), "
        f"urllib3 {v['urllib3']}, aiohttp {v['aiohttp']}, Redis {v['redis-server']}, "
        f"Powertools {v.get('aws-lambda-powertools') or 'not installed'}; "
        f"{document['cpus']} shared cores.",
        f"**Pinning:** {document['pinning']}.",
        "Each ratio is against a raw building block timed in the same run, the two sides in "
        "alternating rounds, the median of the per-round ratios; every raw number is in "
        "`benchmarks/results/latest.json`.",
        "",
        "| # | figure | value | goal | result | taken | details |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in document["figures"]:
        unit = f["unit"]
        value = "not produced" if f["value"] is None else format_value(f["value"], unit)
        cells = [f["key"], f["label"], value, _goal_text(f["goal"], unit), f["status"]]
        cells += [f["mode"], f["note"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def update_readme(readme: Path, results: Path) -> bool:
    """Replace what lies between the perf markers with the table from ``results``.

    The rest of the README belongs to others: it is read right before the
    write and kept byte for byte. Returns False (and writes nothing) when
    the markers are missing or out of order.
    """
    document = json.loads(results.read_text())
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return False
    head = text[: start + len(BEGIN)]
    tail = text[end:]
    updated = f"{head}\n{readme_block(document)}\n{tail}"
    if updated != text:
        tmp = readme.with_name(readme.name + ".perf.tmp")
        tmp.write_text(updated)
        os.replace(tmp, readme)
    return True
