"""Evaluation: metrics, statistics, drift, the promotion policy and the gate that applies it."""
