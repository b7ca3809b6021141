"""The drill schema (drills/*.yaml), validated like policies (file:line errors).

A drill restores a policy's snapshot into a disposable staging environment (services), runs
checks, measures the recovery time against the objectives and tears everything down.

Strings in `env` may be secret references (`env:`, `file:`, `cmd:`) or literal values.
`${service.host}`, `${service.port}` and `${service.password}` are filled in by the runtime
(e.g. `db` / 5432 in Docker, 127.0.0.1 / a free port in the local runtime);
`${BACKUPCTL_DRILL_SECRET}` is a random per-run secret for throwaway staging passwords.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backupctl.policy.types import Duration, Name


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Objectives(Strict):
    rpo: Duration | None = Field(default=None, description="Override the policy's RPO for this drill.")
    rto: Duration | None = Field(default=None, description="Override the policy's RTO for this drill.")


class DatabaseRestore(Strict):
    source: Name = Field(description="Policy source (postgres or mysql) restored into this service.")
    database: str = Field(description="Database name inside the service.", examples=["shop"])


class FilesRestore(Strict):
    source: Name = Field(description="Policy files source copied into this service.")
    path: str = Field(description="Where the tree appears inside the service.", examples=["/srv/uploads"])


class Readiness(Strict):
    http: str | None = Field(
        default=None,
        description="HTTP path that must answer 2xx (app services). Redirects are followed only within "
        "the service (same rule as http checks): one leaving staging makes the probe fail, never follow.",
        examples=["/health"],
    )
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Instead of `http`: a command run in the service (Docker: inside the container; "
        "local: on this host with the service's env) until it exits 0.",
        examples=[["wp-ready", "--quiet"]],
    )
    timeout: Duration = Field(
        default="120s",
        validate_default=True,  # type: ignore[assignment]
        description="Give up waiting after this.",
    )


class Service(Strict):
    name: Name = Field(description="Service name; also its host name inside the staging network.")
    kind: Literal["postgres", "mariadb", "app"] = Field(
        description="postgres/mariadb: a database server restores go into; app: the application under test."
    )
    image: str | None = Field(
        default=None, description="Docker image (official images work).", examples=["backupctl/postgres:15"]
    )
    command: list[str] | None = Field(
        default=None, description="Command overriding the image's CMD (Docker), or starting the app (local)."
    )
    local_command: list[str] | None = Field(
        default=None,
        description="How the local runtime starts the app when it differs from `command` (e.g. a path in "
        "the repository instead of one inside the image); relative paths resolve against the drill file.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment; values may be secret refs.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Port the service listens on.")
    databases: list[DatabaseRestore] = Field(
        default_factory=list, description="Database sources restored here."
    )
    files: list[FilesRestore] = Field(default_factory=list, description="File sources mounted here.")
    ready: Readiness = Field(default_factory=Readiness, description="Readiness probe.")


class HttpExpect(Strict):
    status: int = Field(default=200, description="Expected HTTP status.")
    json_paths: dict[str, Any] = Field(
        default_factory=dict, alias="json", description="JSON paths (a.b[0].c) and expected values."
    )
    contains: str | list[str] | None = Field(
        default=None, description="Text (or list of texts) the body must contain, all of them."
    )
    not_contains: str | list[str] | None = Field(
        default=None,
        description="Text (or list of texts) the body must not contain (e.g. an error page's marker).",
        examples=[["There has been a critical error", "Error establishing a database connection"]],
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Response headers (names case-insensitive) that must be present and contain the "
        "given text (empty: only present).",
        examples=[{"Content-Type": "image/jpeg"}],
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="sha256 (hex) the whole body must hash to (a download, a media file).",
    )


class HttpStep(Strict):
    method: Literal["GET", "POST", "PUT", "DELETE", "PATCH"] = Field(default="GET", description="Method.")
    path: str = Field(description="Path on the service, e.g. /login.")
    json_body: Any = Field(
        default=None, alias="json", description="JSON body; string values may be secret refs."
    )
    form: dict[str, str] | None = Field(default=None, description="Form body; values may be secret refs.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers; values may be secret refs.")
    expect: HttpExpect = Field(default_factory=HttpExpect, description="What the response must show.")
    save: dict[str, str] = Field(
        default_factory=dict,
        description="Save values of the response as ${name} for later steps: a JSON path "
        "(`order.id`), `header:NAME` (e.g. `header:Location`), or `regex:PATTERN` on the body "
        "(its first group, else the whole match; e.g. an HTML form token).",
        examples=[{"nonce": 'regex:name="_wpnonce" value="([^"]+)"', "next": "header:Location"}],
    )
    timeout: Duration | None = Field(
        default=None, description="Timeout of this request (connect and each read); default: the check's."
    )


class SqlExpect(Strict):
    equals: Any = Field(default=None, description="The first column of the first row equals this.")
    at_least: float | None = Field(default=None, description="The first value is a number ≥ this.")
    at_most: float | None = Field(default=None, description="The first value is a number ≤ this.")
    empty: bool | None = Field(default=None, description="true: no rows; false: at least one row.")


class HttpCheck(Strict):
    type: Literal["http"] = Field(description="A scripted HTTP conversation with an app service.")
    name: Name = Field(description="Check name (reports, JUnit).")
    service: Name = Field(description="The app service to call.")
    steps: list[HttpStep] = Field(
        min_length=1, description="Steps share one cookie jar (login → cart → pay)."
    )
    timeout: Duration | None = Field(
        default=None, description="Timeout of each request of this check; default 10s."
    )


class SqlCheck(Strict):
    type: Literal["sql"] = Field(description="A query in a restored database.")
    name: Name = Field(description="Check name (reports, JUnit).")
    service: Name = Field(description="The database service to query.")
    database: str = Field(description="Database the query runs in.")
    query: str = Field(description="One SQL query; its first row/column is compared (see expect).")
    when: str | None = Field(
        default=None,
        description="A query run first: when its first value is 0, false, NULL or no row, the check "
        "is not applicable and passes saying so (e.g. a plugin's table does not exist).",
        examples=["SELECT count(*) FROM information_schema.tables WHERE table_name = 'wp_wc_orders'"],
    )
    expect: SqlExpect = Field(description="equals (first column of first row), at_least, at_most, empty.")


class CommandCheck(Strict):
    type: Literal["command"] = Field(description="A command run in (Docker) or for (local) a service.")
    name: Name = Field(description="Check name (reports, JUnit).")
    service: Name = Field(description="The service it runs in.")
    command: list[str] = Field(min_length=1, description="argv; no shell unless you run one.")
    exit_code: int = Field(default=0, description="Exit code the command must end with.")
    output_contains: str | None = Field(default=None, description="Text its output must contain.")


Check = Annotated[HttpCheck | SqlCheck | CommandCheck, Field(discriminator="type")]


class PostRestoreStep(Strict):
    """One step between the restores and the readiness probe (e.g. point the restored site at
    the staging URL). Placeholders: `${svc.url}` (the base URL checks use), `${svc.host}`,
    `${svc.port}` of every service, and `${BACKUPCTL_DRILL_SECRET}`."""

    name: Name = Field(description="Step name: its stage in the report is `post-restore NAME`.")
    service: Name = Field(description="Service it runs in: a database service for `sql`, any for `command`.")
    sql: str | None = Field(
        default=None,
        description="SQL run in `database` of a postgres/mariadb service (several statements allowed).",
        examples=["UPDATE wp_options SET option_value = '${app.url}' WHERE option_name = 'siteurl'"],
    )
    database: str | None = Field(default=None, description="Database the `sql` runs in.")
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Instead of `sql`: a command run in the service (Docker: inside its container).",
    )
    exit_code: int = Field(default=0, description="Exit code `command` must end with.")


class Drill(Strict):
    name: Name = Field(description="Drill name (reports, history).", examples=["shop-quarterly"])
    policy: Name = Field(description="Policy whose snapshot is restored.", examples=["shop"])
    target: Name | None = Field(default=None, description="Target to restore from; default: the most remote.")
    snapshot: str = Field(default="latest", description="`latest` or a snapshot id.")
    runtime: Literal["auto", "docker", "local"] = Field(
        default="auto", description="docker, local, or auto (docker when an engine answers)."
    )
    objectives: Objectives = Field(default_factory=Objectives, description="RPO/RTO of this drill.")
    timeout: Duration = Field(
        default="1h",
        validate_default=True,  # type: ignore[assignment]
        description="Abort the drill after this.",
    )
    services: list[Service] = Field(default_factory=list, description="The staging environment.")
    post_restore: list[PostRestoreStep] = Field(
        default_factory=list,
        description="Steps after the restores and before readiness, timed as stages of the RTO.",
    )
    checks: list[Check] = Field(
        default_factory=list, description="Application checks, after the integrity ones (http, sql, command)."
    )
