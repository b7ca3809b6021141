"""The SQLite catalog's schema at the newest migration, as Alembic's migrations leave it.

A catalog file with no table yet (the first command on a host) is created from these statements
in one transaction instead of by running the migrations: importing Alembic alone takes ~11 MiB,
which made the first backup's peak RSS 117 MiB instead of 105 (1 GiB benchmark, issue #17
session 10). `tests/unit/catalog/test_sqlite_schema.py` checks that they create exactly what the
migrations create (sqlite_master, statement for statement); when a migration is added it fails
and prints the statements to paste here. Other databases (PostgreSQL) and every catalog that
has tables go through Alembic as before (`Catalog.migrate`).
"""

from __future__ import annotations

REVISION = "0005"  # = catalog.store.HEAD_REVISION (the test checks it)

# `SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid` of a migrated catalog.
STATEMENTS: tuple[str, ...] = (
    (
        "CREATE TABLE alembic_version (\n"
        "\tversion_num VARCHAR(32) NOT NULL, \n"
        "\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n"
        ")"
    ),
    (
        "CREATE TABLE snapshots (\n"
        "\tid VARCHAR(40) NOT NULL, \n"
        "\tpolicy VARCHAR(64) NOT NULL, \n"
        "\tstatus VARCHAR(16) NOT NULL, \n"
        "\tstarted_at DATETIME NOT NULL, \n"
        "\tfinished_at DATETIME, \n"
        "\thost VARCHAR(255) NOT NULL, \n"
        "\tpid INTEGER, \n"
        "\tpolicy_sha256 VARCHAR(64), \n"
        "\tmanifest_sha256 VARCHAR(64), \n"
        "\tplain_bytes BIGINT DEFAULT '0' NOT NULL, \n"
        "\tstored_bytes BIGINT DEFAULT '0' NOT NULL, \n"
        "\terror TEXT, \n"
        "\tPRIMARY KEY (id)\n"
        ")"
    ),
    "CREATE INDEX ix_snapshots_policy_status_started ON snapshots (policy, status, started_at)",
    (
        "CREATE TABLE snapshot_copies (\n"
        "\tsnapshot_id VARCHAR(40) NOT NULL, \n"
        "\ttarget VARCHAR(64) NOT NULL, \n"
        "\tstatus VARCHAR(16) NOT NULL, \n"
        "\tstored_bytes BIGINT DEFAULT '0' NOT NULL, \n"
        "\terror TEXT, \n"
        "\tupdated_at DATETIME NOT NULL, \n"
        "\tPRIMARY KEY (snapshot_id, target), \n"
        "\tFOREIGN KEY(snapshot_id) REFERENCES snapshots (id) ON DELETE CASCADE\n"
        ")"
    ),
    (
        "CREATE TABLE verifications (\n"
        "\tid INTEGER NOT NULL, \n"
        "\tsnapshot_id VARCHAR(40) NOT NULL, \n"
        "\ttarget VARCHAR(64) NOT NULL, \n"
        "\tat DATETIME NOT NULL, \n"
        "\tok BOOLEAN NOT NULL, \n"
        "\tproblems JSON NOT NULL, \n"
        "\tPRIMARY KEY (id), \n"
        "\tFOREIGN KEY(snapshot_id) REFERENCES snapshots (id) ON DELETE CASCADE\n"
        ")"
    ),
    "CREATE INDEX ix_verifications_snapshot_id ON verifications (snapshot_id)",
    (
        "CREATE TABLE drills (\n"
        "\tid VARCHAR(40) NOT NULL, \n"
        "\tpolicy VARCHAR(64) NOT NULL, \n"
        "\tdrill VARCHAR(64) NOT NULL, \n"
        "\tsnapshot_id VARCHAR(40), \n"
        "\ttarget VARCHAR(64), \n"
        "\truntime VARCHAR(16) NOT NULL, \n"
        "\tstarted_at DATETIME NOT NULL, \n"
        "\tfinished_at DATETIME NOT NULL, \n"
        "\tok BOOLEAN NOT NULL, \n"
        "\treason TEXT, \n"
        "\trto_seconds FLOAT, \n"
        "\trto_objective_seconds FLOAT, \n"
        "\trpo_seconds FLOAT, \n"
        "\trpo_objective_seconds FLOAT, \n"
        "\tstages JSON NOT NULL, \n"
        "\tchecks JSON NOT NULL, \n"
        "\treport_paths JSON NOT NULL, \n"
        "\tPRIMARY KEY (id)\n"
        ")"
    ),
    "CREATE INDEX ix_drills_policy ON drills (policy)",
    (
        'CREATE TABLE "artifacts" (\n'
        "\tsnapshot_id VARCHAR(40) NOT NULL, \n"
        "\tsource VARCHAR(64) NOT NULL, \n"
        "\tsource_type VARCHAR(32) NOT NULL, \n"
        "\tfile VARCHAR(255) NOT NULL, \n"
        "\tformat VARCHAR(32) NOT NULL, \n"
        "\tplain_bytes BIGINT NOT NULL, \n"
        "\tstored_bytes BIGINT NOT NULL, \n"
        "\tplain_digest VARCHAR(80) NOT NULL, \n"
        "\tstored_sha256 VARCHAR(64) NOT NULL, \n"
        "\tfacts JSON NOT NULL, \n"
        "\tPRIMARY KEY (snapshot_id, source), \n"
        "\tFOREIGN KEY(snapshot_id) REFERENCES snapshots (id) ON DELETE CASCADE\n"
        ")"
    ),
    (
        "CREATE TABLE run_records (\n"
        "\tseq INTEGER NOT NULL, \n"
        "\tat VARCHAR(32) NOT NULL, \n"
        "\thost VARCHAR(255) NOT NULL, \n"
        "\tkind VARCHAR(16) NOT NULL, \n"
        "\tsubject VARCHAR(200) NOT NULL, \n"
        '\t"trigger" VARCHAR(160) NOT NULL, \n'
        "\tpayload TEXT NOT NULL, \n"
        "\tprev_hash VARCHAR(64) NOT NULL, \n"
        "\thash VARCHAR(64) NOT NULL, \n"
        "\tPRIMARY KEY (seq), \n"
        "\tUNIQUE (hash)\n"
        ")"
    ),
    "CREATE INDEX ix_run_records_at ON run_records (at)",
    "CREATE INDEX ix_run_records_kind_subject ON run_records (kind, subject)",
    (
        "CREATE TABLE archive_observations (\n"
        "\tid INTEGER NOT NULL, \n"
        "\tpolicy VARCHAR(64) NOT NULL, \n"
        "\tsource VARCHAR(64) NOT NULL, \n"
        "\tarchive VARCHAR(16) NOT NULL, \n"
        "\thost VARCHAR(255) NOT NULL, \n"
        "\tvia VARCHAR(32) NOT NULL, \n"
        "\tobserved_at DATETIME NOT NULL, \n"
        "\tnewest_at DATETIME, \n"
        "\trestorable_from DATETIME, \n"
        "\tcontinuous BOOLEAN NOT NULL, \n"
        "\tproblems JSON NOT NULL, \n"
        "\tPRIMARY KEY (id)\n"
        ")"
    ),
    "CREATE INDEX ix_archive_observations_source ON archive_observations (policy, source, observed_at)",
)
