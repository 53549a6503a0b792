"""Training: a torch MLP over DDP ranks, or a scikit-learn model, logged to one MLflow run."""
