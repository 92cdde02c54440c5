"""Caches of task states: in-process (memory) and shared (Redis)."""
