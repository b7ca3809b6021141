"""The catalog: what snapshots exist, where, and whether they were verified."""
