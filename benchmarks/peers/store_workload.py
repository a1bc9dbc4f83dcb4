"""The workload and the storage measurements `benchmarks/stores.py` shares with its peer scripts.

Standard library only: it is imported by `stores.py` in turnkit's environment (as
`peers.store_workload`) and by the peer scripts in their own virtualenvs (as `store_workload`, the
script's directory being on `sys.path`), so every framework gets the same messages and every store
of one kind is measured by the same function.

Workload: turn N sends `user_message(N)` (200 characters) and the model answers `reply(N)` (400
characters); both are pseudo-random with a fixed seed, ASCII, with no character JSON has to escape.

Measurements, taken between turns (never inside a timed turn):
- SQLite: `page_count * page_size` from a fresh read-only connection (what the database file
  holds once the WAL is checkpointed, free pages included) and the payload (the bytes of every
  column of every row of every table);
- PostgreSQL (through `psql`): `pg_total_relation_size` summed over the tables of a schema
  (heap, TOAST, indexes, free-space and visibility maps, dead rows included) and the payload
  (over every column of every live row: `octet_length` of text and `bytea` values, uncompressed,
  and `pg_column_size` of other types, e.g. 8 for a bigint, jsonb's binary size);
- Redis (through `redis-cli`, one Lua script): `MEMORY USAGE ... SAMPLES 0` summed over the
  keys of a prefix, and the payload (key names plus values: string lengths, list items, hash
  fields and values, set and sorted-set members).
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
from pathlib import Path

USER_CHARS = 200
REPLY_CHARS = 400
SEED = 20240601
CHECKPOINTS = (10, 100, 200)
WINDOW = 10
# Letters, digits, space and a little punctuation: nothing JSON escapes, so sizes are comparable.
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      .,;:!?-()"


def _text(rng: random.Random, prefix: str, length: int) -> str:
    return (prefix + "".join(rng.choices(_ALPHABET, k=length)))[:length]


def user_message(turn: int) -> str:
    """The user's message at `turn` (1-based): exactly 200 characters."""
    return _text(random.Random(SEED * 1_000_003 + turn), f"turn {turn}: ", USER_CHARS)


def reply(turn: int) -> str:
    """The model's reply at `turn` (1-based): exactly 400 characters."""
    return _text(random.Random(SEED * 2_000_003 + turn), "", REPLY_CHARS)


def history_json_bytes(pairs: list[tuple[str, str]]) -> int:
    """Size of a history of (role, text) as compact JSON in turnkit's wire shape
    (`{"role": "user" | "model", "content": [{"text": ...}]}`), UTF-8."""
    wire = [{"role": role, "content": [{"text": text}]} for role, text in pairs]
    return len(json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode())


def expected_history(turns: int) -> list[tuple[str, str]]:
    """The history every framework must hold after `turns` turns."""
    out: list[tuple[str, str]] = []
    for turn in range(1, turns + 1):
        out += [("user", user_message(turn)), ("model", reply(turn))]
    return out


# --- SQLite -----------------------------------------------------------------------------------------


