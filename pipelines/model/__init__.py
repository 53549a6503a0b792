"""The model a registered version holds, and how it is scored on column arrays.

Training writes it, evaluation scores it, serving serves it; it imports only the data layer.
"""
