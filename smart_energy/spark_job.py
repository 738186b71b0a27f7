"""The driver of a Spark Operator ``SparkApplication``: ``smart-energy`` with ``SE_ENGINE=spark``.

spark-submit runs this file (``mainApplicationFile``) with the CLI's arguments, e.g. ``train --data
s3://bucket/fleet/ingest --model-dir /tmp/model --register``; the master and resources are spark-submit's.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on the Spark engine, then stop Spark."""
    os.environ["SE_ENGINE"] = "spark"
    from smart_energy.cli import main as cli_main

    code = 1
    try:
        code = cli_main(sys.argv[1:] if argv is None else argv)
        return code
    finally:
        _stop_spark(code)


def _stop_spark(code: int) -> None:
    """Stop the session; in local mode also end spark-submit's JVM with the CLI's exit code.

    In local mode the executors are threads of spark-submit's own JVM, and xgboost.spark's barrier tasks leave
    Spark 3.5's non-daemon "Barrier task timer" thread behind there, which keeps that JVM alive after the driver
    returns. On a cluster the driver's JVM runs no tasks and ends by itself.
    """
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is None:
        return
    local = session.sparkContext.master.startswith("local")
    jvm = session.sparkContext._jvm
    session.stop()
    if local and "PYSPARK_GATEWAY_PORT" in os.environ:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            jvm.java.lang.System.exit(code)  # runs Spark's shutdown hooks (temporary directories)
        finally:
            os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
