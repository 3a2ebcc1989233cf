"""Every API dialect the gateway serves: add a module here to serve it (see README.md)."""

from __future__ import annotations

from gateway.dialects import (
    datasources,
    restproxy,
    restproxy_reads,
    restproxy_v3,
    restproxy_v3_configs,
    timeplus,
    tinybird,
)
from gateway.dialects.contract import Dialect

DIALECTS: tuple[Dialect, ...] = (
    timeplus,
    tinybird,
    datasources,
    restproxy,
    restproxy_reads,
    restproxy_v3,
    restproxy_v3_configs,
)
