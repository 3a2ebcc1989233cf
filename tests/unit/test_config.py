"""Settings from defaults, GATEWAY_* environment variables, flags and a TOML file; validation."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import logs
from gateway.cli import parser
from gateway.config import MiB, Settings, add_arguments, env_name, from_sources


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    s = from_sources(None, {})
    assert s == Settings()
    assert from_sources(parse(), {}) == Settings()
    assert (s.host, s.port, s.kafka_bootstrap, s.data_dir) == ("127.0.0.1", 8000, "", Path("data"))
    assert s.embedded
    assert s.max_body_bytes == 64 * MiB and s.max_decompressed_bytes == 256 * MiB
    assert s.linger_ms == 5.0 and s.reject_unknown_fields is False
    assert s.log_level == "INFO"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_env_name() -> None:
    assert env_name("kafka_bootstrap") == "GATEWAY_KAFKA_BOOTSTRAP"


def test_env_parsing_of_every_kind() -> None:
    s = from_sources(
        None,
        {
            "GATEWAY_HOST": "0.0.0.0",
            "GATEWAY_PORT": " 9001 ",
            "GATEWAY_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "GATEWAY_DATA_DIR": "/var/lib/gw",
            "GATEWAY_LINGER_MS": "0",
            "GATEWAY_WAIT_TIMEOUT_S": "2.5",
            "GATEWAY_REJECT_UNKNOWN_FIELDS": "true",
            "GATEWAY_MAX_BODY_BYTES": "1048576",
            "GATEWAY_LOG_LEVEL": "debug",
            "GATEWAY_UNRELATED": "ignored",
            "PORT": "1",
        },
    )
    assert s.host == "0.0.0.0"
    assert s.port == 9001
    assert s.kafka_bootstrap == "k1:9092,k2:9092" and not s.embedded
    assert s.data_dir == Path("/var/lib/gw")
    assert s.linger_ms == 0.0 and isinstance(s.linger_ms, float)
    assert s.wait_timeout_s == 2.5
    assert s.reject_unknown_fields is True
    assert s.max_body_bytes == MiB
    assert s.log_level == "debug"


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9100")
    assert from_sources().port == 9100


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", " yes ", "on", "On"])
def test_bool_true_spellings(raw: str) -> None:
    assert from_sources(None, {"GATEWAY_REJECT_UNKNOWN_FIELDS": raw}).reject_unknown_fields


@pytest.mark.parametrize("raw", ["0", "false", "FALSE", "no", "off"])
def test_bool_false_spellings(raw: str) -> None:
    assert not from_sources(None, {"GATEWAY_REJECT_UNKNOWN_FIELDS": raw}).reject_unknown_fields


@pytest.mark.parametrize("raw", ["maybe", "ture"])
def test_bool_unrecognised_value_raises(raw: str) -> None:
    """A typo must not silently turn a safety switch off."""
    with pytest.raises(ValueError, match="reject_unknown_fields"):
        from_sources(None, {"GATEWAY_REJECT_UNKNOWN_FIELDS": raw})


def test_flags_override_env() -> None:
    env = {"GATEWAY_PORT": "1111", "GATEWAY_HOST": "10.0.0.1", "GATEWAY_LINGER_MS": "7"}
    s = from_sources(parse("--port", "2222", "--linger-ms", "0.5"), env)
    assert s.port == 2222
    assert s.linger_ms == 0.5
    assert s.host == "10.0.0.1"  # no flag: the environment still applies


def test_bool_flags_override_env_both_ways() -> None:
    on = {"GATEWAY_REJECT_UNKNOWN_FIELDS": "true"}
    off = {"GATEWAY_REJECT_UNKNOWN_FIELDS": "false"}
    assert from_sources(parse("--no-reject-unknown-fields"), on).reject_unknown_fields is False
    assert from_sources(parse("--reject-unknown-fields"), off).reject_unknown_fields is True
    assert from_sources(parse(), on).reject_unknown_fields is True


def test_every_setting_has_a_flag_naming_its_env_var() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    helps = {a.dest: a.help or "" for a in parser._actions}
    for f in dataclasses.fields(Settings):
        assert env_name(f.name) in helps[f.name], f.name
    args = parse("--data-dir", "/tmp/x", "--admin-key", "k", "--topic-prefix", "p.")
    s = from_sources(args, {})
    assert (s.data_dir, s.admin_key, s.topic_prefix) == (Path("/tmp/x"), "k", "p.")


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("port", "x"),
        ("port", "8080.0"),
        ("port", ""),
        ("port", "0"),
        ("port", "-1"),
        ("default_shards", "0"),
        ("replication_factor", "0"),
        ("max_body_bytes", "0"),
        ("max_decompressed_bytes", "-5"),
        ("queue_max_rows", "0"),
        ("queue_max_bytes", "0"),
        ("memory_cap_bytes", "0"),
        ("batch_max_bytes", "0"),
        ("max_in_flight_flushes", "0"),
        ("linger_ms", "-1"),
        ("linger_ms", "fast"),
        ("wait_timeout_s", "0"),
        ("wait_timeout_s", "-1"),
        ("drain_timeout_s", "-0.5"),
        ("kafka_probe_interval_s", "often"),
        ("log_level", "verbose"),
        ("log_level", ""),
        ("max_row_bytes", "-1"),
        ("max_gzip_members", "0"),
    ],
)
def test_invalid_values_raise_naming_the_field(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=name):
        from_sources(None, {env_name(name): raw})


def test_invalid_flag_raises_naming_the_field() -> None:
    with pytest.raises(ValueError, match="max_in_flight_flushes"):
        from_sources(parse("--max-in-flight-flushes", "many"), {})


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("port", "65536"),  # not a TCP port
        ("wait_timeout_s", "nan"),  # asyncio.timeout(nan) expires at once: every wait=true → 504
        ("linger_ms", "nan"),
        ("kafka_probe_interval_s", "0"),  # probe loop without pause
        ("kafka_unreachable_after_s", "0"),
    ],
)
def test_out_of_range_values_raise_naming_the_field(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=name):
        from_sources(None, {env_name(name): raw})


def test_zero_linger_and_drain_are_allowed() -> None:
    s = from_sources(None, {"GATEWAY_LINGER_MS": "0", "GATEWAY_DRAIN_TIMEOUT_S": "0"})
    assert (s.linger_ms, s.drain_timeout_s) == (0.0, 0.0)


# ---- TOML file, precedence over all sources, worker count, JSON logs -------------------------
ROOT = Path(__file__).resolve().parents[2]


def settings(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    return from_sources(parser().parse_args(["serve", *argv]), env or {})


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        'port = 9001\nqueue_max_rows = 1000\nlinger_ms = 7\nlog_format = "json"\n'
        'reject_unknown_fields = true\ndata_dir = "/srv/gw"\nworkers = 4\n'
        'kafka_bootstrap = "k:9092"\n'
    )
    s = settings(
        ["--config", str(cfg), "--port", "9003"], {"GATEWAY_PORT": "9002", "GATEWAY_QUEUE_MAX_ROWS": "2000"}
    )
    assert s.port == 9003  # flag beats env and file
    assert s.queue_max_rows == 2000  # env beats file
    assert s.linger_ms == 7.0 and isinstance(s.linger_ms, float)  # file beats default
    assert s.log_format == "json" and s.reject_unknown_fields is True
    assert s.data_dir == Path("/srv/gw") and s.worker_count == 4
    assert s.max_body_bytes == Settings().max_body_bytes  # default
    # The file may also come from GATEWAY_CONFIG; the flag names the file when both are set.
    assert settings([], {"GATEWAY_CONFIG": str(cfg)}).port == 9001


def test_workers_auto_is_the_core_count() -> None:
    s = settings(["--workers", "auto", "--kafka-bootstrap", "k:9092"])
    assert s.worker_count == (os.cpu_count() or 1)
    assert settings([]).worker_count == 1


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("prot = 1\n", "unknown setting 'prot' (did you mean 'port'?)"),
        ("queue-max-rows = 1\n", "unknown setting 'queue-max-rows' (did you mean 'queue_max_rows'?)"),
        ('port = "8000"\n', "port must be of type int"),
        ("access_log = 1\n", "access_log must be of type bool"),
        ("port = true\n", "port must be of type int"),
        ("port = = 1\n", "is not valid TOML"),
    ],
)
def test_bad_config_file_is_named(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(ValueError, match=r"bad\.toml") as err:
        settings(["--config", str(cfg)])
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "http"], {}, "invalid value 'http' for port (--port)"),
        ([], {"GATEWAY_PORT": "0"}, "port must be positive"),
        ([], {"GATEWAY_REJECT_UNKNOWN_FIELDS": "treu"}, "GATEWAY_REJECT_UNKNOWN_FIELDS"),
        (["--workers", "many"], {}, "workers must be a positive integer or auto"),
        (["--workers", "2"], {}, "workers > 1 needs Kafka"),
        (["--log-format", "xml"], {}, "log_format must be text or json"),
        (["--access-log-sample", "0"], {}, "access_log_sample must be in (0, 1]"),
        (["--config", "/nonexistent/gw.toml"], {}, "cannot read config file /nonexistent/gw.toml"),
    ],
)
def test_invalid_settings_fail_with_the_source(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        settings(argv, env)
    assert message in str(err.value)


def test_cli_fails_fast_with_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("queue_max_rowz = 5\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"ingest-gateway: invalid configuration: config file {cfg}: "
        "unknown setting 'queue_max_rowz' (did you mean "
        "'queue_max_rows'?)"
    )


def test_json_log_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json", worker=2)
    try:
        log = logging.getLogger("gateway.test")
        token = logs.REQUEST_ID.set("req-1")
        log.warning("inside %s", "a request", extra={"http": {"status": 202}})
        logs.REQUEST_ID.reset(token)
        log.info("outside")
        log.debug("not shown")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["level"] == "WARNING" and first["logger"] == "gateway.test"
    assert first["message"] == "inside a request" and first["request_id"] == "req-1"
    assert first["http"] == {"status": 202} and first["worker"] == 2
    assert first["time"].endswith("Z")
    assert "request_id" not in second and second["message"] == "outside"


def test_min_insync_replicas_defaults_to_two_at_most_the_replication() -> None:
    assert [from_sources(parse("--replication-factor", rf), {}).min_insync for rf in "123"] == [1, 2, 2]
    s = from_sources(parse("--replication-factor", "5", "--min-insync-replicas", "3"), {})
    assert s.min_insync == 3
    with pytest.raises(ValueError, match=r"min_insync_replicas must be 0\.\.replication_factor"):
        from_sources(parse("--replication-factor", "2", "--min-insync-replicas", "3"), {})


def test_the_row_bound_defaults_to_a_batch() -> None:
    s = from_sources(None, {env_name("batch_max_bytes"): "2000000"})
    assert s.max_row_bytes == 0 and s.row_bytes_limit == 2_000_000 and s.max_gzip_members == 1000
    s = from_sources(None, {env_name("max_row_bytes"): "5000"})
    assert s.row_bytes_limit == 5000
