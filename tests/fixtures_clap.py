"""Fixtures: clap."""
