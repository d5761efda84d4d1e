"""What the fault tests and the soak share: the promise's bookkeeping, and the drivers that try to break it.

`tests/test_lifecycle_machine.py`, `tests/test_fuzz_protocol.py`,
`tests/test_vanishing_clients.py` and `tests/test_process_faults.py` run each
driver alone, for a bounded budget; `python -m bench.stress --minutes N` runs
them all at once against one daemon and prints a summary. Every driver takes a
seed and every failure says how to run it again.
"""
