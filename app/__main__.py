"""``python -m app serve ...``: the server's command line (:mod:`app.server`)."""
import sys

from app.server import run

if __name__ == "__main__":
    sys.exit(run())
