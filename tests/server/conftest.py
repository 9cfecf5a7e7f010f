"""Fixtures that run the receiver on loopback for the server tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiosmtpd", reason="the server tests need the 'server' extra")

from server_support import RunningServer, make_settings


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start a receiver with overridden settings; every one is stopped at teardown."""
    servers: list[RunningServer] = []

    def start(**overrides: Any) -> RunningServer:
        data_dir = tmp_path / f"data{len(servers)}"
        server = RunningServer(make_settings(data_dir, **overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
