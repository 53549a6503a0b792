"""Data: the contract, sources, validation, the raw and prepared datasets, features and profiles.

The first stages of a run (generate, validate, prepare) and the files every later stage reads.
"""
