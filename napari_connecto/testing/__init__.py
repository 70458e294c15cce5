"""Test and benchmark helpers that ship with the package (procedural volumes, latency)."""
