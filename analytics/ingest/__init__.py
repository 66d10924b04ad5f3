"""The ingest path: relayed bytes -> snapshots -> merged rows in DuckDB (or the spool).

Imports nothing from the relay (tests/test_layout.py).
"""
