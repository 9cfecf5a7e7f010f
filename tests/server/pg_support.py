"""A throwaway PostgreSQL cluster for the tests and the scale benchmark.

The cluster lives in a temporary folder, listens on 127.0.0.1 on a free port
and on a Unix socket in the same folder, and runs with ``fsync=off`` because
its data is thrown away. ``initdb`` refuses to run as root, so under root the
cluster runs as an unprivileged user (``nobody`` unless
``LEADPARSE_TEST_PG_USER`` names another) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

TEST_DATABASE_ENV = "LEADPARSE_TEST_DATABASE_URL"
"""Environment variable with the URL of an existing database to test against."""

_USER_ENV = "LEADPARSE_TEST_PG_USER"


def find_bindir() -> Path | None:
    """Return the folder of ``initdb`` and ``pg_ctl``, or ``None`` when absent.

    Looks at ``pg_config --bindir``, then ``/usr/lib/postgresql/*/bin``
    (Debian's layout, newest version first), then ``PATH``.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            output = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            output = ""
        if output:
            candidates.append(Path(output))
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: (
            int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0
        ),
        reverse=True,
    )
    candidates.extend(Path(path) for path in debian)
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TemporaryCluster:
    """A PostgreSQL cluster in a temporary folder, started and stopped on request.

    Args:
        bindir: folder of ``initdb``, ``pg_ctl`` and ``postgres``.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="leadparse-pg-"))
        self.data_dir = self.root / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = os.environ.get(_USER_ENV, "nobody")
            account = pwd.getpwnam(self.user)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.role = self.user or pwd.getpwuid(os.geteuid()).pw_name
        self._started = False

    def _run(self, args: Sequence[str], timeout: float = 120.0) -> None:
        command = list(args)
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed with status {result.returncode}: "
                f"{result.stdout}{result.stderr}"
            )

    def start(self) -> TemporaryCluster:
        """Run ``initdb`` and start the server; return self."""
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-U",
                self.role,
            ]
        )
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self._started = True
        return self

    @property
    def url(self) -> str:
        """Connection URL of the ``postgres`` database over TCP."""
        return f"postgresql://{quote(self.role)}@127.0.0.1:{self.port}/postgres"

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the server log, for failure messages."""
        try:
            text = (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "".join(text.splitlines(keepends=True)[-lines:])

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the folder."""
        try:
            if self._started:
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "fast",
                        "-w",
                        "stop",
                    ]
                )
        finally:
            self._started = False
            shutil.rmtree(self.root, ignore_errors=True)


def with_schema(url: str, schema: str) -> str:
    """Return *url* with ``search_path`` set to *schema* for every connection."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=" + quote(f"-csearch_path={schema}", safe="")


def new_schema_name() -> str:
    """Return a unique schema name for one test."""
    return "test_" + uuid.uuid4().hex[:12]
