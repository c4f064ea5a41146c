"""The bbc1k inference server (see app/server.py)."""
