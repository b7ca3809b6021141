"""Compliance evidence (issue #14): controls evaluated from the catalog over a period, the monthly
report, and signed quarterly evidence bundles that an auditor verifies offline."""
