"""Actions: what commands do (backup, restore, verify, rebuild). No click, no printing."""
