"""Spark's JVM log: warnings on stdout, errors on stderr, so Airflow shows no red lines for a run that works."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    from pipelines.settings import get_settings
    from pipelines.engines.spark_engine import spark_session

    with spark_session(get_settings(state_dir=sys.argv[1])) as spark:
        assert spark.range(10).count() == 10
        logger = spark.sparkContext._jvm.org.apache.log4j.LogManager.getLogger("ct.test")
        logger.warn("a warning from the JVM")
        logger.error("an error from the JVM")
    """
)


def test_a_spark_session_writes_warnings_to_stdout_and_only_errors_to_stderr(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "WARN test: a warning from the JVM" in done.stdout
    assert "ERROR test: an error from the JVM" in done.stderr
    # The start-up notices Spark used to print to stderr: its log profile, the loopback host, no native Hadoop.
    for notice in ("log4j profile", "Setting default log level", "NativeCodeLoader", "loopback address"):
        assert notice not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if " WARN " in line] == []
