"""`serve --workers N`: a supervising parent and N worker processes sharing one port.

Each worker is a whole gateway (own queues, own Kafka producer) that binds the port with
SO_REUSEPORT, so the kernel spreads connections over the workers. The parent serves nothing: it
starts the workers, restarts one that dies (with backoff), and on SIGTERM/SIGINT forwards SIGTERM
to every worker, waits for each to drain and exits 0 only if all of them drained.

Metrics: the parent points PROMETHEUS_MULTIPROC_DIR at a fresh directory before it starts the
workers (they are spawned, so they import prometheus_client with it set); a scrape of any worker
then sums every worker's values (gateway.metrics.exposition).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from gateway import logs
from gateway.config import Settings

log = logging.getLogger("gateway.workers")
LISTENING = "listening"
EXIT_CANNOT_LISTEN = 3
RESTART_DELAY_S = 0.5  # first restart after a crash; doubles while workers keep dying quickly
RESTART_DELAY_MAX_S = 30.0
HEALTHY_UPTIME_S = 30.0  # a worker that ran this long resets the backoff
PR_SET_PDEATHSIG = 1
# A restarted worker binds the port once it is ready (Kafka connected), or after this long: until
# then its siblings take every connection instead of it answering 503.
READY_BEFORE_LISTENING_S = 10.0


@dataclass(eq=False)
class Slot:
    """One worker position: the current process in it and its restart bookkeeping."""

    index: int
    starts: int = 0
    proc: BaseProcess | None = None
    conn: Connection | None = None
    listening: bool = False
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None


def describe_exit(code: int | None) -> str:
    """`exit code 1` or `signal SIGKILL`."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"


# ---- the worker process ------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this worker when the parent dies, so no orphan keeps the port."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_main(
    settings: Settings, admin_key: str, index: int, restarted: bool, ready: Connection, parent: int
) -> None:
    """Entry point of a spawned worker: serve with SO_REUSEPORT until SIGTERM, then drain."""
    _die_with_parent(parent)
    logs.configure(settings.log_level, settings.log_format, worker=index)
    # Imported here: the worker must import the metrics (through server → app) only now that
    # PROMETHEUS_MULTIPROC_DIR is in its environment.
    import uvloop

    from gateway import metrics, server

    if restarted:
        metrics.WORKER_RESTARTS.inc()

    def listening() -> None:
        ready.send(LISTENING)
        ready.close()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(
                server.serve(
                    settings,
                    admin_key,
                    worker=index,
                    reuse_port=True,
                    on_listening=listening,
                    ready_before_listening_s=READY_BEFORE_LISTENING_S if restarted else 0.0,
                )
            )
    except OSError as exc:
        log.error("worker %d cannot listen on %s:%d: %s", index, settings.host, settings.port, exc)
        code = EXIT_CANNOT_LISTEN
    sys.exit(code)


