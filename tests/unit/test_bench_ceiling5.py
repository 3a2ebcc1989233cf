"""Ceiling (5) in the benchmark harness: which modes a run measures, how the report shows it, and
the two batch builders the ceilings (4) and (5) use."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks.ceilings import batch
from benchmarks.cli import options, parser
from benchmarks.payloads import RowFactory, sample_lines
from benchmarks.report import _ceilings, _scenarios, moved_by_native
from benchmarks.runner import CEILINGS
from benchmarks.scenarios import produce_ceiling_key, produce_ceiling_modes


def test_measured_for_s1_and_s2_only() -> None:
    assert produce_ceiling_modes(["S1", "S2", "S3"]) == [False, True]
    assert produce_ceiling_modes(["S2"]) == [True]
    assert produce_ceiling_modes(["S3", "S4"]) == []
    assert produce_ceiling_key(False) == "ndjson100"
    assert produce_ceiling_key(True) == "ndjson100-wait"


def _m(**extra: Any) -> dict[str, Any]:
    return {
        "status": "ok",
        "rows_delivered_per_s": 100_000.0,
        "ok_requests_per_s": 1_000.0,
        "gateway_cpu_s_per_million_rows": 5.0,
        "latency_ms": {"count": 0},
        "other_cpu_s": 0.1,
        "payload": "ndjson100",
        **extra,
    }


def test_report_rows_and_ratios() -> None:
    table = "\n".join(_ceilings({"produce": {"ndjson100": _m(wait=False), "ndjson100-wait": _m(wait=True)}}))
    assert "| (5) read + untyped decode + bare aiokafka batch produce" in table
    assert "ndjson100, wait=false | 100,000 rows/s delivered (1,000 req/s)" in table
    assert "ndjson100, wait=true" in table
    measurement = {
        "rows_delivered_per_s": 50_000.0,
        "requests_per_s": 500.0,
        "mb_in_per_s": 7.5,
        "latency_ms": {"count": 0},
        "count_429": 0,
        "count_503": 0,
        "count_5xx": 0,
        "count_errors": 0,
        "gateway_cpu_s_per_million_rows": 10.0,
        "gateway_peak_rss_mb": 80.0,
        "broker_cpu_s": 1.0,
        "loadgen_cpu_s": 1.0,
        "status": "ok",
    }
    run = {
        "scenarios": {
            "S1": {
                "measurement": measurement,
                "goal": {"status": "not met"},
                "ratios": {
                    "rows_vs_ceiling_2": 0.2,
                    "cpu_efficiency_vs_ceiling_2": 0.3,
                    "rows_vs_ceiling_5": 0.5,
                    "cpu_efficiency_vs_ceiling_5": 0.5,
                },
            }
        }
    }
    [row] = [line for line in _scenarios(run) if line.startswith("| S1 ")]
    assert "0.20 x c(2) (CPU 0.30); 0.50 x c(5) (CPU 0.50)" in row


def test_both_builders_are_ceilings_of_their_own_and_in_all() -> None:
    assert {"aiokafka", "aiokafka-native", "produce", "produce-native"} <= set(CEILINGS)

    def ceilings(value: str) -> list[str]:
        return options(parser().parse_args(["--ceilings", value])).ceilings

    assert ceilings("all") == list(CEILINGS)
    assert ceilings("produce,produce-native") == ["produce", "produce-native"]


def test_native_rows_say_how_far_the_builder_moves_the_ceiling() -> None:
    base, native = (
        _m(wait=False, rows_per_s=100_000.0),
        _m(wait=False, rows_per_s=125_000.0, gateway_cpu_s_per_million_rows=4.0),
    )
    loop = {"status": "ok", "records": 1_000_000, "cpu_s": 2.0, "records_per_s": 400_000.0}
    c = {
        "produce": {"ndjson100": base},
        "produce_native": {"ndjson100": native},
        "aiokafka": loop,
        "aiokafka_native": {**loop, "cpu_s": 1.0, "records_per_s": 500_000.0},
    }
    assert moved_by_native(native, base) == (1.25, 0.8)
    assert moved_by_native(native, None) == (None, None)
    assert moved_by_native({**native, "status": "FAILED"}, base) == (None, None)
    table = "\n".join(_ceilings(c))
    [row5] = [line for line in table.splitlines() if line.startswith("| (5) ")]
    [row5n] = [line for line in table.splitlines() if line.startswith("| (5n) ")]
    [row4n] = [line for line in table.splitlines() if line.startswith("| (4n) ")]
    assert "native ÷" not in row5
    assert "ndjson100, wait=false" in row5n
    assert "native ÷ aiokafka builder: rows/s 1.25, CPU s / M rows 0.80 | 4.00 |" in row5n
    assert "500,000 records/s; native ÷ aiokafka builder: rows/s 1.25, CPU s / M rows 0.50" in row4n


@pytest.mark.parametrize(("start", "cycle"), [(0, False), (19_990, False), (19_000, True)])
def test_both_builders_pack_the_same_records(start: int, cycle: bool) -> None:
    """The same values fill a batch of the same size with either builder (aiokafka's rule of
    what fits), so the two ceilings produce the same batches and differ only in building them."""
    values = sample_lines(RowFactory("ceiling"), 20_000)

    async def build() -> tuple[Any, int, Any, int]:
        kafka = batch.producer("127.0.0.1:1")  # never started: create_batch needs no broker
        try:
            ours, after = batch._aiokafka(kafka, values, start, cycle)
            native, after_native = batch._native(values, start, cycle)
            return ours, after, native, after_native
        finally:
            await kafka.stop()

    ours, after, native, after_native = asyncio.run(build())
    assert after == after_native > start
    assert native.record_count() == after - start
    assert ours.size() == native.size()
    if cycle:
        assert after > len(values)  # went on from the first value
    else:
        assert after <= len(values)


def test_unknown_builder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown batch builder"):
        asyncio.run(batch.send_values(None, "t", 0, [b"{}"], builder="java"))
