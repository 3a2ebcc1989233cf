"""The README's examples, run as written: every ```sh block of the quick start, the dialect sections
and the command line section, in README order, against a real gateway (embedded, and after the
quick start's switch to Kafka, against the session's real broker). Each block runs in bash with
`set -euo pipefail`; every `curl` must get the status its `# → NNN` comment documents, and every
`curl` must have one.

What the test changes, all of it here and nothing silently skipped:
- the blocks run in a directory of their own, standing for the repository root: `data` is the
  gateway's data directory; `deploy`, `gateway`, `pyproject.toml` and `.venv` link to the
  repository's (deploy/dev/cli finds the installed venv there); `.venv/bin` comes first on PATH
  (the README's "activate the venv"); shell variables a block sets (`K`, exports) carry over to
  the next block, as in one terminal;
- `localhost:8000` / `127.0.0.1:8000` become the test gateway's free port (and GATEWAY_URL is set
  to it, as the quick start says for `--port N`), `127.0.0.1:19092` the
  session broker's address (KAFKA_DEV_PORT points kafka-dev at it), and GATEWAY_CATALOG_TOPIC
  the test gateway's own catalog topic (the broker is shared);
- lines that cannot run in a test are mapped, by their exact text, in MAPPED below.
Blocks of other sections (benchmarks, production with docker compose) are not run here; the
compose file has its own tests (tests/unit/test_compose.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, Gateway

SECTIONS = (
    "Quick start",
    "Other dialects",
    "Kafka REST Proxy dialect",
    "Sending from a web page",
    "Command line management",
)
STATUS = re.compile(r"# → (\d{3})\b")
QUICK_RUN = "deploy/dev/run      # installs the gateway into .venv and runs it on 127.0.0.1:8000"
KAFKA_START = (
    "deploy/kafka/kafka-dev start                      # a single-node KRaft broker on 127.0.0.1:19092"
)
KAFKA_RUN = "deploy/dev/run --kafka-bootstrap 127.0.0.1:19092  # foreground again"
KEY_DELETE = 'ingest-gateway keys delete KEY_ID                   # KEY_ID: a key\'s "id" in the list'


@dataclass
class Block:
    section: str
    line: int  # in README.md, of the opening fence
    text: str


def readme_blocks() -> list[Block]:
    """The ```sh blocks of SECTIONS, in order (blocks indented in a list item too)."""
    blocks: list[Block] = []
    section = ""
    lines = (ROOT / "README.md").read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.fullmatch(r"( *)```sh", line)
        if fence:
            indent = len(fence.group(1))
            end = lines.index(" " * indent + "```", i + 1)
            if section in SECTIONS:
                body = "\n".join(text[indent:] for text in lines[i + 1 : end])
                blocks.append(Block(section, i + 1, body))
            i = end
        i += 1
    return blocks


@dataclass
class Run:
    """The README's reader: one directory, one gateway at a time, shell state kept between blocks."""

    work: Path
    kafka: str
    gateway: Gateway | None = None
    log: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.work / "data"

    def start(self, kafka: str | None) -> None:
        port = self.gateway.port if self.gateway else None
        if self.gateway is not None:
            assert self.gateway.stop() == 0, self.gateway.log()
        # as a first start: no GATEWAY_ADMIN_KEY, the gateway writes data/admin.key
        gw = Gateway(self.data, kafka, env={"GATEWAY_ADMIN_KEY": ""}, **({"port": port} if port else {}))
        if self.gateway is not None:
            gw.catalog_topic = self.gateway.catalog_topic
        self.gateway = gw.start(wait_ready=False)
        gw.wait_ready(120)

    def shell(self, script: str, statuses: list[str], where: str) -> str:
        assert self.gateway is not None
        port = self.gateway.port
        for old in ("localhost:8000", "127.0.0.1:8000"):
            script = script.replace(old, f"127.0.0.1:{port}")
        script = script.replace("127.0.0.1:19092", self.kafka)
        state = self.work / ".readme-state"
        program = "\n".join(
            [
                "set -euo pipefail",
                f"[ -f {state} ] && . {state}",
                "_before=$(compgen -v)",
                "curl() { command curl -sS -w '%{stderr}README-STATUS %{http_code}\\n' \"$@\"; }",
                script,
                "",
                f'for _v in $(comm -13 <(echo "$_before" | sort) <(compgen -v | sort)); do '
                f'case $_v in _*|BASH*|PIPESTATUS|FUNCNAME|LINENO) ;; *) declare -p "$_v" >> {state};; '
                "esac; done",
            ]
        )
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        environ.update(
            {
                "PATH": f"{ROOT / '.venv' / 'bin'}:{environ['PATH']}",
                "KAFKA_DEV_PORT": self.kafka.rsplit(":", 1)[1],
                "GATEWAY_URL": f"http://127.0.0.1:{port}",
                "GATEWAY_CATALOG_TOPIC": self.gateway.catalog_topic,
            }
        )
        done = subprocess.run(
            ["bash", "-c", program], cwd=self.work, env=environ, capture_output=True, text=True, timeout=600
        )
        got = re.findall(r"^README-STATUS (\d{3})$", done.stderr, re.MULTILINE)
        context = f"{where}:\n{script}\n--- stdout:\n{done.stdout}\n--- stderr:\n{done.stderr}"
        assert done.returncode == 0, context
        assert got == statuses, f"statuses {got}, documented {statuses}; {context}"
        self.log.append(where)
        return done.stdout


