"""Prompt templates and manual template sets, stored as data files next to this loader."""
