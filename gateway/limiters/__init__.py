"""Request limiters, one per file."""