def sqlite_bytes(path: str | Path) -> dict[str, int]:
    """`file`: page_count * page_size; `payload`: bytes of every column of every row."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        payload = 0
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({quoted})")]
            if not cols:
                continue
            expr = " + ".join(
                'coalesce(length(CAST("{}" AS BLOB)), 0)'.format(c.replace('"', '""')) for c in cols
            )
            payload += conn.execute(f"SELECT coalesce(sum({expr}), 0) FROM {quoted}").fetchone()[0]
    finally:
        conn.close()
    return {"file": page_count * page_size, "payload": payload}


# --- PostgreSQL -------------------------------------------------------------------------------------


def psql(url: str, sql: str) -> str:
    """Run `sql` with psql against `url`; return its unaligned, tuples-only output."""
    proc = subprocess.run(
        ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"psql failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def pg_create_schema(url: str, schema: str) -> None:
    """A fresh, empty schema."""
    psql(url, f"DROP SCHEMA IF EXISTS {_ident(schema)} CASCADE; CREATE SCHEMA {_ident(schema)};")


def pg_drop_schema(url: str, schema: str) -> None:
    """Drop a schema and everything in it."""
    psql(url, f"DROP SCHEMA IF EXISTS {_ident(schema)} CASCADE;")


# Measured by octet_length (uncompressed bytes); any other type by pg_column_size (its stored size).
_TEXT_TYPES = frozenset({"text", "bytea", "character varying", "character"})


def pg_bytes(url: str, schema: str) -> dict[str, int]:
    """`relations`: pg_total_relation_size over the schema's tables; `payload`: over every column of
    every live row, octet_length of text and bytea values and pg_column_size of any other type."""
    rows = psql(
        url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = {_lit(schema)} ORDER BY table_name, ordinal_position",
    )
    columns: dict[str, list[tuple[str, str]]] = {}
    for line in filter(None, rows.splitlines()):
        table, column, data_type = line.split("|")
        columns.setdefault(table, []).append((column, data_type))
    if not columns:
        return {"relations": 0, "payload": 0}
    parts = []
    for table, cols in columns.items():
        expr = " + ".join(
            f"coalesce(octet_length({_ident(c)}), 0)"
            if t in _TEXT_TYPES
            else f"coalesce(pg_column_size({_ident(c)}), 0)"
            for c, t in cols
        )
        parts.append(f"(SELECT coalesce(sum({expr}), 0) FROM {_ident(schema)}.{_ident(table)})")
    relations = (
        "(SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE n.nspname = {_lit(schema)} AND c.relkind IN ('r', 'p', 'm'))"
    )
    out = psql(url, f"SELECT {relations}, {' + '.join(parts)}")
    rel, payload = out.split("|")
    return {"relations": int(rel), "payload": int(payload)}


# --- Redis ------------------------------------------------------------------------------------------

_REDIS_MEASURE = """
local memory, payload, keys = 0, 0, 0
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = page[1]
  for _, k in ipairs(page[2]) do
    keys = keys + 1
    memory = memory + (redis.call('MEMORY', 'USAGE', k, 'SAMPLES', 0) or 0)
    payload = payload + string.len(k)
    local t = redis.call('TYPE', k)['ok']
    if t == 'string' then
      payload = payload + redis.call('STRLEN', k)
    elseif t == 'list' then
      for _, v in ipairs(redis.call('LRANGE', k, 0, -1)) do payload = payload + string.len(v) end
    elseif t == 'hash' then
      for _, v in ipairs(redis.call('HGETALL', k)) do payload = payload + string.len(v) end
    elseif t == 'set' then
      for _, v in ipairs(redis.call('SMEMBERS', k)) do payload = payload + string.len(v) end
    elseif t == 'zset' then
      for _, v in ipairs(redis.call('ZRANGE', k, 0, -1)) do payload = payload + string.len(v) end
    end
  end
until cursor == '0'
return {memory, payload, keys}
"""

_REDIS_DELETE = """
local n, cursor = 0, '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = page[1]
  for _, k in ipairs(page[2]) do n = n + redis.call('DEL', k) end
until cursor == '0'
return n
"""


def _glob_escape(prefix: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"


def redis_bytes(url: str, prefix: str) -> dict[str, int]:
    """`memory`: MEMORY USAGE summed over the prefix's keys; `payload`: key names plus values."""
    out = subprocess.run(
        ["redis-cli", "-u", url, "--raw", "EVAL", _REDIS_MEASURE, "0", _glob_escape(prefix)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    values = out.stdout.split()
    if out.returncode != 0 or len(values) != 3 or not all(v.isdigit() for v in values):
        raise RuntimeError(f"redis-cli failed: {(out.stderr or out.stdout).strip()}")
    memory, payload, keys = (int(v) for v in values)
    return {"memory": memory, "payload": payload, "keys": keys}


def redis_delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under `prefix`; return how many."""
    out = subprocess.run(
        ["redis-cli", "-u", url, "--raw", "EVAL", _REDIS_DELETE, "0", _glob_escape(prefix)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise RuntimeError(f"redis-cli failed: {(out.stderr or out.stdout).strip()}")
    return int(out.stdout.strip())


def summary_windows(turns: int) -> list[tuple[str, int, int]]:
    """The first and last WINDOW turns as (label, start index, end index)."""
    first = (f"1-{min(WINDOW, turns)}", 0, min(WINDOW, turns))
    if turns <= WINDOW:
        return [first]
    lo = max(turns - WINDOW, WINDOW)
    return [first, (f"{lo + 1}-{turns}", lo, turns)]


def checkpoints(turns: int) -> list[int]:
    """Turns after which storage is measured: 0 (after setup, before the first turn), 10, 100, 200
    (those not past `turns`), `turns // 2` and `turns` (so growth is always last / half-way)."""
    return sorted({0, turns // 2, turns, *(c for c in CHECKPOINTS if c <= turns)})
