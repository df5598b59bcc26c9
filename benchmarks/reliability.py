"""`python -m benchmarks reliability`: the reliability figures behind RELIABILITY.md.

Against a real one-process server on 127.0.0.1 (what `make run` serves), in one run:
the hostile-request catalogue (answers, memory before/after), a soak of mixed traffic at
high concurrency (sent vs answered, errors by class, RSS, file descriptors, threads), and
the schemathesis fuzzing suite (run through pytest). Writes
benchmarks/results/reliability.json and RELIABILITY.md.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks import hostile, redteam
from benchmarks.load import LoadResult, http_load
from benchmarks.machine import machine_info
from benchmarks.services import ROOT, Server, running

RESULTS = Path(__file__).resolve().parent / "results"
SERVER_ENV = {"ML_RATE_LIMIT_PER_SECOND": "0", "ML_DEVICE": "cpu"}
FUZZ_EXAMPLES = 30  # generated examples per operation (tests/reliability/test_fuzz.py)


def process_figures(server: Server) -> dict[str, float]:
    """RSS (MiB), open file descriptors and threads of the server process now."""
    process = psutil.Process(server.process.pid)
    return {"rss_mb": round(process.memory_info().rss / 2**20, 1),
            "fds": process.num_fds(), "threads": process.num_threads()}


def mixed_traffic(users: list[str]) -> dict[str, tuple[list[bytes], int]]:
    """Route -> (bodies, concurrency): mostly cheap predictions, some images and batches,
    and a share of bad requests."""
    from ml.samples import TEXTS, sample_photo

    buffer = io.BytesIO()
    sample_photo("chelsea").resize((160, 120)).save(buffer, format="JPEG", quality=85)
    image = json.dumps({"image_base64": base64.b64encode(buffer.getvalue()).decode()})
    texts = [f"{text} #{i}" for i in range(200) for text in TEXTS[:3]]
    return {
        "/api/predict/sentiment": ([json.dumps({"text": t}).encode() for t in texts]
                                   + [b'{"text": ""}', b'{"text": 5}', b"{broken"], 16),
        "/api/predict/recommend": ([json.dumps({"user_id": u, "limit": 10}).encode()
                                    for u in users] + [b'{"user_id": "1", "limit": 0}'], 8),
        "/api/predict/image": ([image.encode()], 4),
        "/api/predict/batch": ([json.dumps({"texts": texts[:50]}).encode()], 2),
        "/api/predict/nothing": ([b"{}"], 2),  # 404s on the same connections
    }


def client_errors(result: LoadResult) -> int:
    """The load client's own failures (connections lost or refused, unreadable answers):
    LoadResult.errors counts those and every non-2xx answer."""
    return result.errors - sum(n for status, n in result.statuses.items()
                               if not 200 <= status < 300)


def soak(server: Server, seconds: float, users: list[str]) -> dict[str, Any]:
    """Mixed traffic for `seconds` after a short warm-up; process figures around it."""
    traffic = mixed_traffic(users)

    def blast(duration: float) -> dict[str, LoadResult]:
        results: dict[str, LoadResult] = {}

        def one(route: str, bodies: list[bytes], concurrency: int) -> None:
            results[route] = http_load(server.url, route, bodies, concurrency=concurrency,
                                       requests=10**9, seconds=duration)

        threads = [threading.Thread(target=one, args=(route, bodies, concurrency))
                   for route, (bodies, concurrency) in traffic.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    blast(min(10.0, seconds / 4))  # warm-up: every path, every pool at working size
    time.sleep(1.0)
    before = process_figures(server)
    started = time.perf_counter()
    results = blast(seconds)
    elapsed = time.perf_counter() - started
    time.sleep(1.0)  # let closed connections go
    after = process_figures(server)
    statuses: Counter[int] = Counter()
    for result in results.values():
        statuses.update(result.statuses)
    sent = sum(r.sent for r in results.values())
    answered = sum(r.answered for r in results.values())
    classes = Counter(f"{status // 100}xx" for status in statuses.elements())
    with httpx.Client(base_url=server.url, timeout=10) as client:
        health = client.get("/health").json()["status"]
    return {
        "seconds": round(elapsed, 1),
        "concurrency": sum(c for _, c in traffic.values()),
        "sent": sent, "answered": answered, "unanswered": sent - answered,
        "by_status": {str(k): v for k, v in sorted(statuses.items())},
        "by_class": dict(sorted(classes.items())),
        "requests_per_s": round(answered / elapsed, 1),
        "before": before, "after": after,
        "rss_growth": round(after["rss_mb"] / before["rss_mb"] - 1, 4),
        "health_after": health,
        "client_errors": sum(map(client_errors, results.values())),
        "routes": {route: {"sent": r.sent, "answered": r.answered,
                           "client_errors": client_errors(r),
                           "statuses": {str(k): v for k, v in sorted(r.statuses.items())}}
                   for route, r in results.items()},
    }


def catalogue(server: Server, rounds: int = 3) -> dict[str, Any]:
    """Every hostile case once (warming), then `rounds` more; memory around the rounds."""
    cases = hostile.cases()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        send = hostile.httpx_sender(client)
        first = hostile.run(send, cases)
        before = process_figures(server)
        repeats = [hostile.run(send, cases) for _ in range(rounds)]
        after = process_figures(server)
        health = client.get("/health").json()["status"]
    outcomes = [first, *repeats]
    wrong = sorted({(o.case.name, o.status, o.code) for run in outcomes for o in run
                    if not o.ok})
    return {
        "cases": len(cases), "requests": sum(len(run) for run in outcomes),
        "as_documented": sum(o.ok for run in outcomes for o in run),
        "wrong": [list(w) for w in wrong],
        "by_status": dict(sorted(Counter(str(o.status) for o in first).items())),
        "slowest_ms": round(max(o.seconds for run in outcomes for o in run) * 1e3, 1),
        "before": before, "after": after,
        "rss_growth": round(after["rss_mb"] / before["rss_mb"] - 1, 4),
        "health_after": health,
        "table": [{"case": o.case.name, "path": o.case.path, "status": o.status,
                   "code": o.code, "ok": o.ok} for o in first],
    }


def fuzz() -> dict[str, Any]:
    """The schemathesis suite through pytest: operations, examples, outcome."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/reliability/test_fuzz.py"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=1800)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    return {"operations": passed + failed, "passed": passed, "failed": failed,
            "max_examples_per_operation": FUZZ_EXAMPLES, "summary": tail,
            "returncode": result.returncode}


