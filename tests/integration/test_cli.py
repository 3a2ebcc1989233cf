"""The `ingest-gateway streams|keys …` console command, run for real against a gateway process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.harness import (
    ADMIN_KEY,
    ROOT,
    Gateway,
    free_port,
    known_partitions,
    unique_name,
)

SCRIPT = Path(sys.executable).parent / "ingest-gateway"


def cli(
    gw: Gateway | None, *args: str, key: str | None = ADMIN_KEY, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script with GATEWAY_URL / GATEWAY_ADMIN_KEY set."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GATEWAY_URL", "GATEWAY_ADMIN_KEY", "GATEWAY_API_KEY")
    }
    environ["PYTHONPATH"] = str(ROOT)
    if gw is not None:
        environ["GATEWAY_URL"] = gw.url
    if key is not None:
        environ["GATEWAY_ADMIN_KEY"] = key
    environ.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=environ, cwd=ROOT
    )


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


async def test_streams_create_list_get_delete(gateway: Gateway, kafka: str, tmp_path: Path) -> None:
    assert SCRIPT.exists(), f"console script not installed at {SCRIPT}"
    name, kv = unique_name("cli"), unique_name("clikv")
    made = ok(
        cli(
            gateway,
            "streams",
            "create",
            name,
            "--column",
            "id:string",
            "--column",
            "n:int64:0",
            "--column",
            "at:datetime64(3):'2024-01-01T00:00:00Z'",
            "--shards",
            "2",
            "--description",
            "from the cli",
            "--partitioner",
            "consistent_random",
        )
    )
    assert made["name"] == name and made["shards"] == 2 and made["description"] == "from the cli"
    assert made["partitioner"] == "consistent_random"
    assert [(c["name"], c["type"], c["default"]) for c in made["columns"]] == [
        ("id", "string", ""),
        ("n", "int64", "0"),
        ("at", "datetime64(3)", "'2024-01-01T00:00:00Z'"),
    ]
    assert await known_partitions(kafka, made["topic"]) == {0, 1}
    definition = tmp_path / "kv.json"
    definition.write_text(
        json.dumps(
            {
                "name": "ignored",
                "mode": "versioned_kv",
                "primary_key": "id",
                "columns": [{"name": "id", "type": "string"}, {"name": "v", "type": "float64"}],
            }
        )
    )
    made_kv = ok(cli(gateway, "streams", "create", kv, "--from-json", str(definition)))
    assert made_kv["name"] == kv and made_kv["mode"] == "versioned_kv"
    assert made_kv["primary_key"] == "id"
    listed = ok(cli(gateway, "streams", "list"))
    assert {name, kv} <= {s["name"] for s in listed}
    assert (
        ok(cli(gateway, "streams", "get", name))
        == gateway.request("GET", f"/api/v1beta2/streams/{name}").json()
    )
    dup = cli(gateway, "streams", "create", name, "--column", "id:string")
    assert dup.returncode == 1 and json.loads(dup.stderr)["code"] == 409
    assert ok(cli(gateway, "streams", "delete", name)) == {"deleted": name}
    gone = cli(gateway, "streams", "get", name)
    assert gone.returncode == 1 and json.loads(gone.stderr)["code"] == 404
    assert gateway.request("GET", f"/api/v1beta2/streams/{name}").status == 404
    bad = cli(gateway, "streams", "create", unique_name(), "--column", "nocolon")
    assert bad.returncode == 2 and "name:type" in bad.stderr


def test_keys_create_list_delete(gateway: Gateway) -> None:
    stream = unique_name("clikey")
    gateway.create_stream(stream, [{"name": "id", "type": "string"}])
    made = ok(
        cli(
            gateway,
            "keys",
            "create",
            "--name",
            "cli",
            "--expire-in",
            "1h",
            "--permission",
            f"DATASOURCE:APPEND:{stream}",
            "--rate-limit",
            "7",
            "--allowed-origin",
            "https://www.example.com",
        )
    )
    key, key_id = made["api_key"], made["id"]
    assert made["name"].startswith("cli (") and made["permissions"] == [f"DATASOURCE:APPEND:{stream}"]
    assert made["expire_at"] > 0
    assert (made["rate_limit"], made["allowed_origins"]) == (7, ["https://www.example.com"])
    ingest = f"/api/v1beta2/streams/{stream}/ingest?wait=true&format=streaming"
    assert gateway.request("POST", ingest, '{"id": "x"}', key=key).status == 200
    assert (
        gateway.request(
            "POST", ingest, '{"id": "x"}', key=key, headers={"Origin": "https://elsewhere.example"}
        ).status
        == 403
    )
    listed = ok(cli(gateway, "keys", "list"))
    assert key_id in [k["id"] for k in listed]
    assert all("api_key" not in k for k in listed)
    assert key not in json.dumps(listed)
    # The limited key may not list keys: the gateway's 403 comes back as JSON and exit code 1.
    denied = cli(gateway, "keys", "list", key=None, env={"GATEWAY_API_KEY": key})
    assert denied.returncode == 1 and json.loads(denied.stderr)["code"] == 403
    assert ok(cli(gateway, "keys", "delete", key_id)) == {"deleted": key_id}
    assert gateway.request("POST", ingest, '{"id": "x"}', key=key).status == 401
    again = cli(gateway, "keys", "delete", key_id)
    assert again.returncode == 1 and json.loads(again.stderr)["code"] == 404


def test_flags_and_failures(gateway: Gateway) -> None:
    by_flag = cli(None, "streams", "list", "--url", gateway.url, "--key", ADMIN_KEY, key=None)
    assert by_flag.returncode == 0 and isinstance(json.loads(by_flag.stdout), list)
    no_key = cli(gateway, "streams", "list", key=None)
    assert no_key.returncode == 2 and "GATEWAY_ADMIN_KEY" in no_key.stderr
    wrong = cli(gateway, "streams", "list", key="not-a-key-0123456789")
    assert wrong.returncode == 1 and json.loads(wrong.stderr)["code"] == 401
    assert "not-a-key-0123456789" not in wrong.stderr
    down = cli(None, "streams", "list", env={"GATEWAY_URL": f"http://127.0.0.1:{free_port()}"})
    assert down.returncode == 1 and "cannot reach the gateway" in down.stderr


def test_output_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`ingest-gateway streams list | head -1`: no BrokenPipeError traceback, exit status 141 (as
    a command killed by SIGPIPE), and the command still did its work."""
    gw = Gateway(tmp_path, None).start()
    try:
        for i in range(3):
            gw.create_stream(f"pipe{i}", [{"name": "id", "type": "string"}])
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the command writes a byte
        environ = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GATEWAY_URL": gw.url,
            "GATEWAY_ADMIN_KEY": ADMIN_KEY,
        }
        try:
            done = subprocess.run(
                [str(SCRIPT), "streams", "delete", "pipe1"],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                env=environ,
            )
            listed = subprocess.run(
                [str(SCRIPT), "streams", "list"],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                env=environ,
            )
        finally:
            os.close(write)
        assert (done.returncode, done.stderr) == (141, "")
        assert (listed.returncode, listed.stderr) == (141, "")
        assert [s["name"] for s in gw.request("GET", "/api/v1beta2/streams").json()] == ["pipe0", "pipe2"]
    finally:
        assert gw.stop() == 0


def test_first_start_names_the_admin_key_file_and_never_prints_the_key(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, None, env={"GATEWAY_ADMIN_KEY": ""}).start()
    try:
        key_file = tmp_path / "admin.key"
        key = key_file.read_text().strip()
        assert gw.request("GET", "/api/v1beta2/streams", key=key).status == 200
        assert key not in gw.log()
        assert f"kept in {key_file.resolve()}" in gw.log(), gw.log()
        assert f"cat {key_file}" in gw.log(), gw.log()
    finally:
        assert gw.stop() == 0
