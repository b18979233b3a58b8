"""The benchmark scripts run to the end and write results of the documented shape.

Smoke runs only (``--quick``, a one-second load): no timing is asserted, only
that each script exits 0 and its JSON has the structure benchmarks/README.md
describes.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers import mysql_connect, require_mysql, require_postgres, require_redis, unavailable
from wsgisession import SessionMiddleware, get_session
from wsgisession.stores.memory import MemoryStore

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


#: The peers of every store: wsgisession plain and sealed, Beaker, the floor.
EVERY_STORE = {"bare", "wsgisession", "wsgisession-sealed", "beaker", "floor"}
#: The peers of every store but memory: Flask (bare, ours, Flask-Session) and Django (bare, its engine).
FRAMEWORKS = {"flask-bare", "wsgisession-flask", "flask-session", "django-bare", "django"}
#: The peers each store has when every library is installed and every server answers.
PEERS_OF = {
    "memory": EVERY_STORE,
    "file": EVERY_STORE | FRAMEWORKS | {"wsgisession-nofsync", "wsgisession-sealed-nofsync"},
    "sqlite": EVERY_STORE | FRAMEWORKS | {"wsgisession-full"},
    "redis": EVERY_STORE | FRAMEWORKS,
    "postgres": EVERY_STORE | FRAMEWORKS,
    "mysql": EVERY_STORE | FRAMEWORKS,
}
BASELINES = {"flask-session": "flask-bare", "wsgisession-flask": "flask-bare", "django": "django-bare"}
RIVALS = {"beaker", "flask-session", "django"}


def require_peers() -> None:
    for module in ("beaker", "sqlalchemy", "flask_session", "flask_sqlalchemy", "cachelib", "django"):
        require(module, "compare.py's peers (pip install -e '.[bench]')")
    require("cryptography", "the wsgisession-sealed peer (pip install -e '.[encryption]')")


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
            sealed = peers["wsgisession-sealed"]
            assert sealed["kind"] == "wsgisession" and sealed["note"].startswith("encrypt=True")
            assert sealed["speedup_vs_beaker"] > 0
            assert isinstance(sealed["overhead_vs_wsgisession"], float)  # over plain wsgisession's added time
            # Sealing's price: the sealed peer's time less the plain one's, round by round.
            rounds = zip(sealed["us_per_request_rounds"], peers["wsgisession"]["us_per_request_rounds"], strict=True)
            differences = sorted(a - b for a, b in rounds)
            assert differences[0] - 0.01 <= sealed["sealing_added_us"] <= differences[-1] + 0.01
            for name in ("wsgisession", "wsgisession-sealed"):
                leads = peers[name]["lead_over_peers_us"]
                assert set(leads) == RIVALS & set(peers)
                assert all(isinstance(lead, float) for lead in leads.values())
        if store["store"] == "file":
            assert store["fsync_us"] > 0
            for workload in store["workloads"]:
                unsynced = workload["peers"]["wsgisession-sealed-nofsync"]
                assert "patched to no-ops" in unsynced["note"] and unsynced["baseline"] == "bare"


def _judged(peers: dict[str, Any]) -> dict[str, Any]:
    return peers.get("wsgisession-sealed-nofsync") or peers["wsgisession-sealed"]


def check_summary(stdout: str, document: dict[str, Any]) -> None:
    """The summary's sealing columns, and its verdict on wsgisession-sealed against the other middlewares."""
    assert "sealed +µs" in stdout and "sealing +µs" in stdout and "sealed ahead" in stdout
    pairs = [(r["store"], w) for r in document["results"] for w in r["workloads"]]
    ahead = [
        (store, w["workload"])
        for store, w in pairs
        # On files, at the peers' durability: ours with its syncs patched out.
        if all(lead > 0 for lead in _judged(w["peers"])["lead_over_peers_us"].values())
    ]
    assert f"wsgisession-sealed adds less than every other middleware on {len(ahead)} of {len(pairs)} " in stdout
    for store, w in pairs:
        if (store, w["workload"]) not in ahead:
            assert f"{store} {w['workload']} (no: " in stdout


def test_compare(tmp_path: Path) -> None:
    """Every peer on the stores that need no server: Beaker, Flask-Session, Django, the floors."""
    require_peers()
    out = tmp_path / "compare.json"
    stdout = run("compare.py", "--quick", "--stores", "memory,file,sqlite", "--json", str(out), capture="stdout")
    document = json.loads(out.read_text())
    check_compare(document, ["memory", "file", "sqlite"])
    check_summary(stdout, document)
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
    check_summary(stdout, document)


