"""Fixtures: llm."""
