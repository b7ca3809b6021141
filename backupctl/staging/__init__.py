"""Staging runtimes: disposable environments drills restore into (Docker, or local processes)."""
