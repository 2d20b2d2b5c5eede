"""Key table section: the pgsql plugin (`sql_*` keys) and its typed options.

sql_refresh_time / sql_history / sql_history_roundoff fill the generic plugin
fields (shared with print_* of print plugins); the rest fill SqlOptions.
sql_max_writers bounds what is kept while the server is unreachable, as in
pmacct: up to N-1 purges queue up, later ones are dropped, counted and logged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from engine.config.values import (PLUGIN, Key, format_bool, int_range, parse_bool, parse_history,
                                  parse_roundoff, parse_text, positive_int)

_SQL = ("pgsql",)
TABLE_VERSIONS = range(1, 10)
AS_PRIMITIVES = ("src_as", "dst_as")
MAX_TABLE_NAME = 64


def parse_sql_host(text: str) -> str:
    """A host name or address (pmacct's `unix:` socket form is MySQL only)."""
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"bad sql_host {text!r}")
    return text


def parse_table_name(text: str) -> str:
    """sql_table: a table name, possibly with strftime variables, $peer_src_ip, $ref, $hst."""
    if len(text) > MAX_TABLE_NAME:
        raise ValueError(f"bad sql_table {text!r}: at most {MAX_TABLE_NAME} characters")
    return text


@dataclass
class SqlOptions:
    """PluginConfig.options of a pgsql plugin."""
    host: str = "localhost"                 # sql_host
    port: int = 5432                        # sql_port
    db: str = "pmacct"                      # sql_db
    user: str = "pmacct"                    # sql_user
    passwd: str = "arealsmartpwd"           # sql_passwd
    table: Optional[str] = None             # sql_table (None: the default table of table_version)
    table_version: int = 1                  # sql_table_version
    table_schema: Optional[str] = None      # sql_table_schema: file with the CREATE TABLE of missing tables
    optimize_clauses: bool = False          # sql_optimize_clauses: columns are the aggregate's only
    dont_try_update: bool = False           # sql_dont_try_update: INSERT only, no upsert
    use_copy: bool = False                  # sql_use_copy: accepted; pmengine always loads with COPY
    multi_values: int = 0                   # sql_multi_values: accepted; writes are one statement per batch
    max_writers: int = 10                   # sql_max_writers: N-1 purges are kept while the server is away

    def validate(self, plugin) -> Optional[tuple[str, str]]:
        if not self.optimize_clauses and self.table_version < 6 and any(p in AS_PRIMITIVES for p in
                                                                        plugin.aggregate):
            return ("sql_table_version", "src_as/dst_as need sql_table_version 6 or later (pmacct's older "
                    "tables put AS numbers in ip_src/ip_dst: not supported) or sql_optimize_clauses")
        return None


SQL_KEYS: tuple[Key, ...] = (
    Key("sql_host", parse_sql_host, PLUGIN, "localhost", ("options.host",), _SQL),
    Key("sql_port", int_range(1, 65535), PLUGIN, 5432, ("options.port",), _SQL),
    Key("sql_db", parse_text, PLUGIN, "pmacct", ("options.db",), _SQL),
    Key("sql_user", parse_text, PLUGIN, "pmacct", ("options.user",), _SQL),
    Key("sql_passwd", parse_text, PLUGIN, "arealsmartpwd", ("options.passwd",), _SQL),
    Key("sql_table", parse_table_name, PLUGIN, None, ("options.table",), _SQL),
    Key("sql_table_version", int_range(1, 9), PLUGIN, 1, ("options.table_version",), _SQL),
    Key("sql_table_schema", parse_text, PLUGIN, None, ("options.table_schema",), _SQL),
    Key("sql_optimize_clauses", parse_bool, PLUGIN, False, ("options.optimize_clauses",), _SQL, format=format_bool),
    Key("sql_dont_try_update", parse_bool, PLUGIN, False, ("options.dont_try_update",), _SQL, format=format_bool),
    Key("sql_use_copy", parse_bool, PLUGIN, False, ("options.use_copy",), _SQL, format=format_bool),
    Key("sql_multi_values", int_range(0, 2**31 - 1), PLUGIN, 0, ("options.multi_values",), _SQL),
    Key("sql_max_writers", int_range(2, 10_000), PLUGIN, 10, ("options.max_writers",), _SQL,
        doc="up to N-1 purges are kept while the server is unreachable; later ones are dropped and counted"),
    Key("sql_refresh_time", positive_int, PLUGIN, 60, ("plugin.refresh_time",), _SQL),
    Key("sql_history", parse_history, PLUGIN, (None, 0), ("plugin.history", "plugin.history_secs"), _SQL,
        format=lambda value: value[0]),
    Key("sql_history_roundoff", parse_roundoff, PLUGIN, "", ("plugin.history_roundoff",), _SQL),
)
