"""Pictures for the README and the app's page, made from the code: run each
from the repository root as ``python -m graphics.NAME``."""
