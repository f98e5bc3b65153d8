"""The benchmark harness: ``python -m bench`` (``make bench``) prints one JSON object."""
