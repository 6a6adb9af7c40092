"""edgepack's version: the one place it is written (pyproject.toml reads it, images carry this file)."""

__version__ = "0.1.0"
