"""The pgsql plugin: aggregated rows into PostgreSQL (pmacct's sql_* keys, default tables v1-v9).

columns.py decides the columns and their COPY text, sql.py the statements,
writer.py the buffered writer thread (PgsqlWriter, the runner's sink).
"""
