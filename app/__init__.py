"""The bbc1k inference server: ``python -m app serve`` (see app/server.py)."""
