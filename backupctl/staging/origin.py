"""The same-origin rule every request to staging obeys: checks and readiness probes alike.

A redirect is followed only when it stays on the same scheme, host and port; any other target
(production's URL left in a restored database, a CDN, a payment page) is refused and remembered,
so what answered is always the staging service and nothing outside staging is ever contacted.
Requests never go through an environment proxy (the backup host's http_proxy must neither see
nor answer staging traffic).
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, lower-case host, port) of a URL, the port defaulted from the scheme."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


class StayOnOrigin(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to the same origin (and only when `follow`); `refused` keeps the
    first target refused. Returning None stops there: the 3xx becomes the answer."""

    def __init__(self, origin: tuple[str, str, int], follow: bool = True) -> None:
        self.origin, self.follow = origin, follow
        self.refused: str | None = None

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:  # fmt: skip
        if not self.follow:
            return None
        if origin_of(newurl) != self.origin:
            self.refused = self.refused or newurl
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def http_ready(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[bool, str]:
    """One readiness attempt: GET `path` on the service; (answered 2xx, what happened).

    Redirects within the service are followed; one leaving it is not (the probe then says where
    it pointed: typically the production URL still in the restored data — see post_restore).
    """
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    url = base + path
    redirects = StayOnOrigin(origin_of(url))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), redirects)
    try:
        with opener.open(url, timeout=timeout) as answer:
            return 200 <= int(answer.status) < 300, f"GET {path}: {answer.status}"
    except urllib.error.HTTPError as error:
        error.close()
        if redirects.refused:
            return False, (f"GET {path}: {error.code}, redirect to {redirects.refused} not followed: "
                           "it leaves staging")  # fmt: skip
        return False, f"GET {path}: {error.code}"
    except (OSError, http.client.HTTPException, ValueError) as error:  # URLError is an OSError
        return False, f"GET {path}: {error}"
