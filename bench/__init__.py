"""Benchmarks of the sidecar against MariaDB and the Google emulator; entry point ``bench.run``."""
