"""The SQL of the PostgreSQL store (`turnkit.sessions.postgres`, whose docstring describes the tables)."""

from __future__ import annotations

import functools

from psycopg import sql

__all__ = ["PostgresStatements", "statements_for"]


class PostgresStatements:
    """Every statement the backend runs, composed once for one schema (identifiers quoted by psycopg)."""

    def __init__(self, schema: str) -> None:
        def q(text: str) -> bytes:
            tables = {t: sql.Identifier(schema, t) for t in ("records", "heads", "logs", "leases")}
            version = sql.Identifier(schema, "schema_version")
            return sql.SQL(text).format(schema=sql.Identifier(schema), version=version, **tables).as_bytes()

        key = 'text COLLATE "C" NOT NULL'  # byte-wise equality and ordering: ids are stored exactly
        # Unqualified: an index lives in its table's schema.
        self.session_index = q(
            "CREATE INDEX IF NOT EXISTS records_by_session ON {records} (tenant, session_id)"
        )
        self.ddl = [
            q("CREATE SCHEMA IF NOT EXISTS {schema}"),
            q(
                "CREATE TABLE IF NOT EXISTS {version} ("
                " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), version integer NOT NULL,"
                " epoch text)"
            ),
            q(
                f"CREATE TABLE IF NOT EXISTS {{records}} (tenant {key}, id {key}, rev bigint NOT NULL,"
                ' data bytea NOT NULL, writer bigint NOT NULL, session_id text COLLATE "C",'
                " PRIMARY KEY (tenant, id))"
            ),
            q(
                f"CREATE TABLE IF NOT EXISTS {{heads}} (tenant {key}, session_id {key},"
                " snapshot_id text NOT NULL, PRIMARY KEY (tenant, session_id))"
            ),
            q(
                f"CREATE TABLE IF NOT EXISTS {{logs}} (tenant {key}, log_id {key}, seq integer NOT NULL,"
                " entry bytea NOT NULL, writer bigint, PRIMARY KEY (tenant, log_id, seq))"
            ),
            q(
                f"CREATE TABLE IF NOT EXISTS {{leases}} (tenant {key}, name {key}, owner text NOT NULL,"
                " expires_at timestamptz NOT NULL, PRIMARY KEY (tenant, name))"
            ),
            self.session_index,
        ]
        self.lock = b"SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
        self.read_version = q("SELECT version FROM {version}")
        self.write_version = q("INSERT INTO {version} (version, epoch) VALUES (%s, %s)")
        # The store's identity (see `turnkit.sessions._retention`); the column came after version 1.
        self.add_epoch = q("ALTER TABLE {version} ADD COLUMN IF NOT EXISTS epoch text")
        self.epoch = q("UPDATE {version} SET epoch = coalesce(epoch, %s) RETURNING epoch")
        self.get_record = q("SELECT rev, data FROM {records} WHERE tenant = %s AND id = %s")
        self.get_writer = q("SELECT rev, writer FROM {records} WHERE tenant = %s AND id = %s")
        self.get_head = q("SELECT snapshot_id FROM {heads} WHERE tenant = %s AND session_id = %s")
        # Ids are COLLATE "C": byte order of UTF-8, which is code-point order (the primary key's order).
        self.list_heads = q(
            "SELECT session_id, snapshot_id FROM {heads} WHERE tenant = %s AND session_id > %s"
            " ORDER BY session_id LIMIT %s"
        )
        # A put: the compare-and-set, the head move (if any) and the notification, all in one statement.
        held = "EXISTS (SELECT FROM {leases} WHERE tenant = %(t)s AND name = %(fn)s AND owner = %(fo)s)"
        # A record's session: its snapshot's (%(s)s, the head it moves), or for a spilled state, that
        # of the snapshot it was kept for (%(o)s).
        insert = (
            "INSERT INTO {records} (tenant, id, rev, data, writer, session_id)"
            " SELECT %(t)s, %(k)s, 1, %(d)s, %(w)s, coalesce(%(s)s::text,"
            " (SELECT session_id FROM {records} WHERE tenant = %(t)s AND id = %(o)s))"
            " {fence} ON CONFLICT DO NOTHING RETURNING 1"
        )
        update = (
            "UPDATE {records} SET rev = rev + 1, data = %(d)s, writer = %(w)s"
            " WHERE tenant = %(t)s AND id = %(k)s AND rev = %(r)s {and_fence} RETURNING 1"
        )
        head = (
            ", head AS (INSERT INTO {heads} (tenant, session_id, snapshot_id) SELECT %(t)s, %(s)s, %(k)s"
            " FROM put ON CONFLICT (tenant, session_id) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id)"
        )
        notify = " SELECT pg_notify(%(c)s, %(p)s) FROM put"

        # The parent must still exist; KEY SHARE makes a concurrent delete of it wait for this write
        # (which that deletion then finds), or this write see it gone.
        parent = "EXISTS (SELECT FROM {records} WHERE tenant = %(t)s AND id = %(q)s FOR KEY SHARE)"

        def put(new: bool, fenced: bool, requires: bool) -> str:
            # Fenced: the write happens only while the lease is still the writer's (see `_lease`).
            if new:
                where = [c for c, on in ((held, fenced), (parent, requires)) if on]
                return insert.replace(" {fence}", f" WHERE {' AND '.join(where)}" if where else "")
            return update.replace(" {and_fence}", f" AND {held}" if fenced else "")

        self.put = {
            (new, with_head, fenced, requires): q(
                f"WITH put AS ({put(new, fenced, requires)}){head if with_head else ''}{notify}"
            )
            for new in (True, False)
            for with_head in (True, False)
            for fenced in (True, False)
            for requires in ((True, False) if new else (False,))
        }
        self.lease_held = q("SELECT 1 FROM {leases} WHERE tenant = %s AND name = %s AND owner = %s")
        self.renew_lease = q(
            "UPDATE {leases} SET expires_at = now() + make_interval(secs => %(ttl)s)"
            " WHERE tenant = %(t)s AND name = %(n)s AND owner = %(o)s RETURNING 1"
        )
        self.tenants = q(
            "SELECT tenant FROM {records} UNION SELECT tenant FROM {heads} UNION SELECT tenant FROM {logs}"
        )
        self.scan_records = q("SELECT id, rev, data FROM {records} WHERE tenant = %s")
        self.scan_session = q("SELECT id, rev, data FROM {records} WHERE tenant = %s AND session_id = %s")
        # The session column came after version 1 shipped: older schemas get it, filled, on opening.
        self.has_session_column = (
            b"SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = 'records'"
            b" AND column_name = 'session_id'"
        )
        self.add_session_column = q(
            'ALTER TABLE {records} ADD COLUMN IF NOT EXISTS session_id text COLLATE "C"'
        )
        self.all_records = q("SELECT tenant, id, data FROM {records}")
        self.set_session = q("UPDATE {records} SET session_id = %s WHERE tenant = %s AND id = %s")
        self.delete_records = q("DELETE FROM {records} WHERE tenant = %s AND id = ANY(%s)")
        self.delete_logs = q("DELETE FROM {logs} WHERE tenant = %s AND log_id = ANY(%s)")
        self.delete_heads = q("DELETE FROM {heads} WHERE tenant = %s AND session_id = ANY(%s)")
        self.append = q(
            "INSERT INTO {logs} (tenant, log_id, seq, entry, writer)"
            " SELECT %(t)s, %(l)s, %(s)s + u.n - 1, u.entry, CASE WHEN u.n = 1 THEN %(w)s::bigint END"
            " FROM unnest(%(e)s::bytea[]) WITH ORDINALITY AS u(entry, n)"
            " WHERE %(s)s = 0 OR EXISTS"
            " (SELECT FROM {logs} WHERE tenant = %(t)s AND log_id = %(l)s AND seq = %(s)s - 1)"
        )
        self.log_length_is = q(
            "SELECT (%(s)s = 0 OR EXISTS (SELECT FROM {logs} WHERE tenant = %(t)s AND log_id = %(l)s"
            " AND seq = %(s)s - 1)) AND NOT EXISTS"
            " (SELECT FROM {logs} WHERE tenant = %(t)s AND log_id = %(l)s AND seq = %(s)s)"
        )
        self.log_writer = q("SELECT writer FROM {logs} WHERE tenant = %s AND log_id = %s AND seq = %s")
        self.read_log = q(
            "SELECT entry FROM {logs} WHERE tenant = %s AND log_id = %s AND seq >= %s AND seq < %s"
            " ORDER BY seq"
        )
        self.try_lease = q(
            "INSERT INTO {leases} AS l (tenant, name, owner, expires_at)"
            " VALUES (%(t)s, %(n)s, %(o)s, now() + make_interval(secs => %(ttl)s))"
            " ON CONFLICT (tenant, name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at"
            " WHERE l.owner = EXCLUDED.owner OR l.expires_at < now() RETURNING 1"
        )
        self.release_lease = q("DELETE FROM {leases} WHERE tenant = %s AND name = %s AND owner = %s")


@functools.lru_cache(maxsize=64)
def statements_for(schema: str) -> PostgresStatements:
    """The statements of one schema (composed once per process)."""
    return PostgresStatements(schema)
