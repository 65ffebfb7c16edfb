"""What earlier rows of a sheet said, kept in a temporary table so that memory stays flat in the file size.

A sheet's later rows are checked against its earlier ones (the same order stated twice, the same line
twice with different content, a customer's email or an agreement's customer stated differently).
Keeping every record met in memory grows with the file; here each batch reads back the state of the
records it meets and writes it again when it is done, one query each.
The table lives in the import's transaction and connection, and is dropped with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.db import connection


class FileState:
    """A key -> JSON document store for the duration of one import."""

    def __init__(self) -> None:
        self.postgres = connection.vendor == "postgresql"

    def open(self) -> None:
        with connection.cursor() as cursor:
            self._drop(cursor)
            cursor.execute(
                "CREATE TEMPORARY TABLE licensing_import_file_state (key text PRIMARY KEY, state text NOT NULL)"
            )

    def close(self) -> None:
        with connection.cursor() as cursor:
            self._drop(cursor)

    def _drop(self, cursor) -> None:
        # Named in its temporary schema, so that a permanent table of the same name is never touched.
        if self.postgres:
            cursor.execute("DROP TABLE IF EXISTS pg_temp.licensing_import_file_state")
        else:
            cursor.execute("DROP TABLE IF EXISTS temp.licensing_import_file_state")

    def load(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return the stored document of each key that has one."""
        keys = list(keys)
        if not keys:
            return {}
        with connection.cursor() as cursor:
            if self.postgres:
                cursor.execute("SELECT key, state FROM licensing_import_file_state WHERE key = ANY(%s)", [keys])
            else:
                # One JSON parameter: SQLite limits how many parameters a statement may have.
                cursor.execute(
                    "SELECT key, state FROM licensing_import_file_state WHERE key IN (SELECT value FROM json_each(%s))",
                    [json.dumps(keys)],
                )
            return {key: json.loads(state) for key, state in cursor.fetchall()}

    def save(self, states: dict[str, Any]) -> None:
        """Store (or replace) the document of each key."""
        if not states:
            return
        # One JSON parameter for the whole batch: nothing to escape, one statement on both databases.
        document = json.dumps(states, separators=(",", ":"))
        with connection.cursor() as cursor:
            if self.postgres:
                cursor.execute(
                    "INSERT INTO licensing_import_file_state (key, state) "
                    "SELECT key, value FROM jsonb_each_text(%s::jsonb) "
                    "ON CONFLICT (key) DO UPDATE SET state = EXCLUDED.state",
                    [document],
                )
            else:
                # "WHERE true" tells SQLite's parser that ON CONFLICT belongs to the INSERT.
                cursor.execute(
                    "INSERT INTO licensing_import_file_state (key, state) "
                    "SELECT key, value FROM json_each(%s) WHERE true "
                    "ON CONFLICT (key) DO UPDATE SET state = excluded.state",
                    [document],
                )
