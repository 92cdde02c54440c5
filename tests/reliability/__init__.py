"""Reliability and security suite: faults injected, bad input fuzzed, nothing lost.

The scenario drivers live in :mod:`reliability.scenarios` and
:mod:`reliability.wire`; the tests assert on what they return, and
``python tests/reliability/report.py`` prints the same figures into README.md.
"""