# ---- the supervising parent --------------------------------------------------------------------
class Supervisor:
    """Starts, watches, restarts and finally drains the worker processes."""

    def __init__(self, settings: Settings, admin_key: str) -> None:
        self.settings = settings
        self.admin_key = admin_key
        self.slots = [Slot(i) for i in range(settings.worker_count)]
        self.ctx = multiprocessing.get_context("spawn")
        self.stopping = False
        self.failed_start = False
        self.metrics_dir = ""

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True

    def run(self) -> int:
        """Run the workers until SIGTERM/SIGINT; the exit code says whether all of them drained."""
        base = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.metrics_dir = tempfile.mkdtemp(prefix="ingest-gateway-metrics-", dir=base)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info(
                "supervisor (pid %d) starting %d workers on %s:%d",
                os.getpid(),
                len(self.slots),
                self.settings.host,
                self.settings.port,
            )
            for slot in self.slots:
                self._start(slot)
            self._watch(wake_r)
            return self._shutdown()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _start(self, slot: Slot) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=worker_main,
            name=f"ingest-gateway-worker-{slot.index}",
            args=(self.settings, self.admin_key, slot.index, slot.starts > 0, writer, os.getpid()),
        )
        proc.start()
        writer.close()
        slot.proc, slot.conn, slot.listening = proc, reader, False
        slot.started_at, slot.restart_at = time.monotonic(), None
        slot.starts += 1

    def _watch(self, wake: socket.socket) -> None:
        while not self.stopping:
            waits: list[Any] = [wake]
            for s in self.slots:
                if s.proc is not None:
                    waits.append(s.proc.sentinel)
                if s.conn is not None:
                    waits.append(s.conn)
            due = [s.restart_at for s in self.slots if s.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            connection.wait(waits, timeout)
            with contextlib.suppress(BlockingIOError):
                while wake.recv(64):
                    pass
            for slot in self.slots:
                self._poll(slot)
                if self.stopping:
                    return

    def _poll(self, slot: Slot) -> None:
        if slot.conn is not None and slot.conn.poll():
            try:
                if slot.conn.recv() == LISTENING:
                    slot.listening = True
                    log.info("worker %d (pid %s) listening", slot.index, slot.proc.pid if slot.proc else "?")
            except EOFError:
                pass
            slot.conn.close()
            slot.conn = None
        if slot.proc is not None and not slot.proc.is_alive():
            self._exited(slot)
        if slot.restart_at is not None and slot.restart_at <= time.monotonic():
            self._start(slot)

    def _exited(self, slot: Slot) -> None:
        assert slot.proc is not None
        pid, code = slot.proc.pid, slot.proc.exitcode
        uptime = time.monotonic() - slot.started_at
        self._reap(slot)
        if slot.starts == 1 and not slot.listening:
            log.error(
                "worker %d (pid %s) exited with %s before it was listening; stopping",
                slot.index,
                pid,
                describe_exit(code),
            )
            self.failed_start = True
            self.stopping = True
            return
        slot.quick_failures = 0 if uptime >= HEALTHY_UPTIME_S else slot.quick_failures + 1
        delay = min(RESTART_DELAY_S * 2 ** max(0, slot.quick_failures - 1), RESTART_DELAY_MAX_S)
        slot.restart_at = time.monotonic() + delay
        log.error(
            "worker %d (pid %s) exited with %s after %.1f s; restarting it in %.1f s (restart #%d)",
            slot.index,
            pid,
            describe_exit(code),
            uptime,
            delay,
            slot.starts,
        )

    def _reap(self, slot: Slot) -> None:
        """Forget an exited worker: its live gauges leave the sums, its counters stay."""
        assert slot.proc is not None
        if slot.proc.pid is not None:
            mark_process_dead(slot.proc.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        slot.proc.close()
        slot.proc = None
        if slot.conn is not None:
            slot.conn.close()
            slot.conn = None

    def _shutdown(self) -> int:
        """SIGTERM every worker, wait for each to drain; 0 only if every one exited 0."""
        running = [s for s in self.slots if s.proc is not None and s.proc.is_alive()]
        log.info("supervisor: stopping; draining %d workers", len(running))
        for slot in running:
            assert slot.proc is not None
            slot.proc.terminate()
        limit = self.settings.wait_timeout_s + self.settings.drain_timeout_s + 15
        deadline = time.monotonic() + limit
        failed = self.failed_start
        for slot in self.slots:
            if slot.proc is None:
                continue
            slot.proc.join(max(0.0, deadline - time.monotonic()))
            if slot.proc.is_alive():
                log.error(
                    "worker %d (pid %s) did not exit within %.0f s; killing it",
                    slot.index,
                    slot.proc.pid,
                    limit,
                )
                slot.proc.kill()
                slot.proc.join()
            code = slot.proc.exitcode
            # A worker still starting has nothing queued: SIGTERM ending it is no failed drain.
            if code != 0 and not (code == -signal.SIGTERM and not slot.listening):
                log.error(
                    "worker %d (pid %s) did not drain cleanly: %s",
                    slot.index,
                    slot.proc.pid,
                    describe_exit(code),
                )
                failed = True
            self._reap(slot)
        log.info("supervisor: all workers stopped%s", "; SOME FAILED" if failed else "")
        return 1 if failed else 0


def supervise(settings: Settings, admin_key: str) -> int:
    """Run `settings.worker_count` workers under a supervising parent (the calling process)."""
    return Supervisor(settings, admin_key).run()
