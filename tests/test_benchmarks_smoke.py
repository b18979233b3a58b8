"""The benchmark scripts run to the end and write results of the documented shape.

Smoke runs only (``--quick``, a one-second load): no timing is asserted, only
that each script exits 0 and its JSON has the structure benchmarks/README.md
describes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers import unavailable

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def require(module: str, why: str) -> None:
    """Skip unless *module* is installed (fail under ``WSGISESSION_REQUIRE_ALL=1``, as in CI)."""
    if importlib.util.find_spec(module) is None:
        unavailable(f"{module} is not installed: {why}")


def run(script: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    """Run a benchmark script to completion; return what it wrote on stderr."""
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCHMARKS.parent,
        env=None if env is None else {**os.environ, **env},
    )
    assert completed.returncode == 0, f"{script} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
    return completed.stderr


def check_machine(document: dict[str, Any]) -> None:
    machine = document["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["python"]
    assert {"wsgisession", "webob"} <= set(machine["packages"])
    assert machine["date"]


def test_compare(tmp_path: Path) -> None:
    require("beaker", "the comparison runs Beaker's SessionMiddleware (pip install -e '.[bench]')")
    require("sqlalchemy", "Beaker's ext:database backend needs SQLAlchemy")
    out = tmp_path / "compare.json"
    run("compare.py", "--quick", "--stores", "memory,sqlite", "--json", str(out))
    document = json.loads(out.read_text())
    assert document["benchmark"] == "compare"
    check_machine(document)
    assert document["config"]["quick"] is True
    assert document["config"]["beaker_options"]["secret"] == "***"  # never the secret itself
    assert [r["store"] for r in document["results"]] == ["memory", "sqlite"]
    for store in document["results"]:
        assert [w["workload"] for w in store["workloads"]] == ["login", "read", "update"]
        for workload in store["workloads"]:
            peers = workload["peers"]
            assert {"bare", "wsgisession", "beaker"} <= set(peers)
            for name, peer in peers.items():
                assert peer["us_per_request"] > 0 and peer["requests_per_second"] > 0
                assert len(peer["us_per_request_rounds"]) == document["config"]["rounds"]
                if name != "bare":
                    assert isinstance(peer["added_us_vs_bare"], float)
            assert peers["wsgisession"]["speedup_vs_beaker"] > 0


def test_a_store_whose_server_does_not_answer_is_skipped_with_the_reason(tmp_path: Path) -> None:
    require("beaker", "the comparison runs Beaker's SessionMiddleware (pip install -e '.[bench]')")
    out = tmp_path / "compare.json"
    stderr = run(
        "compare.py",
        "--quick",
        "--stores",
        "redis",
        "--json",
        str(out),
        env={"WSGISESSION_BENCH_REDIS_URL": "redis://127.0.0.1:1/0"},  # nothing listens on port 1
    )
    document = json.loads(out.read_text())
    [result] = document["results"]
    assert result["store"] == "redis" and "127.0.0.1:1" in result["skipped"]
    assert f"redis: skipped ({result['skipped']})" in stderr


def test_scaling(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    run("scaling.py", "--quick", "--json", str(out), "--tmpdir", str(tmp_path))
    document = json.loads(out.read_text())
    assert document["benchmark"] == "scaling"
    check_machine(document)
    assert {r["store"] for r in document["results"]} == {"sqlite", "file", "postgres"}
    for result in document["results"]:
        if "skipped" in result:
            assert result["store"] == "postgres"  # a server store may be absent
            continue
        per_request = result["per_request"]
        assert per_request["small_us"] > 0 and per_request["large_us"] > 0
        assert per_request["ratio_large_over_small"] > 0
        for size in ("small", "large"):
            pct = per_request["request_percentiles_us"][size]
            assert 0 < pct["p50"] <= pct["p90"] <= pct["p99"]
        assert per_request["p50_ratio_large_over_small"] > 0
        prune = result["prune"]
        assert prune["removed"] == prune["expired"] > 0
        reader = prune["reader_during_prune"]
        assert reader["loads"] > 0 and reader["missing"] == 0 and reader["max_ms"] >= reader["p50_ms"]


@pytest.mark.server
def test_server_load(tmp_path: Path) -> None:
    require("gunicorn", "the load benchmark serves the reference app with gunicorn")
    out = tmp_path / "load.json"
    run("server_load.py", "--duration", "1", "--warmup", "0.2", "--connections", "2", "--json", str(out))
    document = json.loads(out.read_text())
    assert document["benchmark"] == "server_load"
    check_machine(document)
    for target in ("session", "plain"):
        result = document["results"][target]
        assert result["requests"] > 0 and result["errors"] == 0
        assert set(result["statuses"]) == {"200"}
        assert result["p99_ms"] >= result["p50_ms"] > 0
    assert document["session_over_plain"]["throughput_ratio"] > 0
