"""What the fault tests share: the promise's bookkeeping, and the drivers that try to break it.

`tests/test_lifecycle_machine.py`, `tests/test_vanishing_clients.py`,
`tests/test_process_faults.py` and `tests/test_fuzz_protocol.py` run each
driver for a bounded budget. Every driver takes a seed (`AGENTD_STRESS_SEED` in
the tests) and every failure says how to run it again. The soak that runs them
all at once is still to come.

`_fuzz.py` is protocol fuzzing: junk msgpack values, requests for every method
with every field wrong, and broken byte streams (truncated, oversized headers,
deep nesting, split anywhere), from one generator that both a seeded Random
(`drive_fuzz`, with a pinger throughout) and Hypothesis (its strategies, which
shrink) draw from. No reply may carry code 0, each refused field must be named,
and only the connection whose bytes broke the wire may close.
"""