def _mysql_leftovers(tag: str, url: str) -> list[str]:
    """The tables and databases on the MySQL server whose names start with *tag*."""
    pattern = tag.replace("_", "\\_") + "%"
    with contextlib.closing(mysql_connect(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT CONCAT(table_schema, '.', table_name) FROM information_schema.tables WHERE table_name LIKE %s",
            (pattern,),
        )
        tables = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s", (pattern,))
        return tables + [row[0] for row in cur.fetchall()]


def test_compare_on_mariadb(tmp_path: Path) -> None:
    """Every peer on MariaDB (MySQLStore; Beaker, Flask-Session, Django on PyMySQL; the floor); nothing left behind."""
    require_peers()
    require("pymysql", "MySQLStore and the peers' MySQL driver (pip install -e '.[mysql]')")
    url = require_mysql()
    out = tmp_path / "compare.json"
    stdout = run(
        "compare.py", "--quick", "--stores", "mysql", "--json", str(out),
        env={"WSGISESSION_BENCH_MYSQL_URL": url}, capture="stdout",
    )  # fmt: skip
    document = json.loads(out.read_text())
    check_compare(document, ["mysql"])
    check_summary(stdout, document)
    assert document["config"]["mysql_url"] == url
    [store] = document["results"]
    login, read, update = store["workloads"]
    assert read["peers"]["floor"]["ops"] == "one SELECT data, expires_at FROM t WHERE key = ?"
    assert update["peers"]["floor"]["ops"].startswith("one SELECT data, expires_at FROM t WHERE key = ?, one UPDATE")
    assert "expiry" in update["peers"]["floor"]["ops"], "the floor moves an indexed expiry, as a store must"
    assert login["peers"]["floor"]["ops"].startswith("one INSERT of key, data, expiry (autocommit")
    assert read["peers"]["wsgisession"]["note"].startswith("MySQLStore")
    assert "MySQL (PyMySQL)" in read["peers"]["flask-session"]["note"]
    assert "django.db.backends.mysql" in read["peers"]["django"]["note"]
    # Every table and database the run made (their names carry the run's tag) was dropped.
    match = re.search(r"table (bench_[0-9a-f]{8})_", read["peers"]["wsgisession"]["note"])
    assert match is not None
    assert _mysql_leftovers(match.group(1), url) == []


def test_compare_runs_only_the_peers_asked_for(tmp_path: Path) -> None:
    require("django", "the run asks for the Django peers (pip install -e '.[bench]')")
    out = tmp_path / "compare.json"
    run("compare.py", "--quick", "--stores", "sqlite", "--workloads", "read", "--peers", "django", "--json", str(out))
    [store] = json.loads(out.read_text())["results"]
    [workload] = store["workloads"]
    assert set(workload["peers"]) == {"bare", "wsgisession", "wsgisession-sealed", "wsgisession-full"} | {
        "django-bare",
        "django",
        "floor",
    }


def test_a_peer_whose_library_is_missing_is_skipped_with_the_reason(tmp_path: Path) -> None:
    # Packages that fail to import, found before the installed ones (the Django worker inherits the path).
    for name in ("flask_session", "django", "cryptography"):
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
    assert set(store["skipped_peers"]) == {"flask-session", "django", "wsgisession-sealed"}
    for family, reason in store["skipped_peers"].items():
        assert "is not installed" in reason
        assert f"sqlite: {family} skipped ({reason})" in stderr
    assert "cryptography" in store["skipped_peers"]["wsgisession-sealed"]
    assert set(store["workloads"][0]["peers"]) == {"bare", "wsgisession", "wsgisession-full", "beaker", "floor"}


def test_a_store_whose_server_does_not_answer_is_skipped_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    stderr = run(
        "compare.py",
        "--quick",
        "--stores",
        "redis,postgres,mysql",
        "--json",
        str(out),
        env={  # nothing listens on port 1
            "WSGISESSION_BENCH_REDIS_URL": "redis://127.0.0.1:1/0",
            "WSGISESSION_BENCH_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/test",
            "WSGISESSION_BENCH_MYSQL_URL": "mysql://root:hunter2@127.0.0.1:1/test",
        },
    )
    document = json.loads(out.read_text())
    assert [r["store"] for r in document["results"]] == ["redis", "postgres", "mysql"]
    assert "hunter2" not in out.read_text() and "hunter2" not in stderr
    assert document["config"]["mysql_url"] == "mysql://root:***@127.0.0.1:1/test"
    for result in document["results"]:
        assert "127.0.0.1:1" in result["skipped"]
        assert f"{result['store']}: skipped ({result['skipped']})" in stderr


@pytest.fixture
def compare(monkeypatch: pytest.MonkeyPatch) -> Any:
    """benchmarks/compare.py as a module (its siblings importable as it imports them)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("compare")


def _logged_in(encrypt: bool) -> tuple[MemoryStore, str]:
    """A memory store holding one logged-in session (as the benchmark's login writes it), and its cookie."""
    peer = importlib.import_module("_peer")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = peer.handle(get_session(environ), environ["PATH_INFO"])
        start_response("200 OK", [])
        return [body]

    store = MemoryStore()
    middleware = SessionMiddleware(app, secret="s" * 32, store=store, encrypt=encrypt)
    _, headers, _ = peer.call(middleware, dict(peer.BASE_ENVIRON, PATH_INFO="/login"))
    cookie = peer.set_cookie(headers)
    assert cookie is not None
    return store, cookie


def test_the_sealed_peer_is_checked_to_store_nothing_readable(compare: Any) -> None:
    """A sealed peer whose store held a value as plain JSON would stop the run before it is timed."""
    require("cryptography", "sealed sessions (pip install -e '.[encryption]')")
    store, cookie = _logged_in(encrypt=True)
    compare.sealed_in(store, "wsgisession-sealed")(cookie)  # every value sealed: passes
    store, cookie = _logged_in(encrypt=False)
    with pytest.raises(RuntimeError, match=r"values stored unsealed: \['n', 'user'\]"):
        compare.sealed_in(store, "wsgisession-sealed")(cookie)


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