def run(soak_seconds: float = 60.0, with_fuzz: bool = True) -> dict[str, Any]:
    """Everything, against one fresh one-process server."""
    from ml.config import Settings
    from ml.registry import Registry

    settings = Settings.from_env()
    registry = Registry(settings.replace(models=("recommender",)))
    users = registry.get("recommender").known_users()[:300]  # type: ignore[attr-defined]
    env = {**SERVER_ENV, "ML_CACHE_DIR": str(settings.cache_dir)}
    record: dict[str, Any] = {"machine": machine_info()}
    with tempfile.TemporaryDirectory() as logs, running("one-process", env, Path(logs)) as server:
        record["start"] = process_figures(server)
        print("catalogue...", flush=True)
        record["catalogue"] = catalogue(server)
        print(f"soak for {soak_seconds:.0f}s...", flush=True)
        record["soak"] = soak(server, soak_seconds, users)
        log = server.log.read_text(errors="replace")
        record["server_log_tracebacks"] = log.count("Traceback")
    print("red team...", flush=True)
    with tempfile.TemporaryDirectory() as logs:
        record["redteam"] = redteam.run_all(Path(logs), settings.cache_dir)
    if with_fuzz:
        print("fuzzing...", flush=True)
        record["fuzz"] = fuzz()
    record["load_after"] = machine_info()["load_average"]
    return record


