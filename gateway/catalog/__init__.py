"""Stream schemas and API keys: the records, their in-memory cache and where they persist."""
