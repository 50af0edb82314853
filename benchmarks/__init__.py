"""Local benchmarks of minijobs: ``python3 -m benchmarks`` (or ``minijobs bench``).

Not part of the installed package and not run by the test suite: speed
targets are checked here, on the machine at hand, never by timed tests.
See ``benchmarks/README.md``.
"""
