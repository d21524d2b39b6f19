"""Benchmarks behind the README's results table (``make bench``); not installed by ``pip install .``."""
