"""Settings from flags, environment and a TOML file: one precedence, and clear errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import logs
from gateway.cli import parser
from gateway.config import Settings, from_sources

ROOT = Path(__file__).resolve().parents[2]


def settings(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    return from_sources(parser().parse_args(["serve", *argv]), env or {})


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('port = 9001\nqueue_max_rows = 1000\nlinger_ms = 7\nlog_format = "json"\n'
                   'reject_unknown_fields = true\ndata_dir = "/srv/gw"\nworkers = 4\n'
                   'kafka_bootstrap = "k:9092"\n')
    s = settings(["--config", str(cfg), "--port", "9003"],
                 {"GATEWAY_PORT": "9002", "GATEWAY_QUEUE_MAX_ROWS": "2000"})
    assert s.port == 9003                      # flag beats env and file
    assert s.queue_max_rows == 2000            # env beats file
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


@pytest.mark.parametrize(("toml", "message"), [
    ("prot = 1\n", "unknown setting 'prot' (did you mean 'port'?)"),
    ("queue-max-rows = 1\n", "unknown setting 'queue-max-rows' (did you mean 'queue_max_rows'?)"),
    ('port = "8000"\n', "port must be of type int"),
    ("access_log = 1\n", "access_log must be of type bool"),
    ("port = true\n", "port must be of type int"),
    ("port = = 1\n", "is not valid TOML"),
])
def test_bad_config_file_is_named(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(ValueError, match=r"bad\.toml") as err:
        settings(["--config", str(cfg)])
    assert message in str(err.value)


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--port", "http"], {}, "invalid value 'http' for --port"),
    ([], {"GATEWAY_PORT": "0"}, "port must be positive"),
    ([], {"GATEWAY_REJECT_UNKNOWN_FIELDS": "treu"}, "GATEWAY_REJECT_UNKNOWN_FIELDS"),
    (["--workers", "many"], {}, "workers must be a positive integer or auto"),
    (["--workers", "2"], {}, "workers > 1 needs Kafka"),
    (["--log-format", "xml"], {}, "log_format must be text or json"),
    (["--access-log-sample", "0"], {}, "access_log_sample must be in (0, 1]"),
    (["--config", "/nonexistent/gw.toml"], {}, "cannot read config file /nonexistent/gw.toml"),
])
def test_invalid_settings_fail_with_the_source(argv: list[str], env: dict[str, str],
                                               message: str) -> None:
    with pytest.raises(ValueError) as err:
        settings(argv, env)
    assert message in str(err.value)


def test_cli_fails_fast_with_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("queue_max_rowz = 5\n")
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr.strip() == (f"ingest-gateway: invalid configuration: config file {cfg}: "
                                   "unknown setting 'queue_max_rowz' (did you mean "
                                   "'queue_max_rows'?)")


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
