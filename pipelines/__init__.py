"""Continuous training: the stages that the Airflow DAGs call, importable and testable without Airflow."""
