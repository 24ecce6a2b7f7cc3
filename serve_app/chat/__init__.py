"""The chat path: a completion request as named stages (see `pipeline.py`)."""
