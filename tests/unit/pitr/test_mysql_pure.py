"""Pure helpers of the MySQL PITR code: GTID lists, file names, metrics, time parsing."""

from __future__ import annotations

import pytest

from backupctl.actions.binlog_drill import _as_time
from backupctl.cli.commands_binlog import parse_time
from backupctl.errors import ConfigError
from backupctl.metrics import parse_metrics
from backupctl.pitr.mysql_binlog import binlog_index, binlog_name, format_gtid_state, parse_gtid_state
from backupctl.pitr.mysql_metrics import render_binlog_metrics
from backupctl.pitr.mysql_replay import binlog_argv
from backupctl.policy.rpo_check import pitr_issues, rpo_warnings
from backupctl.policy.schema import Policy


def test_gtid_state_round_trips_sorted_by_domain() -> None:
    state = parse_gtid_state("1-2-9, 0-1-5")
    assert state == {0: (1, 5), 1: (2, 9)} and format_gtid_state(state) == "0-1-5,1-2-9"
    assert parse_gtid_state("") == {}
    with pytest.raises(ValueError):
        parse_gtid_state("0-1")


def test_binlog_names() -> None:
    assert binlog_index("mariadb-bin.000042") == 42 and binlog_name("mariadb-bin", 42) == "mariadb-bin.000042"
    with pytest.raises(ValueError, match="not a binlog file name"):
        binlog_index("mariadb-bin.index")


def test_replay_command_stops_at_the_second_in_utc_and_rewrites_only_a_new_name(tmp_path: object) -> None:
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    stop = datetime(2026, 12, 6, 11, 41, 7, 900000, tzinfo=timezone(timedelta(hours=1)))
    argv = binlog_argv("mariadb-binlog", [Path("a.000001")], 1234, stop, "shop", "shop_copy")
    assert "--stop-datetime=2026-12-06 10:41:07" in argv and "--start-position=1234" in argv
    assert "--rewrite-db=shop->shop_copy" in argv and argv[-2:] == ["--", "a.000001"]
    same = binlog_argv("mariadb-binlog", [], 4, None, "shop", "shop")
    assert not any(item.startswith(("--rewrite-db", "--stop-datetime")) for item in same)


def test_metrics_render_the_status() -> None:
    status = {"policy": "shop", "source": "db", "rpo_seconds": 12.5, "objective_seconds": 900, "files": 3,
              "stored_bytes": 2048, "gaps": [{"missing": ["x"]}], "ok": False}  # fmt: skip
    samples = {
        name: (labels, value) for name, labels, value in parse_metrics(render_binlog_metrics(status, 1700))
    }
    assert samples["backupctl_binlog_rpo_seconds"] == ({"policy": "shop", "source": "db"}, 12.5)
    assert samples["backupctl_binlog_gaps"][1] == 1 and samples["backupctl_binlog_ok"][1] == 0
    assert samples["backupctl_binlog_covered_until_timestamp_seconds"][1] == 1700


def test_times_of_the_newest_row_and_of_to_time() -> None:
    assert _as_time("1700000000") == 1_700_000_000
    assert _as_time("2023-11-14 22:13:20.500000") == 1_700_000_000.5
    assert _as_time(None) is None and _as_time("NULL") is None and _as_time("soon") is None
    assert parse_time("2026-12-06T10:41:00Z").isoformat() == "2026-12-06T10:41:00+00:00"
    assert parse_time("2026-12-06T10:41:00").isoformat() == "2026-12-06T10:41:00+00:00", "UTC without a zone"
    assert parse_time("2026-12-06 11:41:00+01:00").isoformat() == "2026-12-06T10:41:00+00:00"
    with pytest.raises(ConfigError, match="expected an ISO time"):
        parse_time("yesterday")


def mysql_policy(pitr: dict[str, object] | None) -> Policy:
    source: dict[str, object] = {"name": "db", "type": "mysql", "user": "backup", "database": "shop"}
    if pitr is not None:
        source["pitr"] = pitr
    return Policy.model_validate({
        "name": "shop", "objectives": {"rpo": "15m", "rto": "1h"}, "schedule": "15 2 * * *",
        "encryption": {"recipients": ["age1n3apkaaz7y5qsrs9l4z2akmel0gpz9m2astxq4jgzl2zheeex33s8kpzju"]},
        "sources": [source],
        "targets": [{"name": "nas", "type": "local", "path": "/srv/b"},
                    {"name": "vault", "type": "restic", "repository": "/srv/r", "password": "env:X"}],
    })  # fmt: skip


def test_a_mysql_pitr_block_meets_the_rpo_and_is_validated() -> None:
    assert rpo_warnings(mysql_policy(None)), "daily dumps alone cannot meet 15 minutes"
    assert rpo_warnings(mysql_policy({"rpo": "15m"})) == []
    assert pitr_issues(mysql_policy({"rpo": "15m", "targets": ["nas"]})) == []
    issues = pitr_issues(mysql_policy({"rpo": "15m", "interval": "20m", "targets": ["vault"]}))
    assert [path for path, _ in issues] == [
        ("sources", 0, "pitr", "targets", 0),
        ("sources", 0, "pitr", "interval"),
    ]
