"""What the benchmark scripts share: the machine's description, statistics, JSON output.

Importing this module also puts the repository root first on ``sys.path``, so
the scripts measure the working tree's ``wsgisession`` even when it is not
installed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Distributions whose versions go into every result file.
PACKAGES = (
    "wsgisession",
    "beaker",
    "webob",
    "redis",
    "hiredis",
    "sqlalchemy",
    "psycopg",
    "psycopg-pool",
    "pymysql",
    "cryptography",
    "gunicorn",
    "flask",
    "flask-session",
    "flask-sqlalchemy",
    "cachelib",
    "msgspec",
    "django",
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision() -> str | None:
    """The checked-out commit, with ``+dirty`` when the work tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """Where and when a benchmark ran: CPU, cores, Python, package versions, date."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_revision(),
        # Other work on the machine skews timings: the load when the run started.
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def new_document(benchmark: str, config: dict[str, Any], results: Any = None) -> dict[str, Any]:
    """The JSON document of a run (machine, config, results: a list unless given), its machine announced on stdout."""
    machine = machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}")
    return {"benchmark": benchmark, "machine": machine, "config": config, "results": [] if results is None else results}


def skip(document: dict[str, Any], store: str, problem: str) -> None:
    """Record (and say on stderr) that *store* was not measured, and why."""
    print(f"{store}: skipped ({problem})", file=sys.stderr)
    document["results"].append({"store": store, "skipped": problem})


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that temp dirs, tables and servers are cleaned up by finally blocks."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The *fraction* quantile (0..1) of *values*, nearest-rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def write_json(path: str | os.PathLike[str], document: dict[str, Any]) -> Path:
    """Write *document* as indented JSON, creating the directory; return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table, right-aligned numbers, for the console."""
    text_rows = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in text_rows:
        lines.append(
            "  ".join(cell.rjust(w) if _numeric(cell) else cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        )
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(cell: str) -> bool:
    stripped = cell.rstrip("x").replace(",", "").replace(".", "").replace("-", "").replace("+", "")
    return stripped.isdigit()