def markdown(record: dict[str, Any]) -> str:
    """RELIABILITY.md."""
    machine, cat, soak_ = record["machine"], record["catalogue"], record["soak"]
    lines = [
        "# Reliability", "",
        "Generated by `python -m benchmarks reliability` (`make reliability`); do not edit "
        "by hand. All traffic went to a fresh one-process server (`make run`) on 127.0.0.1.",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores; load {machine['load_average']}"
        f" at start, {record.get('load_after')} at end; {machine['when']}",
        "",
        "## What the test suite proves (and this report measures)", "",
        "| area | tests |", "|---|---|",
        "| hostile requests | `tests/reliability/test_catalogue.py` (in-process and a real "
        "server, memory checked) |",
        "| fuzzing from `/openapi.json` | `tests/reliability/test_fuzz.py` (schemathesis) |",
        "| soak: sent = answered, no 5xx, no leaks | `tests/reliability/test_soak.py` |",
        "| faults: missing/corrupt weights, corrupt artifacts, raising and hanging models, "
        "shutdown under load | `tests/reliability/test_faults.py`, `tests/api/test_routes.py`"
        ", `tests/ml/test_artifacts.py` |",
        "| overload: 503 + Retry-After at once, recovery | `tests/api/test_serving.py`, "
        "`tests/api/test_e2e.py::test_overload_is_refused_fast_and_the_server_recovers` |",
        "| slow-header / slow-body clients | `tests/reliability/test_slow_clients.py` |",
        "| SSRF, auth, X-Forwarded-For, security headers | `tests/api/test_fetch.py`, "
        "`tests/api/test_routes.py`, `tests/api/test_e2e.py` |",
        "| red team: memory, loop stall and reach of every attack class | "
        "`tests/reliability/test_redteam.py` |",
        "",
        "## Hostile-request catalogue", "",
        f"{cat['cases']} cases, each sent {cat['requests'] // cat['cases']} times "
        f"({cat['requests']} requests): **{cat['as_documented']} answered as documented**, "
        f"{len(cat['wrong'])} case(s) otherwise{': ' + str(cat['wrong']) if cat['wrong'] else ''}. "
        f"Slowest answer {cat['slowest_ms']} ms. Server RSS {cat['before']['rss_mb']} MiB "
        f"before the repeated rounds, {cat['after']['rss_mb']} MiB after "
        f"({cat['rss_growth']:+.1%}); health afterwards: **{cat['health_after']}**.", "",
        "| case | endpoint | status | error code |", "|---|---|---:|---|",
    ]
    lines += [f"| {row['case']} | `{row['path']}` | {row['status']} | "
              f"{row['code'] or '-'} |" for row in cat["table"]]
    lines += [
        "", "## Soak", "",
        f"{soak_['seconds']} s of mixed traffic from {soak_['concurrency']} concurrent "
        f"keep-alive connections (sentiment, recommendations, images, batches, "
        f"an unknown route; some requests deliberately invalid) at "
        f"{soak_['requests_per_s']} requests/s.",
        "",
        "| figure | value |", "|---|---:|",
        f"| requests sent | {soak_['sent']} |",
        f"| responses received | {soak_['answered']} |",
        f"| unanswered | {soak_['unanswered']} |",
        *[f"| {cls} responses | {n} |" for cls, n in soak_["by_class"].items()],
        f"| RSS after warm-up / after soak (MiB) | {soak_['before']['rss_mb']} / "
        f"{soak_['after']['rss_mb']} ({soak_['rss_growth']:+.1%}) |",
        f"| open file descriptors before / after | {soak_['before']['fds']} / "
        f"{soak_['after']['fds']} |",
        f"| threads before / after | {soak_['before']['threads']} / "
        f"{soak_['after']['threads']} |",
        f"| health afterwards | {soak_['health_after']} |",
        f"| tracebacks in the server log | {record['server_log_tracebacks']} |",
        "", "Statuses by route:", "",
        *[f"- `{route}`: {r['statuses']}" for route, r in soak_["routes"].items()],
    ]
    red = record.get("redteam")
    if red:
        rows = red["rows"]
        worst_stall = max(rows, key=lambda r: r["stall_ms"])
        worst_rss = max(rows, key=lambda r: r["rss_mb"])
        lines += [
            "", "## Red team", "",
            "Attacks a network client could make on the one process (`make run`, an API key "
            "configured; no key sent unless a case says so), each measured while it ran: the "
            "server's peak RSS above its RSS before the case (VmHWM reset per case), the worst "
            "`/health/live` latency seen by a probe in another process asking every 20 ms "
            "(the event loop's worst stall), and connections to a canary listener on "
            "loopback that no request may reach. `benchmarks/redteam.py` holds the cases; "
            "`tests/reliability/test_redteam.py` asserts, per case, at most "
            f"{red['bounds']['rss_mb']:g} MiB, {red['bounds']['stall_ms']:g} ms, no canary "
            "connection and no 5xx but a documented 503.", "",
            f"Worst stall: **{worst_stall['stall_ms']} ms** ({worst_stall['name']}). Largest "
            f"memory rise: **{worst_rss['rss_mb']} MiB** ({worst_rss['name']}). Server RSS "
            f"{red['baseline_rss_mb']} MiB after warm-up, {red['final_rss_mb']} MiB after "
            f"every case ({red['final_rss_mb'] / red['baseline_rss_mb'] - 1:+.1%}).", "",
            "| class | case | answers | peak RSS +MiB | worst stall ms | canary | result |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for row in rows:
            answers = ", ".join(f"{n}x {s}" for s, n in row["statuses"].items()) or "-"
            verdict = row["failure"] or row["detail"] or "as expected"
            lines.append(f"| {row['kind']} | {row['name']} | {answers} | {row['rss_mb']} | "
                         f"{row['stall_ms']} | {row['canary_hits']} | {verdict} |")
    fuzz_ = record.get("fuzz")
    if fuzz_:
        lines += ["", "## Fuzzing", "",
                  f"schemathesis over every operation in `/openapi.json`: "
                  f"{fuzz_['operations']} operations, up to "
                  f"{fuzz_['max_examples_per_operation']} generated examples each; checks: no "
                  f"5xx and every response conforms to the schema. Result: "
                  f"`{fuzz_['summary']}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks reliability")
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--no-fuzz", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "RELIABILITY.md")
    args = parser.parse_args(argv)
    record = run(args.soak_seconds, with_fuzz=not args.no_fuzz)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    args.markdown.write_text(markdown(record), encoding="utf-8")
    print(f"written: {args.out} and {args.markdown}")
    return 0
