"""Integration tests of the sample shop web app (docker/shop/app.py) against a real PostgreSQL."""
