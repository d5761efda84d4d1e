"""What the fault tests and the soak share: the promise's bookkeeping, the daemon's health, and the drivers.

`_ledger.py` checks what an observer saw against the promise; `_health.py`
reads what a daemon holds. The drivers: `_lifecycle.py` (random schedules),
`_clients.py` (slow and vanishing clients), `_faults.py` (kill -9, a held
write lock, a full disk), `_fuzz.py` (protocol fuzzing: msgpack values,
requests with wrong fields and raw byte streams, from Hypothesis or a seed).
`tests/test_lifecycle_machine.py`, `tests/test_vanishing_clients.py`,
`tests/test_process_faults.py` and `tests/test_fuzz_protocol.py` run each for
a bounded budget; `python -m bench.stress` (bench/stress.py) runs them all at
once. Every driver takes a seed (`AGENTD_STRESS_SEED` in the tests, `--seed`
in the soak) and every failure says how to run it again.
"""
