"""ncdepth: neural collapse across depth."""

__version__ = "0.1.0"
