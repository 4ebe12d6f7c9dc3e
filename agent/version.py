"""The agent's version: the one place it is written (``--version``, the Debian package)."""

__version__ = "1.0.0"
