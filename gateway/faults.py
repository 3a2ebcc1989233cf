"""Test-only fault points: with `GATEWAY_TEST_FAULT=<point>` in its environment, the process exits
at once (no cleanup, as `kill -9` would leave it) when it reaches that point, so that integration
tests stop a gateway at an exact place in a code path instead of racing a timer."""

from __future__ import annotations

import os
import sys

FAULT_ENV = "GATEWAY_TEST_FAULT"
FAULT_EXIT = 86
_ARMED = os.environ.get(FAULT_ENV, "")


def reached(point: str) -> None:
    """Exit the process with FAULT_EXIT when `point` is the armed fault point."""
    if point == _ARMED:
        sys.stderr.write(f"fault point {point!r} reached: exiting\n")
        sys.stderr.flush()
        os._exit(FAULT_EXIT)
