"""Policies: the one schema, loading with file:line errors, logical validation."""
