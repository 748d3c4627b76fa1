"""The only code that touches privileges: uid leases, the child's setup,
capture, the watchdog, cleanup and capability detection.

Import `pesto.sandbox.client` for the server's side. This package root
imports nothing, so that the spawner (which forks for every job) stays small.
"""
