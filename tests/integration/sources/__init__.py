"""Integration tests of the data sources against real PostgreSQL, SQLite files and trees."""