# Lines that cannot run as written, by their exact text: what the test does instead.
def _first_start(run: Run) -> None:
    run.start(None)  # deploy/dev/run, in the foreground: the test starts that gateway itself


def _session_broker(run: Run) -> None:
    """kafka-dev start: the session's broker (tests/brokers.py) plays the development broker (it
    is running: this only checks that it listens; kafka-dev consume reaches it by its port)."""
    host, port = run.kafka.rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=30).close()


def _kafka_start(run: Run) -> None:
    run.start(run.kafka)  # Ctrl-C, then deploy/dev/run --kafka-bootstrap: same port, same ./data


MAPPED: dict[str, Callable[[Run], None]] = {
    QUICK_RUN: _first_start,
    KAFKA_START: _session_broker,
    KAFKA_RUN: _kafka_start,
}


def run_block(run: Run, block: Block) -> None:
    """Run a block line group by line group; mapped lines call their stand-in."""
    where = f"README.md:{block.line} ({block.section})"
    part: list[str] = []

    def flush() -> None:
        script = "\n".join(part)
        if script.strip():
            run.shell(script, STATUS.findall(script), where)
        part.clear()

    for line in block.text.splitlines():
        if line in MAPPED:
            flush()
            MAPPED[line](run)
        elif line == KEY_DELETE:  # a placeholder: the id of the key made above with --name edge
            part.append(
                'ingest-gateway keys delete "$(ingest-gateway keys list | python3 -c '
                '\'import json,sys; print(next(k["id"] for k in json.load(sys.stdin) '
                'if k["name"].startswith("edge ")))\')"'
            )
        else:
            part.append(line)
    flush()


def kafka_switch(block: Block) -> bool:
    return KAFKA_RUN in block.text.splitlines()


def test_every_shell_block_is_covered() -> None:
    """Each block of SECTIONS documents its curl statuses, and the mapped lines are all there (a
    README edit that drops or rewords one must update this test)."""
    blocks = readme_blocks()
    assert len(blocks) >= 9, [b.line for b in blocks]
    lines = {line for b in blocks for line in b.text.splitlines()}
    assert set(MAPPED) | {KEY_DELETE} <= lines, set(MAPPED) - lines
    for b in blocks:
        curls = len(re.findall(r"^\s*curl ", b.text, re.MULTILINE))
        assert len(STATUS.findall(b.text)) == curls, f"README.md:{b.line}: a curl without # → NNN"


@pytest.mark.parametrize("mode", ["embedded", "kafka"])
def test_readme_examples_run_as_written(mode: str, kafka: str, tmp_path: Path) -> None:
    """embedded: the quick start up to its Kafka part, then the other sections; kafka: the whole
    quick start (catalog carried over to Kafka, rows read back with kafka-dev consume), then the
    other sections against the Kafka gateway."""
    work = tmp_path / "readme"
    work.mkdir()
    for entry in ("deploy", "gateway", "pyproject.toml", ".venv"):  # deploy/dev/* find their root
        (work / entry).symlink_to(ROOT / entry)
    run = Run(work, kafka)
    blocks = readme_blocks()
    switch = next(i for i, b in enumerate(blocks) if kafka_switch(b))
    try:
        for i, block in enumerate(blocks):
            in_kafka_part = block.section == "Quick start" and i >= switch
            if mode == "embedded" and in_kafka_part:
                continue  # the embedded run stops where the quick start turns to Kafka
            run_block(run, block)
        assert run.gateway is not None
        assert (run.gateway.kafka is not None) == (mode == "kafka")
    finally:
        if run.gateway is not None:
            code = run.gateway.stop()
            assert code == 0, run.gateway.log()
