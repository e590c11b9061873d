"""The smallest real job: a bounded Flink SQL pipeline, used to prove the cluster runs PyFlink.

It counts the rows of a datagen table into the ``blackhole`` sink and finishes, touching neither
Kafka nor PostgreSQL, so a FINISHED state says the cluster, the Python workers and the SQL
planner all work.
"""

from __future__ import annotations

import sys


def main(rows: int = 1000) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("pipeline.name", "tripstream-smoke")
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE numbers (n BIGINT)
            WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}',
                  'fields.n.kind' = 'sequence', 'fields.n.start' = '1', 'fields.n.end' = '{rows}')"""
    )
    t_env.execute_sql("CREATE TEMPORARY TABLE sink (n BIGINT, doubled BIGINT) WITH ('connector' = 'blackhole')")
    t_env.create_temporary_function("double_it", _double_udf())
    t_env.execute_sql("INSERT INTO sink SELECT n, double_it(n) FROM numbers")


def _double_udf():  # noqa: ANN202
    """A Python scalar UDF, so the job also exercises the TaskManager's Python workers."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    return udf(lambda n: n * 2, result_type=DataTypes.BIGINT())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
