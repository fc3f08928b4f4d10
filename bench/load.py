"""comfygate under load from many clients, with the requests it must refuse mixed in.

For each setup (``embedded``: SQLite, filesystem broker, ``serve --worker``; ``redis-postgres``: Redis broker, a
fresh PostgreSQL database, ``serve --no-worker`` plus one ``comfygate worker``) it starts real processes on
loopback (tests/deployment.py), then ``--clients`` concurrent clients (200) loop for ``--duration`` seconds
(60), each request drawn from this mix:

    run      POST /v1/workflows/<name>/runs               202 (a trivial run: EmptyImage -> SaveImage)
    poll     GET  /v1/runs/<one of this client's runs>     200
    fetch    GET  /v1/runs/<id>/outputs/0 (once it ended)  200 (the PNG bytes)
    upload   POST /v1/workflows (the same document again)  200
    probes that must be refused:
      bad-key        any route with an unknown key                        401
      other-project  a run of another project, read with this project's key   404
      webhook        a run whose webhook targets 127.0.0.1 / 169.254.169.254 / 10.0.0.1   422
      over-limit     runs with a key limited to 1 run per minute           429 (202 once a minute)

The clients use keys of a project of their own (a developer per 20 clients); the operator's default rate limits
are off for the mix (tests/deployment.py sets ``COMFYGATE_RATE_LIMIT_*=0``) so that the figures measure the server, and the
over-limit probes use a key with its own limits. It prints requests/s, p50/p95/p99 per kind, counts by status,
the requests answered other than expected, and the runs accepted, finished and lost (accepted but not ended
within ``--drain`` seconds after the load stopped; must be 0).

With ``--faults`` it then runs bench/faults.py (a Redis killed and restarted under a stream of runs, and a
PostgreSQL restart) and prints its figures.

Run it as ``.venv/bin/python bench/load.py``. Only 127.0.0.1 is contacted (the internal webhook targets are
refused when the run is submitted: nothing is ever sent to them).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from overhead import INPUTS, POLICY, SETUPS, WORKFLOW, BenchError, _hard_stop, percentile, started

WORKFLOW_NAME = "bench-load"
OTHER_WORKFLOW = "bench-load-other"
TERMINAL = {"succeeded", "rejected", "failed", "canceled", "held"}
INTERNAL_TARGETS = ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
                    "http://[::1]/", "http://localhost/")
# Weights of the mix; probes are a quarter of all requests.
MIX = {"run": 14, "poll": 34, "fetch": 14, "upload": 3, "healthz": 10,
       "bad-key": 7, "other-project": 7, "webhook": 6, "over-limit": 5}
EXPECTED = {"run": 202, "poll": 200, "fetch": 200, "upload": 200, "healthz": 200,
            "bad-key": 401, "other-project": 404, "webhook": 422, "over-limit": 429}


@dataclass
class Keys:
    callers: list[str]  # keys of the project the load runs in (developers)
    limited: str  # a key of the same project limited to one run per minute
    other_run: str  # a run of another project


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    transport_errors: int = 0

    def record(self, kind: str, status: int, seconds: float, body: str = "") -> None:
        self.latencies[kind].append(seconds * 1e3)
        self.statuses[(kind, status)] += 1
        if status != EXPECTED[kind] and kind != "over-limit" and len(self.unexpected) < 20:
            self.unexpected.append(f"{kind}: HTTP {status} {body[:200]}")


class LoadClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str, keys: Keys, tally: Tally,
                 rng: random.Random) -> None:
        self.session, self.base_url, self.keys, self.tally, self.rng = session, base_url, keys, tally, rng
        self.headers = {"Authorization": f"Bearer {key}"}
        self.runs: list[str] = []
        self.ended: list[str] = []

    async def _call(self, kind: str, method: str, path: str, *, headers: dict[str, str] | None = None,
                    body: Any = None) -> tuple[int, Any]:
        start = time.perf_counter()
        async with self.session.request(method, self.base_url + path, headers=headers or self.headers,
                                        json=body) as resp:
            data = await resp.read()
            status = resp.status
        self.tally.record(kind, status, time.perf_counter() - start, data.decode(errors="replace"))
        if resp.content_type == "application/json":
            return status, json.loads(data)
        return status, data

    async def one(self) -> None:
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        if kind in ("poll", "fetch") and not self.runs:
            kind = "run"
        if kind == "fetch" and not self.ended:
            kind = "poll"
        runs_path = f"/v1/workflows/{WORKFLOW_NAME}/runs"
        if kind == "run":
            status, body = await self._call(kind, "POST", runs_path,
                                            body={"inputs": {"color": self.rng.randrange(1 << 24)}})
            if status == 202:
                self.runs.append(body["id"])
                self.tally.accepted.add(body["id"])
        elif kind == "poll":
            run_id = self.rng.choice(self.runs[-20:])
            status, body = await self._call(kind, "GET", f"/v1/runs/{run_id}")
            if status == 200 and body.get("status") == "succeeded":
                self.runs.remove(run_id)
                self.ended.append(run_id)
        elif kind == "fetch":
            await self._call(kind, "GET", f"/v1/runs/{self.rng.choice(self.ended[-20:])}/outputs/0")
        elif kind == "upload":
            await self._call(kind, "POST", "/v1/workflows",
                             body={"name": WORKFLOW_NAME, "workflow": WORKFLOW, "inputs": INPUTS, "policy": POLICY})
        elif kind == "healthz":
            await self._call(kind, "GET", "/healthz")
        elif kind == "bad-key":
            await self._call(kind, "GET", f"/v1/runs/{self.keys.other_run}",
                             headers={"Authorization": "Bearer cg_000000000000_not-a-key"})
        elif kind == "other-project":
            await self._call(kind, "GET", f"/v1/runs/{self.keys.other_run}")
        elif kind == "webhook":
            await self._call(kind, "POST", runs_path, body={"inputs": {"color": 1},
                                                            "webhook": self.rng.choice(INTERNAL_TARGETS)})
        elif kind == "over-limit":
            await self._call(kind, "POST", runs_path, body={"inputs": {"color": 2}},
                             headers={"Authorization": f"Bearer {self.keys.limited}"})


# --- setting the stage: a project for the load, another project with one run -------------------------------


async def _admin_call(session: aiohttp.ClientSession, base_url: str, admin_key: str, method: str, path: str,
                      body: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
    async with session.request(method, base_url + path, json=body,
                               headers={"Authorization": f"Bearer {admin_key}"}) as resp:
        data = await resp.json()
        if resp.status not in expect:
            raise BenchError(f"{method} {path} answered {resp.status}: {str(data)[:400]}")
        return data


async def _new_key(session: aiohttp.ClientSession, base_url: str, admin_key: str, name: str, user: str,
                   project: str, limits: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"name": name, "user": user, "scopes": {"projects": [project]}}
    if limits:
        body["limits"] = limits
    created = await _admin_call(session, base_url, admin_key, "POST", "/v1/keys", body)
    return str(created["secret"])


async def prepare(session: aiohttp.ClientSession, base_url: str, admin_key: str, clients: int) -> Keys:
    call = _admin_call
    for project in ("load", "other"):
        await call(session, base_url, admin_key, "POST", "/v1/projects", {"name": project})
    await call(session, base_url, admin_key, "POST", "/v1/users",
               {"username": "load-dev", "projects": {"load": "developer"}})
    await call(session, base_url, admin_key, "POST", "/v1/users",
               {"username": "other-dev", "projects": {"other": "developer"}})
    callers = [await _new_key(session, base_url, admin_key, f"load-{i}", "load-dev", "load")
               for i in range(max(1, clients // 20))]
    limited = await _new_key(session, base_url, admin_key, "limited", "load-dev", "load",
                             {"runs_per_minute": 1})
    other = await _new_key(session, base_url, admin_key, "other", "other-dev", "other")
    upload = {"workflow": WORKFLOW, "inputs": INPUTS, "policy": POLICY}
    for key, name, project in ((callers[0], WORKFLOW_NAME, "load"), (other, OTHER_WORKFLOW, "other")):
        await call(session, base_url, key, "POST", "/v1/workflows", {"name": name, "project": project, **upload})
    other_run = await call(session, base_url, other, "POST", f"/v1/workflows/{OTHER_WORKFLOW}/runs",
                           {"inputs": {"color": 3}}, expect=(202,))
    # The limited key spends its one run of the minute now: every over-limit probe of the load is then a 429.
    await call(session, base_url, limited, "POST", f"/v1/workflows/{WORKFLOW_NAME}/runs", {"inputs": {"color": 4}},
               expect=(202,))
    return Keys(callers, limited, other_run["id"])


# --- the load and the drain ---------------------------------------------------------------------------------


async def _drain(session: aiohttp.ClientSession, base_url: str, key: str, run_ids: set[str], seconds: float
                 ) -> tuple[int, list[str]]:
    """(runs that ended, runs still not ended after ``seconds``): reads every accepted run until it ended."""
    pending = set(run_ids)
    ended = 0
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}
    while pending and time.monotonic() < deadline:
        for run_id in list(pending):
            async with session.get(f"{base_url}/v1/runs/{run_id}", headers=headers) as resp:
                body = await resp.json()
            if resp.status == 200 and body.get("status") in TERMINAL:
                pending.discard(run_id)
                ended += 1
        if pending:
            await asyncio.sleep(0.5)
    return ended, sorted(pending)


async def load(base_url: str, admin_key: str, args: argparse.Namespace) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=args.clients + 8)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        keys = await prepare(session, base_url, admin_key, args.clients)
        tally = Tally()
        rng = random.Random(args.seed)
        clients = [LoadClient(session, base_url, keys.callers[i % len(keys.callers)], keys, tally,
                              random.Random(rng.random())) for i in range(args.clients)]
        deadline = time.perf_counter() + args.duration
        started_at = time.perf_counter()

        async def loop(client: LoadClient) -> None:
            while time.perf_counter() < deadline:
                try:
                    await client.one()
                except (aiohttp.ClientError, TimeoutError):
                    tally.transport_errors += 1

        await asyncio.gather(*(loop(c) for c in clients))
        wall = time.perf_counter() - started_at
        ended, stuck = await _drain(session, base_url, keys.callers[0], tally.accepted, args.drain)
        return {"tally": tally, "wall": wall, "ended": ended, "stuck": stuck}


def report(setup: str, result: dict[str, Any]) -> bool:
    tally: Tally = result["tally"]
    total = sum(tally.statuses.values())
    all_ms = [ms for values in tally.latencies.values() for ms in values]
    print(f"{setup}: {total} requests in {result['wall']:.1f} s = {total / result['wall']:.0f} req/s; "
          f"all requests p50 {percentile(all_ms, 50):.1f} ms p95 {percentile(all_ms, 95):.1f} ms "
          f"p99 {percentile(all_ms, 99):.1f} ms", flush=True)
    for kind in MIX:
        values = tally.latencies.get(kind)
        if not values:
            continue
        by_status = ", ".join(f"{status}: {count}" for (k, status), count in sorted(tally.statuses.items())
                              if k == kind)
        print(f"  {kind:<14} {len(values):6d} req  p50 {percentile(values, 50):7.1f}  p95 "
              f"{percentile(values, 95):7.1f}  p99 {percentile(values, 99):7.1f} ms   status {by_status} "
              f"(expected {EXPECTED[kind]})", flush=True)
    statuses = collections.Counter(status for (_, status), count in tally.statuses.items() for _ in range(count))
    print(f"  by status: {dict(sorted(statuses.items()))}; transport errors {tally.transport_errors}", flush=True)
    # The limited key gets one run a minute back: that many 202s among its probes are its due, not a miss.
    refills = tally.statuses[("over-limit", 202)]
    refills_due = math.ceil(result["wall"] / 60) + 1
    unexpected = sum(count for (kind, status), count in tally.statuses.items() if status != EXPECTED[kind])
    unexpected -= min(refills, refills_due)
    lost = len(result["stuck"])
    print(f"  runs accepted {len(tally.accepted)}, finished {result['ended']}, lost {lost}; "
          f"answered other than expected: {unexpected}", flush=True)
    for line in tally.unexpected[:5]:
        print(f"    {line}", flush=True)
    return lost == 0 and unexpected == 0 and tally.transport_errors == 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per setup")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="seconds after the load for every accepted run to end before it counts as lost")
    parser.add_argument("--seed", type=int, default=12, help="seed of the request mix")
    parser.add_argument("--faults", action="store_true", help="also run bench/faults.py and print its figures")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (redis-postgres only)")
    parser.add_argument("--worker-concurrency", type=int, default=0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=test")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--time-limit", type=float, default=900.0, help="hard stop for the whole bench (s)")
    args = parser.parse_args(argv)
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = sorted(set(args.setups) - set(SETUPS))
    if unknown:
        parser.error(f"unknown setup(s) {unknown}; known: {', '.join(SETUPS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _hard_stop)
    signal.signal(signal.SIGALRM, _hard_stop)
    signal.alarm(max(1, int(args.time_limit)))
    workdir = Path(tempfile.mkdtemp(prefix="comfygate-load-"))
    ok = True
    try:
        for setup in args.setups:
            try:
                with started(setup, args, workdir) as (dep, _pids):
                    result = asyncio.run(load(dep.base_url, dep.admin_key, args))
            except (BenchError, TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
                print(f"{setup}: FAILED: {exc}", flush=True)
                ok = False
                continue
            ok = report(setup, result) and ok
        if args.faults:
            import faults

            ok = faults.main([]) == 0 and ok
    except KeyboardInterrupt as exc:
        print(f"interrupted ({str(exc) or 'Ctrl-C'}); processes stopped", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
