"""What the fault tests share: the promise's bookkeeping, and the drivers that try to break it.

`tests/test_lifecycle_machine.py`, `tests/test_vanishing_clients.py` and
`tests/test_process_faults.py` run each driver for a bounded budget. Every
driver takes a seed (`AGENTD_STRESS_SEED` in the tests) and every failure says
how to run it again. The soak that runs them all at once is still to come.
"""
