"""Targets: one module per kind, one interface (`BlobTarget`), one registry."""
