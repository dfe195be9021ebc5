"""Fixtures: prefect."""
