"""Point-in-time recovery: archived database logs (PostgreSQL WAL, MySQL/MariaDB binlogs)."""
