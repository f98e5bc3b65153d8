"""Retail Pulse: a job service that measures store-visit photos."""

__all__ = ["__version__"]

__version__ = "0.1.0"
