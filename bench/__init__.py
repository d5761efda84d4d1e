"""Benchmarks of agentd: `python -m bench` runs them all, prints a table, and writes JSON."""
