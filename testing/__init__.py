"""Test doubles and generated data, for the tests, the benchmarks and the demo; not installed by ``pip install .``."""
