"""Serving: the champion behind a strict, fast HTTP API that hot-swaps as the alias moves.

``pipelines.serving.app.create_app`` builds the app; the modules beside it are its parts.
"""
