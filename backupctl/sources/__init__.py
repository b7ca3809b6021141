"""Sources: one module per kind, one interface (`Source`), one registry."""
