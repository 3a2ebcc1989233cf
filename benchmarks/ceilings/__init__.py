"""Ceiling processes: what the stack can do at best on this machine, measured in the same run."""
