"""Fixtures: audio."""
