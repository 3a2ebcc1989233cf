"""Benchmark harness: scenarios S1-S8 against a real gateway and broker, with same-run ceilings."""
