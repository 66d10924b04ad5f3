"""Benchmarks: runtap against direct, nginx and a bare aiohttp forwarder (`python -m bench`), and the
soak (`python -m bench.soak`). Not part of the unit suite; see bench/README.md."""
