"""What a doctor check returns, in a module of its own: the check modules (doctor_pitr,
doctor_privileges, binlog_doctor, doctor_extra) import it without importing doctor, which calls them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class Finding:
    """One check's result: `ok`, else a problem (`warn` makes it a warning, not a failure)."""

    check: str
    ok: bool
    detail: str
    fix: str = ""
    warn: bool = False

    @property
    def level(self) -> str:
        return "ok" if self.ok else ("WARN" if self.warn else "FAIL")

    @property
    def failed(self) -> bool:
        return not self.ok and not self.warn

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "level": self.level}
