"""PyFlink jobs, submitted to the Flink cluster with `flink run -py`."""
