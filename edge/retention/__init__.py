"""Retention on the device: the trusted clock, what goes when (forecast), the shredder and its schedule."""
