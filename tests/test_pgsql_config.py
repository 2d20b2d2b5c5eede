"""pgsql plugin keys -> the typed tree (pure logic: no server), and the columns each configuration writes."""
from __future__ import annotations

import pytest

from engine.config import ConfigError, loads_config
from engine.config.keys_sql import SqlOptions
from engine.plugins.pgsql.columns import default_table, plan_columns


def test_sql_keys_fill_options_and_generic_fields():
    cfg = loads_config("plugins: pgsql[a], print[b]\nsql_host[a]: 10.0.0.5\nsql_port[a]: 5433\nsql_db[a]: flows\n"
                       "sql_user[a]: u\nsql_passwd[a]: p\nsql_table[a]: acct_%Y%m%d\nsql_table_version[a]: 9\n"
                       "sql_refresh_time[a]: 300\nsql_history[a]: 5m\nsql_history_roundoff[a]: h\n"
                       "sql_dont_try_update[a]: true\nsql_max_writers[a]: 3\nprint_refresh_time[b]: 10\n")
    a, b = cfg.plugins
    assert isinstance(a.options, SqlOptions)
    assert (a.options.host, a.options.port, a.options.db, a.options.user, a.options.passwd) == \
        ("10.0.0.5", 5433, "flows", "u", "p")
    assert (a.options.table, a.options.table_version, a.options.dont_try_update, a.options.max_writers) == \
        ("acct_%Y%m%d", 9, True, 3)
    assert (a.refresh_time, a.history, a.history_secs, a.history_roundoff) == (300, "5m", 300, "h")
    assert b.refresh_time == 10


def test_pmacct_defaults():
    opts = loads_config("plugins: pgsql\n").plugins[0].options
    assert (opts.host, opts.port, opts.db, opts.user, opts.passwd, opts.table_version) == \
        ("localhost", 5432, "pmacct", "pmacct", "arealsmartpwd", 1)


@pytest.mark.parametrize("text, key", [
    ("plugins: pgsql\nsql_table_version: 10\n", "sql_table_version"),
    ("plugins: pgsql\naggregate: src_as\nsql_table_version: 4\n", "sql_table_version"),
    ("plugins: print[b]\nsql_db[b]: x\n", "sql_db"),
    ("plugins: pgsql[a]\nprint_output[a]: csv\n", "print_output"),
])
def test_bad_combinations_name_the_key(text, key):
    with pytest.raises(ConfigError) as err:
        loads_config(text)
    assert key in str(err.value)


def test_default_version_columns_follow_pmacct_tables():
    """v9 non-optimized: every key column of pmacct-create-table_v9.pgsql, defaults where not aggregated."""
    cols = [c.name for c in plan_columns(("src_host", "in_iface"), False, 9, True)]
    assert cols == ["tag", "class_id", "mac_src", "mac_dst", "vlan", "as_src", "as_dst", "ip_src", "ip_dst",
                    "port_src", "port_dst", "ip_proto", "tos", "iface_in", "packets", "bytes", "flows",
                    "stamp_inserted", "stamp_updated"]
    assert [c.name for c in plan_columns(("src_host", "timestamp_start"), True, 1, False)] == \
        ["ip_src", "timestamp_start", "timestamp_start_residual", "packets", "bytes"]
    assert [default_table(v) for v in (1, 2, 9)] == ["acct", "acct_v2", "acct_v9"]
