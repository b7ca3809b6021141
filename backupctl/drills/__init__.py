"""Restore drills: prove a snapshot restores and the application works on it."""
