"""Open the same store tests against SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leadparse.server.crypto import RawCipher
from leadparse.server.store import DATABASE_NAME, SQLiteStore, Store


class StoreFactory:
    """Opens stores of one backend on one fresh database, and closes them all.

    Attributes:
        backend: ``"sqlite"`` or ``"postgresql"``.
        integrity_error: the exception a unique-constraint violation raises.
    """

    backend = ""
    integrity_error: type[Exception] = Exception

    def __init__(self) -> None:
        self._stores: list[Store] = []

    def open(
        self, *, cipher: RawCipher | None = None, lease_timeout: float = 300.0
    ) -> Store:
        store = self._open(cipher=cipher, lease_timeout=lease_timeout)
        self._stores.append(store)
        return store

    def _open(self, *, cipher: RawCipher | None, lease_timeout: float) -> Store:
        raise NotImplementedError

    def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the store, commit, and return its rows.

        Placeholders are written ``?`` and translated for PostgreSQL.
        """
        raise NotImplementedError

    def close(self) -> None:
        for store in self._stores:
            store.close()
        self._stores.clear()


class SQLiteFactory(StoreFactory):
    backend = "sqlite"
    integrity_error = sqlite3.IntegrityError

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = data_dir

    def _open(self, *, cipher: RawCipher | None, lease_timeout: float) -> Store:
        return SQLiteStore(self.data_dir, cipher=cipher, lease_timeout=lease_timeout)

    def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(self.data_dir / DATABASE_NAME)
        try:
            rows = connection.execute(query, tuple(params)).fetchall()
            connection.commit()
        finally:
            connection.close()
        return rows


class PostgresFactory(StoreFactory):
    backend = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        super().__init__()
        self.url = url
        self.integrity_error = psycopg.IntegrityError

    def _open(self, *, cipher: RawCipher | None, lease_timeout: float) -> Store:
        from leadparse.server.pg_store import PostgresStore

        return PostgresStore(
            self.url, cipher=cipher, lease_timeout=lease_timeout, pool_size=4
        )

    def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url) as connection:
            cursor = connection.execute(query.replace("?", "%s"), tuple(params))
            return cursor.fetchall() if cursor.description else []
