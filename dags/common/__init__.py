"""What the DAGs of this folder share (Airflow puts the DAG folder on ``sys.path``); no DAG is defined here."""
