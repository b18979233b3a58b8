"""Plots of the latest benchmark results, for the documentation.

Reads every ``benchmarks/results/*.json`` and draws, with matplotlib's Agg
backend (no display needed):

* ``compare-<store>.png``: per store, the time per request of wsgisession and
  of each peer on each workload (``compare.py``), with the store's floor;
* ``scaling.png``: per store, the time per request with few and with many
  live sessions (``scaling.py``).

The documentation build runs it (``docs/_ext/wsgisession_docs.py``) into
``docs/_generated/``; by hand::

    python benchmarks/plots.py [--results benchmarks/results] [--out docs/_generated]

Only the figures in the JSON are drawn: nothing is measured here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: Peers in the order the bars are drawn; any other peer in the results follows them.
ORDER = [
    "wsgisession",
    "wsgisession-full",
    "wsgisession-nofsync",
    "wsgisession-flask",
    "beaker",
    "flask-session",
    "django",
    "floor",
]
#: The frameworks with no session at all: baselines, not peers, and left out of the plots.
BASELINES = {"bare", "flask-bare", "django-bare"}


def load_results(results: Path) -> dict[str, dict[str, Any]]:
    """The newest result of each benchmark in *results*, by its ``benchmark`` field and date.

    ``scaling`` runs may each cover some stores: they are merged per store,
    the newest run of each store winning.
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "benchmark" in data and "results" in data:
            runs.setdefault(data["benchmark"], []).append(data)
    latest: dict[str, dict[str, Any]] = {}
    for name, found in runs.items():
        found.sort(key=lambda run: run.get("machine", {}).get("date", ""))
        newest = dict(found[-1])
        if name == "scaling":
            by_store: dict[str, Any] = {}
            for run in found:
                by_store.update({entry["store"]: entry for entry in run["results"]})
            newest["results"] = list(by_store.values())
        latest[name] = newest
    return latest


def peer_order(names: Iterable[str]) -> list[str]:
    """*names* without the baselines, in :data:`ORDER` and then alphabetically."""
    wanted = [name for name in names if name not in BASELINES]
    return sorted(wanted, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name))


def compare_series(store: dict[str, Any]) -> tuple[list[str], dict[str, list[float | None]]]:
    """One store's ``compare.py`` results as (workloads, peer -> µs per request per workload)."""
    workloads = [entry["workload"] for entry in store["workloads"]]
    peers = peer_order(dict.fromkeys(name for entry in store["workloads"] for name in entry["peers"]))
    series: dict[str, list[float | None]] = {}
    for peer in peers:
        series[peer] = [entry["peers"].get(peer, {}).get("us_per_request") for entry in store["workloads"]]
    return workloads, series


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, figure: Any, path: Path) -> Path:
    figure.tight_layout()
    # No software or date in the metadata: the same results draw the same file.
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)
    return path


def plot_compare(run: dict[str, Any], out: Path) -> list[Path]:
    """A grouped bar chart per store of ``compare.py``'s results; the files written."""
    plt = _pyplot()
    written = []
    for store in run["results"]:
        workloads, series = compare_series(store)
        if not series:
            continue
        figure, axes = plt.subplots(figsize=(8, 4.2))
        width = 0.8 / len(series)
        for i, (peer, values) in enumerate(series.items()):
            xs = [w + (i - (len(series) - 1) / 2) * width for w in range(len(workloads))]
            shown = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
            hatch = "//" if peer == "floor" else None
            bars = axes.bar([x for x, _ in shown], [v for _, v in shown], width, label=peer, hatch=hatch)
            if peer == "wsgisession":
                axes.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        axes.set_yscale("log")
        axes.set_xticks(range(len(workloads)), workloads)
        axes.set_ylabel("µs per request (log scale; lower is better)")
        axes.set_title(f"{store['store']}: wsgisession and its peers (compare.py, median of rounds)")
        axes.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes.grid(axis="y", which="major", alpha=0.3)
        written.append(_save(plt, figure, out / f"compare-{store['store']}.png"))
    return written


def plot_scaling(run: dict[str, Any], out: Path) -> list[Path]:
    """Time per request with few and with many live sessions, per store; the file written."""
    stores = [entry for entry in run["results"] if "per_request" in entry]
    if not stores:
        return []
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 3.6))
    names = [entry["store"] for entry in stores]
    small = [entry["per_request"]["small_us"] for entry in stores]
    large = [entry["per_request"]["large_us"] for entry in stores]
    xs = range(len(names))
    axes.bar([x - 0.2 for x in xs], small, 0.4, label=f"{stores[0]['small']:,} sessions")
    axes.bar([x + 0.2 for x in xs], large, 0.4, label=f"{stores[0]['large']:,} sessions")
    axes.set_xticks(list(xs), names)
    axes.set_ylabel("µs per request")
    axes.set_title("Per-request store cost as the store grows (scaling.py)")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return [_save(plt, figure, out / "scaling.png")]


def render(results: Path, out: Path) -> list[Path]:
    """Draw every plot the results in *results* allow into *out*; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    latest = load_results(results)
    written: list[Path] = []
    if "compare" in latest:
        written += plot_compare(latest["compare"], out)
    if "scaling" in latest:
        written += plot_scaling(latest["scaling"], out)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--results", type=Path, default=HERE / "results", help="the directory of result JSON files")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "_generated", help="where to write")
    args = parser.parse_args(argv)
    for path in render(args.results, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
