"""What comfygate adds around a trivial run.

The workflow is EmptyImage 64x64 -> SaveImage, with EmptyImage's ``color`` exposed as the input ``color`` and
a different colour sent on every run, under a policy that runs only the integrity checks (see README.md).
For each setup it starts real ``comfygate`` processes on loopback (tests/deployment.py) and measures, from
the client's side, submit -> finished with the output bytes in hand:

    POST /v1/workflows/<name>/runs?wait=30  (answers 200 with the finished run)
    GET  /v1/runs/<id>/outputs/0            (the PNG bytes)

* latency p50/p95/p99 over ``--runs`` sequential runs (after ``--warmup`` runs that are not counted);
* runs/s with ``--concurrency`` clients, each looping submit -> wait -> fetch, for ``--duration`` seconds or
  until ``--concurrent-runs`` runs have finished;
* the same two figures for a bare HTTP round trip to the same server (``GET /healthz``), as the baseline.

Setups: ``embedded`` (SQLite, filesystem broker, local files, ``serve --worker``) and ``redis-postgres``
(Redis broker, a fresh PostgreSQL database, local files, ``serve --no-worker`` plus one ``comfygate worker``).

Run it as ``.venv/bin/python bench/overhead.py``. It only talks to 127.0.0.1, stops by itself (each phase is
bounded and ``--time-limit`` is a hard stop), and always stops the processes it started and drops the
database it created, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from deployment_loader import load_deployment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WORKFLOW_NAME = "bench-overhead"
WORKFLOW = {
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage",
          "inputs": {"images": ["1", 0], "filename_prefix": "bench/overhead"}},
}
INPUTS = {"color": {"node": "1", "input": "color"}}
# Integrity checks only (the v2 policy format, README "The quality gate"): decode and finite reject; blank and
# noise run on every output but only send it to review below a threshold no image reaches (-1 and 0 are the
# bottoms of their ranges), since a solid colour is by design "blank" and would otherwise be rejected.
# Everything else is off: no duplicates (all colours make the same perceptual hash), no models, no prompt input.
POLICY = {
    "checks": {
        "decode": "reject",
        "finite": "reject",
        "blank": {"review": 0.0},
        "noise": {"review": -1.0},
        "duplicate": "off",
        "clip_alignment": "off",
        "aesthetic": "off",
        "nsfw": "off",
        "blur": "off",
        "colour_entropy": "off",
    },
    "prompt_input": None,
}
EXPECTED_CHECKS = ("decode", "finite", "blank", "noise")
SETUPS = ("embedded", "redis-postgres")
WAIT_SECONDS = 30




deployment = load_deployment()


class BenchError(RuntimeError):
    """A run did not end as it must (succeeded, gated, stored, bytes served); the message says how."""


# --- figures -----------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Sample:
    total_s: float
    submit_s: float  # POST ...runs?wait=30 until the finished run is in hand
    fetch_s: float  # GET the output bytes
    timings: dict[str, float]
    # Wall-clock phases in ms, from the client's clock and the run's timestamps (same host, same clock):
    # sent -> queued_at -> started_at -> finished_at -> answer in hand.
    phases: dict[str, float] = field(default_factory=dict)


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.removesuffix("Z")).replace(tzinfo=UTC).timestamp()


def _phases(sent: float, answered: float, body: dict[str, Any]) -> dict[str, float]:
    queued, started, finished = (_epoch(body.get(k)) for k in ("queued_at", "started_at", "finished_at"))
    if queued is None or started is None or finished is None:
        return {}
    return {"sent->queued_at": (queued - sent) * 1e3, "queued_at->started_at": (started - queued) * 1e3,
            "started_at->finished_at": (finished - started) * 1e3,
            "finished_at->answer": (answered - finished) * 1e3}


@dataclass
class Figures:
    latencies_ms: list[float]
    concurrent_count: int
    concurrent_s: float
    errors: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    host_busy_s: float = float("nan")
    all_ok: int = 0  # concurrent phase: every successful run, also those that ended after the window
    all_wall_s: float = 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    @property
    def rate(self) -> float:
        return self.concurrent_count / self.concurrent_s if self.concurrent_s > 0 else 0.0


def _line(label: str, figures: Figures, concurrency: int, unit: str) -> str:
    return (f"{label:<16} p50 {figures.pct(50):6.1f} ms  p95 {figures.pct(95):6.1f} ms  "
            f"p99 {figures.pct(99):6.1f} ms  {concurrency} clients: {figures.rate:7.1f} {unit}  "
            f"({len(figures.latencies_ms)} sequential, {figures.concurrent_count} concurrent)"
            + (f"  {len(figures.errors)} ERRORS" if figures.errors else ""))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _detail(figures: Figures) -> list[str]:
    samples = figures.samples
    if not samples:
        return []
    lines = ["    client, sequential runs (p50 ms): "
             f"total {percentile([s.total_s * 1e3 for s in samples], 50):.2f}  "
             f"POST?wait {percentile([s.submit_s * 1e3 for s in samples], 50):.2f}  "
             f"GET bytes {percentile([s.fetch_s * 1e3 for s in samples], 50):.2f}"]
    phases = list(samples[0].phases)
    if phases:
        lines.append("    wall phases, sequential runs (p50 ms): " + "  ".join(
            f"{k} {percentile([s.phases[k] for s in samples if s.phases], 50):.2f}" for k in phases))
    # Numbers only: timings also hold per-node maps and lists (cached nodes, model loads).
    keys = sorted({k for s in samples for k, v in s.timings.items() if isinstance(v, int | float)})
    if keys:
        parts = [f"{k.removesuffix('_ms')} {percentile([s.timings[k] for s in samples if k in s.timings], 50):.2f}"
                 for k in keys]
        lines.append("    run timings, sequential runs (p50 ms): " + "  ".join(parts))
    if figures.cpu_s and figures.all_ok:
        parts = [f"{role} {seconds / figures.all_ok * 1e3:.2f}"
                 for role, seconds in figures.cpu_s.items()]
        ours = sum(figures.cpu_s.values())
        lines.append("    CPU per run, concurrent phase (ms): " + "  ".join(parts)
                     + f"  ({figures.all_ok} runs in {figures.all_wall_s:.1f} s wall on {os.cpu_count()} cores;"
                     f" host busy {figures.host_busy_s:.1f} CPU-s, not this bench {figures.host_busy_s - ours:.1f})")
    return lines


# --- CPU accounting of the processes under test -----------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _postgres_backends(database: str) -> list[int]:
    """PostgreSQL backend processes serving ``database`` (their command line names it)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if f" {database} " in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(proc.name))
    return found


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            found[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return found


def _host_busy_seconds() -> float:
    """CPU seconds all cores of this host spent not idle (user+nice+system+irq+softirq+steal), from /proc/stat."""
    with contextlib.suppress(OSError, ValueError):
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings; a process that started in between counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


# --- the client ---------------------------------------------------------------------------------------------


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str) -> None:
        self.session = session
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {key}"}
        self._colour = 0

    def next_colour(self) -> int:
        # A different 24-bit colour each run (a multiplicative step walks all 2^24 values before repeating).
        self._colour = (self._colour + 0x9E3779) & 0xFFFFFF
        return self._colour

    async def push_workflow(self) -> None:
        body = {"name": WORKFLOW_NAME, "workflow": WORKFLOW, "inputs": INPUTS, "policy": POLICY}
        async with self.session.post(self.base_url + "/v1/workflows", json=body, headers=self.headers) as resp:
            if resp.status not in (200, 201):
                raise BenchError(f"workflow upload answered {resp.status}: {await resp.text()}")

    async def run(self, colour: int) -> tuple[Sample, bytes]:
        url = f"{self.base_url}/v1/workflows/{WORKFLOW_NAME}/runs?wait={WAIT_SECONDS}"
        sent = time.time()
        start = time.perf_counter()
        async with self.session.post(url, json={"inputs": {"color": colour}}, headers=self.headers) as resp:
            body = await resp.json()
            status = resp.status
        submitted = time.perf_counter()
        answered = time.time()
        if status != 200 or body.get("status") != "succeeded":
            raise BenchError(f"run answered HTTP {status}, status {body.get('status')!r}: "
                             f"{str(body)[:300]}")
        output = body["outputs"][0]
        async with self.session.get(self.base_url + output["url"], headers=self.headers) as resp:
            data = await resp.read()
            fetch_status = resp.status
        end = time.perf_counter()
        if fetch_status != 200 or not data.startswith(PNG_MAGIC):
            raise BenchError(f"output of run {body['id']} answered {fetch_status} ({len(data)} bytes)")
        checks = {c["name"]: c["status"] for c in output["verdict"]["checks"]}
        missing = [name for name in EXPECTED_CHECKS if checks.get(name) in (None, "not_run")]
        if missing or not output["released"]:
            raise BenchError(f"run {body['id']} was not gated as expected: checks {checks}, "
                             f"released {output['released']}")
        return Sample(end - start, submitted - start, end - submitted, body.get("timings") or {},
                      _phases(sent, answered, body)), data

    async def healthz(self) -> None:
        async with self.session.get(self.base_url + "/healthz") as resp:
            await resp.read()
            if resp.status != 200:
                raise BenchError(f"/healthz answered {resp.status}")


