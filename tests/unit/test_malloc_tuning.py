"""glibc's malloc thresholds for the Kafka sink's Produce requests (gateway/sinks/malloc_tuning.py)."""

from __future__ import annotations

import platform

import pytest

from gateway.sinks.malloc_tuning import keep_request_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_thresholds_are_set_once_per_process() -> None:
    assert keep_request_buffers()
    assert keep_request_buffers()  # again: nothing more to do
