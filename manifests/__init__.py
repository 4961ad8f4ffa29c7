"""The built-in model catalogue as data (one YAML manifest per provider); see runner/manifest.py."""

from importlib.resources import files
from pathlib import Path


def path(name: str) -> Path:
    """The path of a bundled manifest file."""
    return Path(str(files(__name__) / name))
