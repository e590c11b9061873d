"""tripstream: real-time NYC taxi trip analytics on Kafka, PyFlink and PostgreSQL."""

__version__ = "0.1.0"
