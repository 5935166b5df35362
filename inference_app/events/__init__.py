"""The Kafka listener (see docs/events.md)."""
