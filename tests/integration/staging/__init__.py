"""Integration tests of the staging runtimes against real clusters and processes."""
