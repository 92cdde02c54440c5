"""Helpers for taskguard's own tests: real services started on loopback."""
