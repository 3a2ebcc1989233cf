"""Command line: `ingest-gateway serve` runs the gateway (see `--help` for every option);
`ingest-gateway streams …` and `keys …` manage a running gateway over HTTP and print JSON;
`ingest-gateway catalog export | import` copy the catalog between stores (gateway.catalog.transfer)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

import uvloop

from gateway import __version__, logs, workers
from gateway.catalog.transfer import export_catalog, import_catalog
from gateway.client import ApiError, GatewayClient, Unreachable, stream_definition
from gateway.config import Settings, add_arguments, from_sources
from gateway.errors import GatewayError
from gateway.server import serve
from gateway.spool import stranded_segments

log = logging.getLogger("gateway")


def admin_key_for(settings: Settings) -> str:
    """The admin key: `GATEWAY_ADMIN_KEY`, else one kept in `<data-dir>/admin.key` (made once)."""
    if settings.admin_key:
        return settings.admin_key
    path = settings.data_dir / "admin.key"
    if path.exists():
        log.info("admin key read from %s", path)
        return path.read_text().strip()
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    # Never printed: stdout and stderr end up in log collectors. Where it is, and how to read it.
    log.warning(
        "generated an admin API key, kept in %s (readable by this user only): "
        "read it with `cat %s`, or set GATEWAY_ADMIN_KEY",
        path.resolve(),
        path,
    )
    return key


def parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(
        prog="ingest-gateway", description="HTTP event ingestion gateway into Apache Kafka"
    )
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Every option can also be set with the "
        "GATEWAY_* environment variable named in its help, or in the "
        "TOML file given by --config; flags win over the environment, "
        "which wins over the file.",
    )
    add_arguments(s)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"),
        help="the gateway's URL (env GATEWAY_URL, default %(default)s)",
    )
    common.add_argument(
        "--key",
        default=None,
        help="API key (prefer env GATEWAY_ADMIN_KEY or "
        "GATEWAY_API_KEY: a flag is visible to other users in `ps`)",
    )
    streams = sub.add_parser("streams", help="list, show, create and delete streams")
    st = streams.add_subparsers(dest="action", required=True)
    st.add_parser("list", parents=[common], help="every stream")
    st.add_parser("get", parents=[common], help="one stream").add_argument("name")
    st.add_parser("delete", parents=[common], help="delete a stream and its topic").add_argument("name")
    c = st.add_parser("create", parents=[common], help="create a stream (and its topic)")
    c.add_argument("name", nargs="?", help="stream name (may come from --from-json)")
    c.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NAME:TYPE[:DEFAULT]",
        help="a column, e.g. id:string or temp:float64:0 (repeat for each)",
    )
    c.add_argument("--mode", help="append, changelog, changelog_kv or versioned_kv")
    c.add_argument("--primary-key", help="primary key columns (for *_kv modes), e.g. 'a, b'")
    c.add_argument("--shards", type=int, help="partitions of the stream's topic")
    c.add_argument("--description")
    c.add_argument(
        "--partitioner",
        help="where keys go: murmur2 (default; Java clients, Confluent REST Proxy) or "
        "consistent_random (librdkafka clients, Karapace)",
    )
    c.add_argument("--from-json", metavar="FILE", help="the create request as JSON ('-': stdin)")
    keys = sub.add_parser("keys", help="list, create and delete API keys")
    kt = keys.add_subparsers(dest="action", required=True)
    kt.add_parser("list", parents=[common], help="every API key (never the keys themselves)")
    kt.add_parser("delete", parents=[common], help="revoke an API key").add_argument("id")
    k = kt.add_parser("create", parents=[common], help="create an API key (shown this once)")
    k.add_argument("--name")
    k.add_argument("--expire-in", help="e.g. 24h or 30m")
    k.add_argument("--expire-at", help="RFC 3339 time")
    k.add_argument(
        "--permission",
        action="append",
        default=[],
        help="scope, e.g. DATASOURCE:APPEND:mystream (repeat; default: create+append)",
    )
    k.add_argument("--rate-limit", type=int, help="requests per second (default: the gateway's)")
    k.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        help="web page origin that may use the key, e.g. https://www.example.com (repeat; default: any)",
    )
    store = argparse.ArgumentParser(add_help=False)  # where the catalog is: as `serve` finds it
    store.add_argument("--config", metavar="FILE", help="TOML settings file (env GATEWAY_CONFIG)")
    store.add_argument("--data-dir", help="embedded mode's data directory (env GATEWAY_DATA_DIR)")
    store.add_argument(
        "--kafka-bootstrap",
        help="Kafka mode: the brokers (env GATEWAY_KAFKA_BOOTSTRAP); without it, <data-dir>/catalog.json",
    )
    store.add_argument("--catalog-topic", help="Kafka mode's catalog topic (env GATEWAY_CATALOG_TOPIC)")
    catalog = sub.add_parser(
        "catalog",
        help="copy streams and API keys between catalog stores",
        description="Read or write a catalog store directly (no gateway "
        "needed): <data-dir>/catalog.json in embedded mode, "
        "the Kafka catalog topic with --kafka-bootstrap.",
    )
    ct = catalog.add_subparsers(dest="action", required=True)
    ct.add_parser("export", parents=[store], help="print the catalog as JSON (keys as salted hashes only)")
    ct.add_parser(
        "import",
        parents=[store],
        help="add a file's streams (and their topics) and keys; existing ones are kept",
    ).add_argument("file", help="a `catalog export` file ('-': stdin)")
    return p


def catalog_command(args: argparse.Namespace) -> int:
    """`catalog export` (JSON on stdout) or `catalog import FILE` (a summary on stdout)."""
    try:
        settings = from_sources(args)
        if args.action == "import":
            data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except (ValueError, OSError) as exc:
        print(f"ingest-gateway: {exc}", file=sys.stderr)
        return 2
    logs.configure("warning", "text")
    try:
        if args.action == "export":
            out = asyncio.run(export_catalog(settings))
            sys.stdout.buffer.write(out + b"\n")
            return 0
        done = asyncio.run(import_catalog(settings, data))
    except ValueError as exc:
        print(f"ingest-gateway: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:  # the store is unreachable, or a change was not confirmed
        print(f"ingest-gateway: {exc.message}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "imported_streams": done.streams,
                "imported_keys": done.keys,
                "kept_streams": done.kept_streams,
                "kept_keys": done.kept_keys,
            },
            indent=2,
        )
    )
    return 0


def _create_body(args: argparse.Namespace) -> dict[str, object]:
    if args.from_json:
        with sys.stdin if args.from_json == "-" else open(args.from_json) as f:
            body: dict[str, object] = json.load(f)
        if args.name:
            body["name"] = args.name
        return body
    if not args.name or not args.column:
        raise ValueError("give a NAME and at least one --column NAME:TYPE (or --from-json FILE)")
    return stream_definition(
        args.name,
        args.column,
        mode=args.mode,
        primary_key=args.primary_key,
        shards=args.shards,
        description=args.description,
        partitioner=args.partitioner,
    )


def _run(client: GatewayClient, args: argparse.Namespace) -> object:
    what = (args.command, args.action)
    if what == ("streams", "list"):
        return client.list_streams()
    if what == ("streams", "get"):
        return client.get_stream(args.name)
    if what == ("streams", "create"):
        return client.create_stream(_create_body(args))
    if what == ("streams", "delete"):
        client.delete_stream(args.name)
        return {"deleted": args.name}
    if what == ("keys", "list"):
        return client.list_keys()
    if what == ("keys", "create"):
        return client.create_key(
            name=args.name,
            expire_in=args.expire_in,
            expire_at=args.expire_at,
            permissions=args.permission,
            rate_limit=args.rate_limit,
            allowed_origins=args.allowed_origin,
        )
    client.delete_key(args.id)
    return {"deleted": args.id}


def manage(args: argparse.Namespace) -> int:
    """Run a `streams …` / `keys …` command against the gateway; print the reply as JSON."""
    key = args.key or os.environ.get("GATEWAY_ADMIN_KEY") or os.environ.get("GATEWAY_API_KEY")
    if not key:
        print(
            "ingest-gateway: no API key: set GATEWAY_ADMIN_KEY (or GATEWAY_API_KEY) or use --key",
            file=sys.stderr,
        )
        return 2
    client = GatewayClient(args.url, key)
    try:
        result = _run(client, args)
    except (ValueError, OSError) as exc:
        print(f"ingest-gateway: {exc}", file=sys.stderr)
        return 2
    except ApiError as err:
        print(json.dumps(err.body, indent=2), file=sys.stderr)
        return 1
    except Unreachable as exc:
        print(f"ingest-gateway: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ingest-gateway` console script. When stdout's reader goes away (`|
    head`), exit quietly with 141, as a command killed by SIGPIPE does in the shell: the command
    did its work, only the rest of its output was not wanted."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a broken pipe prints "Exception ignored"
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 128 + signal.SIGPIPE
    return code


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.command in ("streams", "keys"):
        return manage(args)
    if args.command == "catalog":
        return catalog_command(args)
    try:
        settings = from_sources(args)
    except ValueError as exc:
        print(f"ingest-gateway: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "serve":
        stranded = (
            stranded_segments(Path(settings.spool_dir), settings.worker_count) if settings.spool_dir else []
        )
        if stranded:
            print(
                f"ingest-gateway: {len(stranded)} spool segment(s) would not be replayed with "
                f"--workers {settings.worker_count} (e.g. {stranded[0]}): each worker replays "
                "only its own folder (worker-<i>); start once with the worker count that wrote "
                "them, let it drain, then change --workers",
                file=sys.stderr,
            )
            return 2
        admin_key = admin_key_for(settings)
        if settings.worker_count > 1:
            return workers.supervise(settings, admin_key)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(settings, admin_key))
    return 2
