"""Stopping an aiokafka client without letting its internals end the shutdown.

A consumer's `stop()` cancels its fetch tasks and awaits them; when Kafka is down a fetch is
sleeping in its retry back-off and the awaited cancellation escapes `stop()` as CancelledError,
which `contextlib.suppress(Exception)` lets through: SIGTERM then ended in a traceback."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_quietly(client: Any) -> None:
    """`await client.stop()` (or `close()` for an admin client); its errors are logged at DEBUG,
    and a CancelledError raised from inside it is swallowed unless this task is being cancelled."""
    stop = getattr(client, "stop", None) or client.close
    try:
        await stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("a Kafka client's own task was cancelled while it stopped")
    except Exception as exc:
        log.debug("stopping a Kafka client failed: %r", exc)
