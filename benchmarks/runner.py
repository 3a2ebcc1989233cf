"""A benchmark run: the broker, the ceilings, then the scenarios, each against fresh gateway
processes, all with the same load generator and payloads; returns the run's result document."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from benchmarks import broker, steady
from benchmarks.broker import Offsets
from benchmarks.gateways import Gateways, supports_workers
from benchmarks.loadgen import Request, Step
from benchmarks.machine import git, machine, now_utc, versions
from benchmarks.measure import Load, Profile, build_request, measure
from benchmarks.payloads import (
    Payload,
    RowFactory,
    make_body,
    make_pool,
    pool_size,
    sample_lines,
)
from benchmarks.procs import (
    ROOT,
    Pinning,
    Server,
    child_env,
    cpu_seconds,
    free_port,
    pid_listening_on,
    python_module,
)
from benchmarks.scenarios import (
    NDJSON100,
    ONE_ROW,
    OVERLOAD_FACTOR,
    SCENARIOS,
    Scenario,
    decode_ceiling_payloads,
    evaluate,
    produce_ceiling_key,
    produce_ceiling_modes,
)

CEILINGS = (
    "hello",
    "decode",
    "producer-perf",
    "aiokafka",
    "aiokafka-native",
    "produce",
    "produce-native",
)  # "-native": batches built by the gateway's encoder
RAMP_FRACTIONS = (0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)
QUICK_RAMP_FRACTIONS = (0.5, 0.9, 1.3)


@dataclass
class Options:
    """Everything a run is configured with (the CLI fills it; recorded in the result)."""

    scenarios: list[str]
    duration: float = 20.0
    warmup: float = 1.0
    quick: bool = False
    connections: int | None = None
    rate: float | None = None
    ramp: bool = True
    ramp_step: float = 4.0
    knee_p99_ms: float = 100.0
    overload_duration: float = 30.0
    ceilings: list[str] = field(default_factory=lambda: list(CEILINGS))
    pin: str = "auto"
    kafka_bootstrap: str | None = None
    kafka_port: int = broker.DEFAULT_PORT
    keep_kafka: bool = False
    gateway_args: list[str] = field(default_factory=list)
    profile: str | None = None  # py-spy format (flamegraph, speedscope) or None
    timeout: float = 10.0
    note: str = ""
    out: Path = Path("benchmarks/results")

    @property
    def ramp_fractions(self) -> tuple[float, ...]:
        return QUICK_RAMP_FRACTIONS if self.quick else RAMP_FRACTIONS


class Run:
    """One invocation of the harness."""

    def __init__(self, opts: Options, run_id: str) -> None:
        self.o = opts
        self.run_id = run_id
        self.tag = secrets.token_hex(3)
        self.pinning = Pinning.choose(opts.pin)
        self.key = "bench-" + secrets.token_urlsafe(16)
        self.rows = RowFactory(f"{run_id}-{self.tag}")
        self._pools: dict[tuple[str, int], list[Any]] = {}
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-{run_id}-"))
        self.bootstrap = opts.kafka_bootstrap or f"127.0.0.1:{opts.kafka_port}"
        self.broker_port = int(self.bootstrap.rsplit(":", 1)[1])
        self.broker_pid: int | None = None
        self.offsets = Offsets(self.bootstrap)
        self.ceilings: dict[str, Any] = {}
        self.results: dict[str, Any] = {}
        self.knee: dict[str, Any] | None = None
        self.log: list[str] = []

    def say(self, text: str) -> None:
        print(f"bench: {text}", flush=True)
        self.log.append(text)

    # ---- payloads and requests --------------------------------------------------------------
    def pool(self, payload: Payload, size: int | None = None) -> list[Any]:
        count = size or pool_size(payload)
        k = (payload.key, count)
        if k not in self._pools:
            self._pools[k] = make_pool(payload, self.rows, count)
        return self._pools[k]

    def requests(
        self, payload: Payload, port: int, paths: list[str], wait: bool, size: int | None = None
    ) -> list[Request]:
        headers = self.headers(payload)
        query = "" if payload.fmt == "restproxy" else "?wait=true" if wait else "?wait=false"
        return [
            build_request(
                "127.0.0.1", port, paths[i % len(paths)] + query, headers, b.data, b.rows, b.raw_bytes
            )
            for i, b in enumerate(self.pool(payload, size))
        ]

    def headers(self, payload: Payload) -> dict[str, str]:
        headers = {"X-Api-Key": self.key, "Content-Type": payload.content_type}
        if payload.gzip:
            headers["Content-Encoding"] = "gzip"
        return headers

    def steps(self, seconds: float | None = None) -> list[Step]:
        return [Step(self.o.rate or 0.0, seconds or self.o.duration)]

    def connections(self, s: Scenario) -> int:
        return self.o.connections or s.connections

    def profile(self) -> Profile | None:
        return Profile(self.o.out, self.o.profile) if self.o.profile else None

    # ---- the run ----------------------------------------------------------------------------
    async def execute(self) -> dict[str, Any]:
        started = now_utc()
        host = machine()
        started_broker = False
        if self.o.kafka_bootstrap is None:
            self.say(f"development Kafka on port {self.broker_port} (start or reuse)")
            started_broker = await broker.ensure_broker(self.broker_port)
        kafka_version = await broker.kafka_version(self.broker_port)
        self.broker_pid = pid_listening_on(self.broker_port)
        await self.offsets.start()
        try:
            await self._ceilings()
            for sid in self.o.scenarios:
                self.say(f"scenario {sid}: {SCENARIOS[sid].load}")
                try:
                    self.results[sid] = await self._scenario(SCENARIOS[sid])
                except Exception as exc:  # one broken scenario must not lose the others' figures
                    self.say(f"scenario {sid} errored: {exc}")
                    self.results[sid] = {
                        "id": sid,
                        "error": str(exc),
                        "goal": {"text": SCENARIOS[sid].goal, "status": "error", "checks": []},
                    }
        finally:
            await self.offsets.close()
            troubled = [
                sid
                for sid, r in self.results.items()
                if r.get("goal", {}).get("status") in ("FAILED", "error")
            ]
            if troubled:
                self.say(f"gateway logs of this run kept in {self.work} ({', '.join(troubled)})")
            else:
                shutil.rmtree(self.work, ignore_errors=True)
            if started_broker and not self.o.keep_kafka:
                self.say("stopping the development Kafka this run started")
                await broker.kafka_dev("stop", port=self.broker_port)
        return {
            "run_id": self.run_id,
            "started_at": started.isoformat(),
            "finished_at": now_utc().isoformat(),
            "machine": {**host, "loadavg_end": machine()["loadavg"]},
            "versions": versions(kafka_version),
            "git": git(),
            "config": {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.o).items()},
                "pinning": {"gateway": self.pinning.gateway, "loadgen": self.pinning.loadgen},
                "bootstrap": self.bootstrap,
                "broker_pid_found": self.broker_pid is not None,
            },
            "ceilings": self.ceilings,
            "knee": self.knee,
            "scenarios": self.results,
            "log": self.log,
        }

    # ---- ceilings ---------------------------------------------------------------------------
    async def _server_ceiling(
        self, module: str, payload: Payload, *args: str, wait: bool = False, topics: list[str] | None = None
    ) -> dict[str, Any]:
        """A ceiling server under the scenarios' load; with `topics`, the rows it writes to them
        are counted as a gateway's are."""
        port = free_port()
        argv = python_module(module, str(port), *args)
        server = Server(module, self.pinning.wrap("gateway", argv), port, self.work / f"{module}.log")
        await server.start()
        try:
            await server.wait_listening()
            path = "/api/v1beta2/streams/ceiling/ingest"
            load = Load(
                [("127.0.0.1", port)],
                [self.requests(payload, port, [path], wait)],
                self.o.connections or 64,
                self.steps(),
                self.o.warmup,
                self.o.timeout,
                topics=topics or [],
            )
            m = await measure(
                load,
                servers=[server],
                offsets=self.offsets if topics else None,
                broker_pid=self.broker_pid if topics else None,
                pinning=self.pinning,
                profile=self.profile(),
                label=f"ceiling-{module.rsplit('.', 1)[-1]}",
            )
        finally:
            await server.stop()
        m["payload"] = payload.key
        m["rows_per_s"] = m["rows_delivered_per_s"] if topics else m["rows_accepted_per_s"]
        return m

    async def _produce_ceiling(self, wait: bool, builder: str) -> dict[str, Any]:
        """Ceiling (5) on S1's payload: read, untyped decode, bare batch produce of the lines,
        batches built by `builder` (benchmarks.ceilings.batch)."""
        topic = f"bench-ceiling5-{self.run_id.lower()}-{self.tag}-{secrets.token_hex(2)}"
        await broker.create_topic(self.bootstrap, topic, 3)
        try:
            m = await self._server_ceiling(
                "benchmarks.ceilings.produce",
                NDJSON100,
                self.bootstrap,
                topic,
                "3",
                builder,
                wait=wait,
                topics=[topic],
            )
        finally:
            await broker.delete_topics(self.bootstrap, [topic])
        m["wait"] = wait
        m["builder"] = builder
        m["topic_partitions"] = 3
        return m

    async def _ceilings(self) -> None:
        wanted = self.o.ceilings
        if "hello" in wanted:
            self.say("ceiling (1): aiohttp + uvloop hello world")
            m = await self._server_ceiling("benchmarks.ceilings.hello", ONE_ROW)
            m["requests_per_s"] = m["ok_requests_per_s"]
            self.ceilings["hello"] = m
        if "decode" in wanted:
            self.ceilings["decode"] = {}
            for payload in decode_ceiling_payloads(self.o.scenarios):
                self.say(f"ceiling (2): read + untyped msgspec decode, {payload.key}")
                self.ceilings["decode"][payload.key] = await self._server_ceiling(
                    "benchmarks.ceilings.decode", payload
                )
        if "producer-perf" in wanted:
            self.say("ceiling (3): Kafka ProducerPerformance (Java, acks=all)")
            self.ceilings["producer_perf"] = await self._kafka_ceiling(self._producer_perf)
        for name, builder in (("aiokafka", "aiokafka"), ("aiokafka-native", "native")):
            if name in wanted:
                self.say(f"ceiling (4): bare aiokafka batch-API producer loop, {builder} batches")
                self.ceilings[name.replace("-", "_")] = await self._kafka_ceiling(
                    lambda topic, b=builder: self._aiokafka(topic, b)
                )
        builders = [
            (n.replace("-", "_"), b)
            for n, b in (("produce", "aiokafka"), ("produce-native", "native"))
            if n in wanted
        ]
        for section, _ in builders:
            self.ceilings[section] = {}
        for wait in produce_ceiling_modes(self.o.scenarios):  # both builders in turn, per mode
            key = produce_ceiling_key(wait)
            for section, builder in builders:
                self.say(f"ceiling (5): read + untyped decode + bare batch produce, {key}, {builder} batches")
                self.ceilings[section][key] = await self._produce_ceiling(wait, builder)

    async def _kafka_ceiling(self, body: Any) -> dict[str, Any]:
        topic = f"bench-ceiling-{self.run_id.lower()}-{self.tag}-{secrets.token_hex(2)}"
        await broker.create_topic(self.bootstrap, topic, 3)
        try:
            before = await self.offsets.total([topic])
            b0 = cpu_seconds(self.broker_pid) if self.broker_pid else None
            m: dict[str, Any] = await body(topic)
            b1 = cpu_seconds(self.broker_pid) if self.broker_pid else None
            total, _ = await self.offsets.wait_for([topic], before + m["records"], 30)
            m["delivered"] = total - before
            m["status"] = "ok" if m["delivered"] >= m["records"] else "FAILED"
            m["broker_cpu_s"] = (b1 - b0) if b0 is not None and b1 is not None else None
            m["topic_partitions"] = 3
            return m
        finally:
            await broker.delete_topics(self.bootstrap, [topic])

    async def _producer_perf(self, topic: str) -> dict[str, Any]:
        payload_file = self.work / "rows.txt"
        lines = sample_lines(self.rows, 20_000)
        payload_file.write_bytes(b"\n".join(lines))
        records = 200_000 if self.o.quick else int(max(500_000, 150_000 * self.o.duration))
        m = await broker.producer_perf(
            self.broker_port, self.bootstrap, topic, records, payload_file, self.pinning
        )
        m["value_bytes_mean"] = sum(map(len, lines)) / len(lines)
        return m

    async def _aiokafka(self, topic: str, builder: str) -> dict[str, Any]:
        argv = self.pinning.wrap(
            "gateway",
            python_module(
                "benchmarks.ceilings.producer",
                "--bootstrap",
                self.bootstrap,
                "--topic",
                topic,
                "--partitions",
                "3",
                "--seconds",
                str(self.o.duration),
                "--builder",
                builder,
            ),
        )
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(), cwd=ROOT
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"aiokafka ceiling failed: {err.decode()[-2000:]}")
        result: dict[str, Any] = msgspec.json.decode(out.strip().splitlines()[-1])
        return result

    # ---- scenarios --------------------------------------------------------------------------
    async def _scenario(self, s: Scenario) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": s.id,
            "load": s.load,
            "config": {
                "payload": s.payload.key,
                "wait": s.wait,
                "connections": self.connections(s),
                "streams": s.streams,
                "workers": s.workers,
                "mode": "closed loop",
            },
        }
        if s.overload:
            knee = await self._knee()
            rate = OVERLOAD_FACTOR * knee["knee_requests_per_s"]
            out["config"].update(mode="open loop", rate=rate, knee=knee["knee_requests_per_s"])
            steps = [Step(rate, self.o.overload_duration)]
        else:
            steps = self.steps()
            if self.o.rate:
                out["config"].update(mode="open loop", rate=self.o.rate)
        pinning = self.pinning
        count, extra = 1, []
        if s.workers > 1:
            pinning = Pinning(None, None)  # the workers (or processes) may use every core
            if supports_workers():
                out["config"]["gateway_mode"] = f"--workers {s.workers}"
                extra = ["--workers", str(s.workers)]
            else:
                out["config"]["gateway_mode"] = (
                    f"{s.workers} gateway processes on {s.workers} ports (serve has no --workers)"
                )
                count = s.workers
        out["config"]["pinning"] = {"gateway": pinning.gateway, "loadgen": pinning.loadgen}
        names = [f"bench_{self.tag}_{s.id.lower()}_{i}" for i in range(s.streams)]
        gw = Gateways(self.bootstrap, self.work, self.key, pinning, self.o.gateway_args, f"{s.id}-{self.tag}")
        try:
            await gw.start(count, extra)
            topics = await gw.create_streams(names)
            paths = (
                [f"/topics/{n}" for n in names]
                if s.route == "restproxy"
                else [f"/api/v1beta2/streams/{n}/ingest" for n in names]
            )
            if s.streams > 1:
                out["config"]["steady_state"] = await self._steady(gw, s, paths, topics)
            size = max(pool_size(s.payload), s.streams)
            load = Load(
                [("127.0.0.1", srv.port) for srv in gw.servers],
                [self.requests(s.payload, srv.port, paths, s.wait, size) for srv in gw.servers],
                self.connections(s),
                steps,
                self.o.warmup,
                self.o.timeout,
                topics=topics,
            )
            m = await measure(
                load,
                servers=gw.servers,
                offsets=self.offsets,
                broker_pid=self.broker_pid,
                pinning=pinning,
                profile=self.profile(),
                label=f"{self.run_id}-{s.id}",
            )
            out["measurement"] = m
            if s.id == "S1" and self.o.ramp and m["status"] == "ok":
                self.knee = await self._ramp(gw, load, m["ok_requests_per_s"], s.payload.rows)
                out["ramp"] = self.knee
            if s.companion is not None:
                out["companion"] = await self._companion(gw, s, steps)
            out["gateway_counters"] = await gw.counters()
        finally:
            codes = await self._stop(gw)
        out["gateway_exit_codes"] = codes
        if any(c != 0 for c in codes):
            m = out.get("measurement") or {}
            m["status"] = "FAILED"
            m["failure"] = (m.get("failure") or "") + f" gateway exit codes {codes}"
            m["rows_delivered_per_s"] = None
        self._derive(s, out)
        out["goal"] = evaluate(s, out.get("measurement", {}), self.ceilings, self.results)
        return out

    async def _steady(self, gw: Gateways, s: Scenario, paths: list[str], topics: list[str]) -> dict[str, Any]:
        """Many streams: two delivered batches on every partition, then a quiet broker
        (benchmarks.steady says why)."""
        body = make_body(s.payload, [self.rows.row() for _ in range(s.payload.rows)]).data
        started = time.monotonic()
        rounds = 2 * await self.offsets.max_partitions(topics)
        known = time.monotonic() - started
        primed = 0.0
        for srv in gw.servers:
            primed += await steady.prime(
                steady.Priming(f"http://127.0.0.1:{srv.port}", paths, self.headers(s.payload), body, rounds)
            )
        idle = await steady.broker_idle(self.broker_pid)
        self.say(
            f"{s.id}: primed {len(paths)} streams x {rounds} requests in {primed:.1f} s, "
            f"then waited {idle['broker_idle_wait_s']:.1f} s for an idle broker"
            f"{'' if idle['broker_settled'] else ' (it did NOT settle)'}"
        )
        return {
            "topics_known_s": round(known, 2),
            "primed_s": round(primed, 2),
            "priming_requests_per_stream": rounds,
            **idle,
        }

    async def _stop(self, gw: Gateways) -> list[int | None]:
        """Stop the gateways (each drains), then delete their topics: a run leaves no data behind."""
        codes = await gw.stop()
        try:
            await broker.delete_topics(self.bootstrap, gw.topics)
        except Exception as exc:  # cleanup must not hide the figures
            self.say(f"could not delete topics {gw.topics[:3]}…: {exc}")
        return codes

    async def _companion(self, gw: Gateways, s: Scenario, steps: list[Step]) -> dict[str, Any]:
        assert s.companion is not None
        name = f"bench_{self.tag}_{s.id.lower()}_plain"
        topics = await gw.create_streams([name])
        path = f"/api/v1beta2/streams/{name}/ingest"
        load = Load(
            [("127.0.0.1", gw.servers[0].port)],
            [self.requests(s.companion, gw.servers[0].port, [path], s.wait)],
            self.connections(s),
            steps,
            self.o.warmup,
            self.o.timeout,
            topics=topics,
        )
        m = await measure(
            load, servers=gw.servers, offsets=self.offsets, broker_pid=self.broker_pid, pinning=gw.pinning
        )
        m["payload"] = s.companion.key
        return m

    async def _ramp(self, gw: Gateways, base: Load, closed_rps: float, rows: int) -> dict[str, Any]:
        rates = [round(closed_rps * f, 1) for f in self.o.ramp_fractions]
        step_s = self.o.ramp_step
        self.say(f"ramp: open loop {', '.join(f'{r:g}' for r in rates)} requests/s, {step_s:g} s each")
        load = Load(
            base.targets,
            base.requests,
            base.connections,
            [Step(r, step_s) for r in rates],
            self.o.warmup,
            self.o.timeout,
            self.o.knee_p99_ms,
            stop_at_knee=True,
            topics=base.topics,
        )
        m = await measure(
            load, servers=gw.servers, offsets=self.offsets, broker_pid=self.broker_pid, pinning=self.pinning
        )
        passed = [st["offered_rate"] for st in m["steps"] if st.get("passed")]
        knee = max(passed) if passed else None
        return {
            "closed_loop_requests_per_s": closed_rps,
            "knee_requests_per_s": knee,
            "knee_rows_per_s": knee * rows if knee else None,
            "rows_per_request": rows,
            "knee_at_top": bool(passed) and len(passed) == len(rates),
            "knee_rule": f"achieved ≥ 95% of offered, ≤ 1% non-2xx, p99 ≤ {self.o.knee_p99_ms:g} ms",
            "status": m["status"],
            "failure": m["failure"],
            "steps": m["steps"],
        }

    async def _knee(self) -> dict[str, Any]:
        """S1's knee: from this run's S1 ramp, else measured now on an S1 gateway."""
        if self.knee and self.knee.get("knee_requests_per_s"):
            return self.knee
        self.say("S6 needs S1's knee: measuring it (S1 closed loop, then the ramp)")
        s = SCENARIOS["S1"]
        gw = Gateways(
            self.bootstrap, self.work, self.key, self.pinning, self.o.gateway_args, f"knee-{self.tag}"
        )
        name = f"bench_{self.tag}_knee"
        try:
            await gw.start(1)
            topics = await gw.create_streams([name])
            path = f"/api/v1beta2/streams/{name}/ingest"
            port = gw.servers[0].port
            load = Load(
                [("127.0.0.1", port)],
                [self.requests(NDJSON100, port, [path], False)],
                self.connections(s),
                [Step(0.0, min(self.o.duration, 10.0))],
                self.o.warmup,
                self.o.timeout,
                topics=topics,
            )
            m = await measure(
                load,
                servers=gw.servers,
                offsets=self.offsets,
                broker_pid=self.broker_pid,
                pinning=self.pinning,
            )
            knee = await self._ramp(gw, load, m["ok_requests_per_s"], NDJSON100.rows)
        finally:
            await self._stop(gw)
        if not knee.get("knee_requests_per_s"):
            # no step passed: the lowest offered rate already overloads it; use half the closed loop
            knee["knee_requests_per_s"] = knee["closed_loop_requests_per_s"] / 2
            knee["knee_note"] = "no ramp step passed; using half the closed-loop rate"
        self.knee = knee
        return knee

    def _derive(self, s: Scenario, out: dict[str, Any]) -> None:
        """Ratios to the ceilings, and the per-scenario extras (S5 decompression, S8 cores)."""
        m = out.get("measurement")
        if not m:
            return
        decode = self.ceilings.get("decode", {})
        rows = m.get("rows_delivered_per_s")
        c2 = decode.get(s.payload.key, {}).get("rows_per_s")
        c1 = self.ceilings.get("hello", {}).get("requests_per_s")
        ratios: dict[str, float | None] = {
            "rows_vs_ceiling_2": rows / c2 if rows is not None and c2 else None,
            "requests_vs_ceiling_1": (m["ok_requests_per_s"] / c1 if c1 and m["status"] == "ok" else None),
        }
        # Per CPU-second instead of per wall-second: the ceiling's CPU per row over the gateway's.
        # Less sensitive to what other users of the machine did during either phase.
        gw_cpu = m.get("gateway_cpu_s_per_million_rows")
        c2_cpu = decode.get(s.payload.key, {}).get("gateway_cpu_s_per_million_rows")
        c1_cpu = self.ceilings.get("hello", {}).get("gateway_cpu_s_per_million_rows")
        ok = m["status"] == "ok" and gw_cpu
        ratios["cpu_efficiency_vs_ceiling_2"] = c2_cpu / gw_cpu if ok and c2_cpu else None
        ratios["cpu_efficiency_vs_ceiling_1"] = (
            c1_cpu / gw_cpu if ok and c1_cpu and s.payload.rows == 1 else None
        )
        for name in ("producer_perf", "aiokafka"):
            c = self.ceilings.get(name, {}).get("records_per_s")
            ratios[f"rows_vs_{name}"] = rows / c if rows is not None and c else None
        if s.id in ("S1", "S2"):  # ceiling (5): the whole job through the same stack, unvalidated
            c5 = self.ceilings.get("produce", {}).get(produce_ceiling_key(s.wait), {})
            c5_rows, c5_cpu = c5.get("rows_per_s"), c5.get("gateway_cpu_s_per_million_rows")
            ratios["rows_vs_ceiling_5"] = rows / c5_rows if rows is not None and c5_rows else None
            ratios["cpu_efficiency_vs_ceiling_5"] = c5_cpu / gw_cpu if ok and c5_cpu else None
        s1 = self.results.get("S1", {}).get("measurement", {}).get("rows_delivered_per_s")
        if s.id != "S1":
            ratios["rows_vs_S1"] = rows / s1 if rows is not None and s1 else None
        out["ratios"] = ratios
        comp = out.get("companion")
        if s.id == "S5" and comp:
            gz = m.get("gateway_cpu_s_per_million_rows")
            plain = comp.get("gateway_cpu_s_per_million_rows")
            out["decompression"] = {
                "gzip_cpu_s_per_million_rows": gz,
                "plain_cpu_s_per_million_rows": plain,
                "extra_cpu_s_per_million_rows": gz - plain if gz and plain else None,
                "extra_share": (gz - plain) / gz if gz and plain else None,
                "gzip_rows_per_s": rows,
                "plain_rows_per_s": comp.get("rows_delivered_per_s"),
                "wire_mb_per_s_gzip": m["mb_in_per_s"],
                "compression_ratio": (self.pool(s.payload)[0].raw_bytes / len(self.pool(s.payload)[0].data)),
            }
        if s.id == "S8":
            out["cores"] = {
                "gateway_cpu_s": m["gateway_cpu_s"],
                "broker_cpu_s": m["broker_cpu_s"],
                "loadgen_cpu_s": m["loadgen_cpu_s"],
                "harness_cpu_s": m["harness_cpu_s"],
                "other_cpu_s": m["other_cpu_s"],
                "machine_busy_cpu_s": m["machine_busy_cpu_s"],
                "cores_available_s": (os.cpu_count() or 1) * m["wall_s"],
                "scaling_vs_S1": ratios.get("rows_vs_S1"),
            }
