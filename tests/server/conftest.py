"""Fixtures that run the receiver on loopback for the server tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiosmtpd", reason="the server tests need the 'server' extra")

import pg_support
from server_support import RunningServer, make_settings
from store_backends import PostgresFactory, SQLiteFactory, StoreFactory


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database for the tests, or skip when none is available.

    ``LEADPARSE_TEST_DATABASE_URL`` names an existing database; otherwise a
    throwaway cluster is started for the session and stopped at its end.
    """
    import os

    pytest.importorskip("psycopg", reason="the PostgreSQL tests need psycopg")
    url = os.environ.get(pg_support.TEST_DATABASE_ENV)
    if url:
        yield url
        return
    bindir = pg_support.find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL not found (no pg_config, /usr/lib/postgresql/*/bin or "
            f"initdb on PATH); install it or set {pg_support.TEST_DATABASE_ENV}"
        )
    cluster = pg_support.TemporaryCluster(bindir)
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_schema_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL whose connections use a fresh schema, dropped after the test."""
    import psycopg

    url: str = request.getfixturevalue("postgres_url")
    schema = pg_support.new_schema_name()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    yield pg_support.with_schema(url, schema)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StoreFactory]:
    """Open stores of one backend on a fresh database; the test runs once per backend."""
    factory: StoreFactory
    if request.param == "sqlite":
        factory = SQLiteFactory(tmp_path / "data")
    else:
        factory = PostgresFactory(request.getfixturevalue("postgres_schema_url"))
    yield factory
    factory.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Any:
    """A store without encryption, of each backend in turn."""
    return store_factory.open()
