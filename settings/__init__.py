"""runtap's settings: declared once (config.py's SETTINGS) for every command, relay and analytics alike.
It imports nothing else of runtap, so both sides can use it."""
