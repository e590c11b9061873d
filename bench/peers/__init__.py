"""Peer engines for the pipeline benchmark (issue 16): the same tumbling job in Quix Streams and
Spark Structured Streaming, each run from its own virtual environment by ``bench/peers_bench.py``.

``quix_job.py`` and ``spark_job.py`` run inside those environments (not in ``.venv``): they import
nothing from tripstream, and take their settings from the environment, the password included.
"""
