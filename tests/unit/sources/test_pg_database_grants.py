"""The SQL a PostgreSQL restore replays for recorded database settings (pure: no server; the
statements themselves run against a real server in tests/e2e/test_restore_role_passwords.py)."""

from __future__ import annotations

from backupctl.sources.pg_roles import _setting_value


def test_list_settings_are_replayed_element_by_element() -> None:
    assert _setting_value("search_path", 'app, "My Schema", public') == "'app', 'My Schema', 'public'"
    assert _setting_value("search_path", '"$user", public') == "'$user', 'public'"


def test_other_settings_are_one_quoted_literal() -> None:
    assert _setting_value("work_mem", "8MB") == "'8MB'"
    assert _setting_value("application_name", "it's, mine") == "'it''s, mine'"
