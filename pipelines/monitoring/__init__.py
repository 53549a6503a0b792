"""Monitoring: what serving answered, watched against the champion's reference, and retraining asked for on
evidence (the monitoring policy, ``include/monitoring_policy.yaml``)."""
