"""Release: the MLflow registry adapter, integrity manifests, registration, promotion and its history."""
