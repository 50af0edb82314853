"""Reliability suite: crash, race and resource-exhaustion scenarios with real processes.

Every scenario records what actually ran in a ledger (``ledger.py``) and ends
with :func:`ledger.check`, which asserts the delivery invariants against the
jobs database.  Worker and client processes are ``worker_proc.py``, driven by
``harness.py``.
"""
