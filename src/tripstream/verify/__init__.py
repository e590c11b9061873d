"""The proof: recompute each job's result in batch (DuckDB) and compare it with PostgreSQL."""
