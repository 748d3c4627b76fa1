"""The only code that touches privileges: uid leases, the child's setup,
capture, the watchdog, cleanup and capability detection."""

from pesto.sandbox.client import NoFreeUid, Sandbox, Session

__all__ = ["NoFreeUid", "Sandbox", "Session"]
