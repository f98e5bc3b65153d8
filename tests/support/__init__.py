"""Test support: generated images, a loopback image host and polling helpers."""
