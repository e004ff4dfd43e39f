"""Test doubles shared by the tests and the benchmarks: standard library only, so importing this is cheap."""
