"""The SQL a pgsql writer sends: one COPY and one or two set-based statements per (batch, table).

Each batch is loaded with COPY into a temporary staging table whose columns
have the target's types (CREATE TEMP TABLE .. AS SELECT .. FROM target WITH
NO DATA; time columns staged as epoch seconds), then moved in one statement:
- default (pmacct's UPDATE-then-INSERT): an upsert, INSERT .. SELECT .. ON
  CONFLICT (unique key) DO UPDATE adding counters (tcp_flags OR-ed) when the
  table has a primary key / unique index over written columns; otherwise,
  under LOCK .. IN EXCLUSIVE MODE like nfacctd, one UPDATE .. FROM staging and
  one INSERT .. WHERE NOT EXISTS;
- sql_dont_try_update: a plain INSERT .. SELECT.
Times become `to_timestamp(<secs>)::timestamp` on the server, as nfacctd
sends them (so the server's TimeZone decides the wall-clock text, as for it).
"""
from __future__ import annotations

import io
import re
from typing import Optional

from .columns import Column, key_columns, staged_columns

STAGE = "pmengine_stage"
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")

UNIQUE_KEYS_SQL = """
SELECT i.indisprimary, array_agg(a.attname::text ORDER BY k.ord)
FROM pg_index i
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid, i.indisprimary
ORDER BY i.indisprimary DESC
"""


def table_sql(name: str) -> str:
    """A table name as pmacct sends it (bare, folded to lower case by the server) unless it needs quotes."""
    if _PLAIN_NAME.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def table_exists(cur, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table_sql(name),))
    return bool(cur.fetchone()[0])


def unique_key(cur, name: str, columns: list[Column]) -> Optional[list[str]]:
    """The columns of the table's primary key (else first unique index) made only of written columns."""
    written = {c.name for c in columns}
    cur.execute(UNIQUE_KEYS_SQL, (table_sql(name),))
    for _primary, cols in cur.fetchall():
        if set(cols) <= written:
            return list(cols)
    return None


def _value(c: Column, src: str, now: int) -> str:
    if c.role == "epoch":
        return f"to_timestamp({src}.{c.name})::timestamp"
    if c.role == "stamp":
        return f"to_timestamp({now})::timestamp"
    return f"{src}.{c.name}"


def _updates(columns: list[Column], target: str, new: str) -> list[str]:
    sets = []
    for c in columns:
        if c.role == "counter":
            sets.append(f"{c.name} = {target}.{c.name} + {new}.{c.name}")
        elif c.role == "or":
            sets.append(f"{c.name} = {target}.{c.name} | {new}.{c.name}")
        elif c.role == "stamp":
            sets.append(f"{c.name} = {new}.{c.name}" if new == "EXCLUDED" else f"{c.name} = CURRENT_TIMESTAMP(0)")
    return sets


def write_batch(cur, table: str, columns: list[Column], text: str, now: int, mode: str,
                conflict: Optional[list[str]]) -> None:
    """Load COPY text into `table` in the caller's transaction; mode: "upsert" or "insert"."""
    t = table_sql(table)
    staged = staged_columns(columns)
    select = ", ".join(f"NULL::bigint AS {c.name}" if c.role == "epoch" else c.name for c in staged)
    cur.execute(f"CREATE TEMP TABLE {STAGE} ON COMMIT DROP AS SELECT {select} FROM {t} WITH NO DATA")
    cur.copy_expert(f"COPY {STAGE} ({', '.join(c.name for c in staged)}) FROM STDIN", io.StringIO(text))
    names = ", ".join(c.name for c in columns)
    values = ", ".join(_value(c, "s", now) for c in columns)
    insert = f"INSERT INTO {t} AS t ({names}) SELECT {values} FROM {STAGE} s"
    if mode == "insert":
        cur.execute(insert)
    elif conflict:
        sets = ", ".join(_updates(columns, "t", "EXCLUDED"))
        action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
        cur.execute(f"{insert} ON CONFLICT ({', '.join(conflict)}) {action}")
    else:
        match = " AND ".join(f"t.{c.name} = {_value(c, 's', now)}" for c in key_columns(columns)) or "true"
        cur.execute(f"LOCK {t} IN EXCLUSIVE MODE")
        sets = ", ".join(_updates(columns, "t", "s"))
        if sets:
            cur.execute(f"UPDATE {t} AS t SET {sets} FROM {STAGE} s WHERE {match}")
        cur.execute(f"{insert} WHERE NOT EXISTS (SELECT 1 FROM {t} AS t WHERE {match})")
    cur.execute(f"DROP TABLE {STAGE}")
