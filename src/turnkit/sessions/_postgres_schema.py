"""Creating and checking the PostgreSQL store's schema (`turnkit.sessions.postgres` describes the tables).

The schema is made on first use under an advisory lock; a schema made by an older turnkit is brought
up to date in place, and one whose layout version is newer than this code knows is refused.
"""

from __future__ import annotations

import secrets
from typing import Final

import psycopg
from psycopg.rows import TupleRow

from turnkit.errors import TurnkitError
from turnkit.sessions._codec import decode
from turnkit.sessions._postgres_sql import PostgresStatements
from turnkit.sessions._session_index import sessions_of_records

__all__ = ["SCHEMA_VERSION", "ensure_schema"]

SCHEMA_VERSION: Final = 1
_LOCK_CLASS: Final = 0x746B  # "tk": the advisory-lock namespace of schema creation

_Conn = psycopg.AsyncConnection[TupleRow]


async def ensure_schema(conn: _Conn, statements: PostgresStatements, schema: str) -> None:
    """Check the schema's version on a connection the caller holds, first creating the schema if
    it is not there."""
    try:
        async with conn.transaction():
            version = await _version(conn, statements)
    except psycopg.errors.UndefinedTable:
        version = None
    if version is None:
        # Under a lock: concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
        async with conn.transaction():
            await conn.execute(statements.lock, (_LOCK_CLASS, schema))
            for statement in statements.ddl:
                await conn.execute(statement)
            version = await _version(conn, statements)
            if version is None:
                await conn.execute(statements.write_version, (SCHEMA_VERSION, secrets.token_hex(8)))
                version = SCHEMA_VERSION
    await _ensure_session_column(conn, statements, schema)
    if version > SCHEMA_VERSION:
        raise TurnkitError(
            "FAILED_PRECONDITION",
            f"PostgreSQL schema {schema!r} holds turnkit storage version {version}; this turnkit"
            f" reads version {SCHEMA_VERSION} at most: upgrade turnkit or use another schema",
        )


async def _ensure_session_column(conn: _Conn, statements: PostgresStatements, schema: str) -> None:
    """Give a schema made before records had a session column that column, filled, and its index."""
    async with conn.transaction():
        if await (await conn.execute(statements.has_session_column, (schema,))).fetchone():
            return
    async with conn.transaction():
        await conn.execute(statements.lock, (_LOCK_CLASS, schema))
        if await (await conn.execute(statements.has_session_column, (schema,))).fetchone():
            return  # another process added it meanwhile
        await conn.execute(statements.add_session_column)
        rows = await (await conn.execute(statements.all_records)).fetchall()
        owners = sessions_of_records((t, k, decode(d)) for t, k, d in rows)
        async with conn.cursor() as cur:
            await cur.executemany(statements.set_session, [(s, t, k) for (t, k), s in owners.items()])
        await conn.execute(statements.session_index)


async def _version(conn: _Conn, statements: PostgresStatements) -> int | None:
    row = await (await conn.execute(statements.read_version)).fetchone()
    return None if row is None else int(row[0])
