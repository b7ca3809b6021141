"""Point-in-time recovery: continuous archiving of a database's log segments.

The package is split in two floors:

- generic, source-agnostic machinery used by every PITR source (PostgreSQL WAL, MySQL binlogs):
  `archive` (push/fetch/list signed, encrypted segments on any blob target), `chain`
  (continuity and the newest archived point), `retention` (prune below the oldest kept base);
- source specifics in their own modules (`postgres_*`, `mysql*`), which only add naming rules,
  metadata and the server integration on top.

Layout on a blob target (docs/pitr.md, docs/formats.md):

    <policy>/pitr/<source>/identity.json              the archive's owner (e.g. system identifier)
    <policy>/pitr/<source>/segments/<name>.zst.age    one segment, zstd then age (never plaintext)
    <policy>/pitr/<source>/records/<name>.rec         its signed record (JSON line + signature line)
    <policy>/pitr/<source>/base/<base-id>/...         base backups / dumps of that source

`pitr` is never a snapshot id (ids start with a timestamp), and these keys have more than three
parts, so they never collide with `<policy>/<snapshot-id>/` snapshots.
"""
