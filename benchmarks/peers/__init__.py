"""Peer frameworks for the benchmarks, each run in its own virtualenv (see `env.py`)."""
