"""Where queued rows go: a tiny interface with a Kafka implementation and an embedded local one."""
