"""Kafka plumbing shared by the producer, the CLI and the tests: topics and their contents."""