def _check_colour(data: bytes, colour: int) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        pixel = image.convert("RGB").getpixel((0, 0))
        size = image.size
    expected = ((colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF)
    if pixel != expected or size != (64, 64):
        raise BenchError(f"output is {size} with pixel {pixel}; expected 64x64 of {expected}")


async def _concurrent(clients: int, duration: float, max_count: int | None, one,  # type: ignore[no-untyped-def]
                      errors: list[str], totals: list[float] | None = None) -> tuple[int, float]:
    """``clients`` loops calling ``one()`` until ``duration`` s passed or ``max_count`` calls were made.

    Returns (calls that succeeded, seconds). With a duration, only calls that ended inside the window count
    and the seconds are the window's, so one slow straggler (a lost run waits out its ?wait) does not skew
    the rate; with ``max_count`` it is every successful call over the time until the last one ended.
    """
    started = time.perf_counter()
    deadline = started + duration
    ok = in_window = issued = 0

    async def loop() -> None:
        nonlocal ok, in_window, issued
        while (issued < max_count) if max_count is not None else (time.perf_counter() < deadline):
            issued += 1
            try:
                await one()
            except (BenchError, aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            ok += 1
            if time.perf_counter() <= deadline:
                in_window += 1

    await asyncio.gather(*(loop() for _ in range(clients)))
    if totals is not None:
        totals[:] = [ok, time.perf_counter() - started]  # every success, and the wall until the last ended
    if max_count is not None:
        return ok, time.perf_counter() - started
    return in_window, duration


@dataclass
class Options:
    runs: int
    warmup: int
    concurrency: int
    duration: float
    concurrent_runs: int | None
    baseline_duration: float


async def _checked_runs(client: Client, count: int, errors: list[str], label: str = "") -> list[Sample]:
    """``count`` sequential runs, each checked to have stored the colour sent; failures go to ``errors``."""
    samples = []
    for _ in range(count):
        colour = client.next_colour()
        try:
            sample, data = await client.run(colour)
            _check_colour(data, colour)
        except (BenchError, aiohttp.ClientError, TimeoutError) as exc:
            errors.append(f"{label}{type(exc).__name__}: {exc}")
            continue
        samples.append(sample)
    return samples


async def measure(base_url: str, key: str, options: Options, pids: Callable[[], dict[str, list[int]]]
                  ) -> tuple[Figures, Figures]:
    timeout = aiohttp.ClientTimeout(total=WAIT_SECONDS + 15)
    connector = aiohttp.TCPConnector(limit=options.concurrency + 4)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = Client(session, base_url, key)
        await client.push_workflow()

        # Warm-up: not counted; also checks end to end that the colour sent is the colour stored.
        errors: list[str] = []
        await _checked_runs(client, options.warmup, errors, "warm-up: ")

        # Baseline: a bare HTTP round trip to the same server.
        base_lat = []
        for _ in range(options.runs):
            start = time.perf_counter()
            await client.healthz()
            base_lat.append((time.perf_counter() - start) * 1e3)
        baseline = Figures(base_lat, 0, 0.0)
        baseline.concurrent_count, baseline.concurrent_s = await _concurrent(
            options.concurrency, options.baseline_duration, None, client.healthz, baseline.errors)

        # Sequential runs. A run that does not end as it must is counted as an error, not as a latency.
        samples = await _checked_runs(client, options.runs, errors)
        if not samples:
            raise BenchError(f"no sequential run succeeded; first error: {errors[0]}")
        runs = Figures([s.total_s * 1e3 for s in samples], 0, 0.0, errors=errors, samples=samples)

        # Concurrent clients.
        async def one() -> None:
            await client.run(client.next_colour())

        # role -> pids, looked up now (a restarted embedded worker has a new pid); each process counted alone.
        cpu_before = {role: _cpu_by_pid(p) for role, p in pids().items()}
        client_before = time.process_time()
        host_before = _host_busy_seconds()
        totals: list[float] = []
        runs.concurrent_count, runs.concurrent_s = await _concurrent(
            options.concurrency, options.duration, options.concurrent_runs, one, runs.errors, totals)
        runs.all_ok, runs.all_wall_s = int(totals[0]), totals[1]
        runs.cpu_s = {role: _cpu_used(cpu_before.get(role, {}), _cpu_by_pid(p)) for role, p in pids().items()}
        runs.cpu_s["client"] = time.process_time() - client_before
        runs.host_busy_s = _host_busy_seconds() - host_before
        return runs, baseline


# --- setups ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _postgres_database(admin_dsn: str) -> Iterator[str]:
    import psycopg

    name = f"comfygate_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _forget_redis_queue(redis_url: str, queue: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        # kombu names its binding keys _kombu.binding.<queue> or _kombu.binding_permanent.<queue>.
        client.delete(queue, *client.scan_iter(match=f"_kombu.binding*.{queue}"))
    finally:
        client.close()


@contextlib.contextmanager
def started(setup: str, args: argparse.Namespace, workdir: Path
            ) -> Iterator[tuple[Any, Callable[[], dict[str, list[int]]]]]:
    """The processes of one setup, running; yields (Deployment, a function giving {role: [pids]} now);
    always stops them."""
    env: dict[str, str] = {}
    if args.worker_concurrency:
        env["COMFYGATE_WORKER_CONCURRENCY"] = str(args.worker_concurrency)
    data_dir = workdir / setup
    with contextlib.ExitStack() as stack:
        if setup == "redis-postgres":
            database = stack.enter_context(_postgres_database(args.postgres_dsn))
            env.update({
                "COMFYGATE_DATABASE_URL": f"{args.postgres_url}/{database}",
                "COMFYGATE_BROKER_URL": args.redis_url,
                "COMFYGATE_STORAGE_URL": (data_dir / "files").as_uri(),
                "COMFYGATE_EMBEDDED_WORKER": "false",
            })
        env["COMFYGATE_POOL"] = f"bench-{uuid.uuid4().hex[:8]}"
        dep = deployment.Deployment(data_dir, env_overrides=env)
        if setup == "redis-postgres":
            stack.callback(_forget_redis_queue, args.redis_url, f"pool.{env['COMFYGATE_POOL']}")
        stack.callback(dep.stop)
        dep.migrate()
        if setup == "embedded":
            dep.start_server(with_worker=True)
            assert dep.server is not None
            server_pid = dep.server.pid

            def pids() -> dict[str, list[int]]:
                # The embedded worker is the server's child process.
                return {"server": [server_pid], "worker": _children(server_pid)}
        else:
            dep.start_server(with_worker=False)
            assert dep.server is not None
            for _ in range(args.workers):
                dep.start_worker()
            fixed = {"server": [dep.server.pid], "worker": [w.pid for w in dep.workers]}

            def pids() -> dict[str, list[int]]:
                # Backends of this bench's database, when they run on this host (they do on loopback).
                return {**fixed, "postgres": _postgres_backends(database)}
        if not dep.admin_key:
            raise BenchError(f"no admin API key in the server log:\n{dep.log('server.log')}")
        yield dep, pids


async def _profile(pids: dict[str, list[int]], out_dir: Path, setup: str, seconds: float) -> list[Any]:
    """Start ``py-spy record`` on every process under test for the concurrent phase."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    procs = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for role, roots in pids.items():
        for pid in roots:
            out = out_dir / f"{setup}-{role}-{pid}.txt"
            procs.append(await asyncio.create_subprocess_exec(
                py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "250",
                "--format", "raw", "--threads", "--gil", "--output", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
    return procs


def run_setup(setup: str, args: argparse.Namespace, options: Options, workdir: Path) -> tuple[Figures, Figures]:
    with started(setup, args, workdir) as (dep, pids):
        async def main() -> tuple[Figures, Figures]:
            profilers: list[Any] = []
            if args.py_spy:
                # Started now, it samples the whole measurement; the concurrent phase dominates its tail.
                profilers = await _profile(pids(), Path(args.py_spy), setup, args.py_spy_seconds)
            try:
                return await measure(dep.base_url, dep.admin_key, options, pids)
            finally:
                for proc in profilers:
                    with contextlib.suppress(TimeoutError, ProcessLookupError):
                        await asyncio.wait_for(proc.wait(), timeout=args.py_spy_seconds + 10)
                    with contextlib.suppress(ProcessLookupError):
                        if proc.returncode is None:
                            proc.kill()
                            await proc.wait()

        return asyncio.run(main())


# --- command line -------------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--runs", type=int, default=200, help="sequential runs measured")
    parser.add_argument("--warmup", type=int, default=20, help="runs before measuring, not counted")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds the concurrent clients keep starting runs")
    parser.add_argument("--concurrent-runs", type=int, default=None,
                        help="instead of --duration: stop after this many concurrent runs")
    parser.add_argument("--baseline-duration", type=float, default=3.0,
                        help="seconds of concurrent GET /healthz for the baseline")
    parser.add_argument("--worker-concurrency", type=int, default=0,
                        help="COMFYGATE_WORKER_CONCURRENCY for the worker(s); 0 keeps comfygate's default")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (redis-postgres only)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=test",
                        help="where the temporary database is created and dropped")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="SQLAlchemy URL of the same server, without the database name")
    parser.add_argument("--detail", action="store_true",
                        help="also print the client-side split, the runs' own timings and CPU per run")
    parser.add_argument("--py-spy", metavar="DIR", default="",
                        help="record py-spy raw profiles of the server and worker(s) into DIR")
    parser.add_argument("--py-spy-seconds", type=float, default=20.0)
    parser.add_argument("--keep", action="store_true", help="keep the data dirs (logs) after the run")
    parser.add_argument("--time-limit", type=float, default=600.0, help="hard stop for the whole bench (s)")
    args = parser.parse_args(argv)
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = sorted(set(args.setups) - set(SETUPS))
    if unknown:
        parser.error(f"unknown setup(s) {unknown}; known: {', '.join(SETUPS)}")
    if args.runs < 1 or args.concurrency < 1:
        parser.error("--runs and --concurrency must be at least 1")
    return args


def _hard_stop(signum: int, _frame: object) -> None:
    # Turned into an exception so that the finally blocks stop the processes and drop the database.
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    options = Options(args.runs, args.warmup, args.concurrency, args.duration, args.concurrent_runs,
                      args.baseline_duration)
    signal.signal(signal.SIGTERM, _hard_stop)
    signal.signal(signal.SIGALRM, _hard_stop)
    signal.alarm(max(1, int(args.time_limit)))
    workdir = Path(tempfile.mkdtemp(prefix="comfygate-bench-"))
    failed = False
    try:
        for setup in args.setups:
            try:
                runs, baseline = run_setup(setup, args, options, workdir)
            except (BenchError, TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
                print(f"{setup:<16} FAILED: {exc}", flush=True)
                failed = True
                continue
            print(_line(setup, runs, args.concurrency, "runs/s"), flush=True)
            print(_line("  bare /healthz", baseline, args.concurrency, "req/s")
                  + f"  -> run/bare: p50 x{runs.pct(50) / baseline.pct(50):.0f}, "
                  f"throughput /{baseline.rate / runs.rate if runs.rate else float('inf'):.0f}", flush=True)
            if args.detail:
                print("\n".join(_detail(runs)), flush=True)
            for label, figures in ((setup, runs), ("/healthz", baseline)):
                if figures.errors:
                    failed = True
                    print(f"  {label}: {len(figures.errors)} ERRORS; first: {figures.errors[0][:400]}", flush=True)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({str(exc) or 'Ctrl-C'}); processes stopped, temporary database dropped", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        if args.keep:
            print(f"data dirs and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
