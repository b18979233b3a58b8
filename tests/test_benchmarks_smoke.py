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

from tests.servers import require_postgres, require_redis, unavailable

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def require(module: str, why: str) -> None:
    """Skip unless *module* is installed (fail under ``WSGISESSION_REQUIRE_ALL=1``, as in CI)."""
    if importlib.util.find_spec(module) is None:
        unavailable(f"{module} is not installed: {why}")


def run(
    script: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None, capture: str = "stderr"
) -> str:
    """Run a benchmark script to completion; return what it wrote on stderr (or stdout)."""
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCHMARKS.parent,
        env=None if env is None else {**os.environ, **env},
    )
    assert completed.returncode == 0, f"{script} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout if capture == "stdout" else completed.stderr


def check_machine(document: dict[str, Any]) -> None:
    machine = document["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["python"]
    assert {"wsgisession", "webob"} <= set(machine["packages"])
    assert machine["date"]


#: The peers each store has when every library is installed and every server answers.
PEERS_OF = {
    "memory": {"bare", "wsgisession", "beaker", "floor"},
    "file": {"bare", "wsgisession", "wsgisession-nofsync", "beaker", "flask-bare", "wsgisession-flask", "flask-session"}
    | {"django-bare", "django", "floor"},
    "sqlite": {"bare", "wsgisession", "wsgisession-full", "beaker", "flask-bare", "wsgisession-flask", "flask-session"}
    | {"django-bare", "django", "floor"},
    "redis": {"bare", "wsgisession", "beaker", "flask-bare", "wsgisession-flask", "flask-session", "django-bare"}
    | {"django", "floor"},
    "postgres": {"bare", "wsgisession", "beaker", "flask-bare", "wsgisession-flask", "flask-session", "django-bare"}
    | {"django", "floor"},
}
BASELINES = {"flask-session": "flask-bare", "wsgisession-flask": "flask-bare", "django": "django-bare"}


def require_peers() -> None:
    for module in ("beaker", "sqlalchemy", "flask_session", "flask_sqlalchemy", "cachelib", "django"):
        require(module, "compare.py's peers (pip install -e '.[bench]')")


def check_compare(document: dict[str, Any], stores: list[str]) -> None:
    """The shape of a compare.py run on *stores*, every peer present and measured."""
    assert document["benchmark"] == "compare"
    check_machine(document)
    assert document["config"]["quick"] is True
    assert document["config"]["beaker_options"]["secret"] == "***"  # never the secret itself
    assert [r["store"] for r in document["results"]] == stores
    for store in document["results"]:
        assert "skipped_peers" not in store, store["skipped_peers"]
        assert [w["workload"] for w in store["workloads"]] == ["login", "read", "update"]
        for workload in store["workloads"]:
            peers = workload["peers"]
            assert set(peers) == PEERS_OF[store["store"]]
            for name, peer in peers.items():
                assert peer["us_per_request"] > 0 and peer["requests_per_second"] > 0
                assert len(peer["us_per_request_rounds"]) == document["config"]["rounds"]
                if peer["kind"] not in ("bare", "floor"):
                    assert peer["baseline"] == BASELINES.get(name, "bare")
                    assert isinstance(peer["added_us_vs_bare"], float)
                    assert peer["x_floor"] is None or peer["x_floor"] > -1000
            floor = peers["floor"]
            assert floor["store_ops_us"] > 0 and floor["hmac_us"] > 0 and floor["ops"]
            assert isinstance(peers["wsgisession"]["x_floor"], float)
            assert peers["wsgisession"]["speedup_vs_beaker"] > 0
            if "flask-session" in peers:
                assert peers["wsgisession-flask"]["speedup_vs_flask_session"] > 0
                assert isinstance(peers["flask-session"]["overhead_vs_wsgisession"], float)
            if "django" in peers:
                assert isinstance(peers["django"]["overhead_vs_wsgisession"], float)
        if store["store"] == "file":
            assert store["fsync_us"] > 0


def test_compare(tmp_path: Path) -> None:
    """Every peer on the stores that need no server: Beaker, Flask-Session, Django, the floors."""
    require_peers()
    out = tmp_path / "compare.json"
    stdout = run("compare.py", "--quick", "--stores", "memory,file,sqlite", "--json", str(out), capture="stdout")
    document = json.loads(out.read_text())
    check_compare(document, ["memory", "file", "sqlite"])
    assert "one os.fsync of a small file just written" in stdout


def test_compare_on_servers(tmp_path: Path) -> None:
    """Every peer on Redis and PostgreSQL (skipped without them; a failure under WSGISESSION_REQUIRE_ALL=1)."""
    require_peers()
    env = {"WSGISESSION_BENCH_REDIS_URL": require_redis(), "WSGISESSION_BENCH_POSTGRES_URL": require_postgres()}
    out = tmp_path / "compare.json"
    stdout = run("compare.py", "--quick", "--stores", "redis,postgres", "--json", str(out), env=env, capture="stdout")
    document = json.loads(out.read_text())
    check_compare(document, ["redis", "postgres"])
    read = document["results"][0]["workloads"][1]
    assert read["workload"] == "read" and read["peers"]["floor"]["ops"] == "one HGETALL"
    assert isinstance(read["peers"]["wsgisession"]["x_store_ops"], float)
    assert "x one HGETALL" in stdout


def test_compare_runs_only_the_peers_asked_for(tmp_path: Path) -> None:
    require("django", "the run asks for the Django peers (pip install -e '.[bench]')")
    out = tmp_path / "compare.json"
    run("compare.py", "--quick", "--stores", "sqlite", "--workloads", "read", "--peers", "django", "--json", str(out))
    [store] = json.loads(out.read_text())["results"]
    [workload] = store["workloads"]
    assert set(workload["peers"]) == {"bare", "wsgisession", "wsgisession-full", "django-bare", "django", "floor"}


def test_a_peer_whose_library_is_missing_is_skipped_with_the_reason(tmp_path: Path) -> None:
    # Packages that fail to import, found before the installed ones (the Django worker inherits the path).
    for name in ("flask_session", "django"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('hidden', name={name!r})\n")
    out = tmp_path / "compare.json"
    stderr = run(
        "compare.py",
        "--quick",
        "--stores",
        "sqlite",
        "--workloads",
        "read",
        "--json",
        str(out),
        env={"PYTHONPATH": str(tmp_path)},
    )
    [store] = json.loads(out.read_text())["results"]
    assert set(store["skipped_peers"]) == {"flask-session", "django"}
    for family, reason in store["skipped_peers"].items():
        assert "is not installed" in reason
        assert f"sqlite: {family} skipped ({reason})" in stderr
    assert set(store["workloads"][0]["peers"]) == {"bare", "wsgisession", "wsgisession-full", "beaker", "floor"}


def test_a_store_whose_server_does_not_answer_is_skipped_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    stderr = run(
        "compare.py",
        "--quick",
        "--stores",
        "redis,postgres",
        "--json",
        str(out),
        env={  # nothing listens on port 1
            "WSGISESSION_BENCH_REDIS_URL": "redis://127.0.0.1:1/0",
            "WSGISESSION_BENCH_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/test",
        },
    )
    document = json.loads(out.read_text())
    assert [r["store"] for r in document["results"]] == ["redis", "postgres"]
    for result in document["results"]:
        assert "127.0.0.1:1" in result["skipped"]
        assert f"{result['store']}: skipped ({result['skipped']})" in stderr


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
