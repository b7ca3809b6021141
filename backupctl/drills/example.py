"""`backupctl drill example` (an annotated drill file) and `backupctl drill reference`
(docs/drill-reference.md, generated from the drill schema like the policy reference)."""

from __future__ import annotations

EXAMPLE = """\
# A backupctl drill, printed by `backupctl drill example`. Reference: docs/drill-reference.md
# Validate with `backupctl drill validate FILE`; run with `backupctl drill FILE`.
# ${BACKUPCTL_DRILL_SECRET}: a random password made for each run (staging only).
# ${svc.host} ${svc.port} ${svc.password} ${svc.bind}: filled in by the runtime (Docker or local);
# ${svc.url}: the base URL checks use for a service (post-restore steps and checks).
name: blog-quarterly
policy: blog                      # the policy whose snapshot is restored
snapshot: latest
runtime: auto                     # docker when an engine answers, else local
timeout: 30m
objectives: {rto: 1h}             # overrides the policy's objectives for this drill
services:
  - name: db
    kind: mariadb
    image: backupctl/mariadb:10.11
    env:
      MARIADB_ROOT_PASSWORD: ${BACKUPCTL_DRILL_SECRET}
    databases:
      - {source: blog-db, database: wordpress}
    ready: {timeout: 120s}
  - name: app
    kind: app
    image: backupctl/wordpress:6.1
    port: 80
    env:
      WORDPRESS_DB_HOST: ${db.host}:${db.port}
      WORDPRESS_DB_USER: root
      WORDPRESS_DB_PASSWORD: ${db.password}
      WORDPRESS_DB_NAME: wordpress
    files:
      - {source: wp-content, path: /var/lib/wordpress/wp-content}
    ready:
      http: /wp-login.php           # redirects leaving staging are never followed
      timeout: 90s
post_restore:                     # after the restores, before readiness; timed stages of the RTO
  - name: staging-url
    service: db
    database: wordpress
    sql: UPDATE wp_options SET option_value = '${app.url}' WHERE option_name IN ('siteurl', 'home')
  - name: app-config
    service: app
    command: [test, -r, /etc/wordpress/config-default.php]
checks:
  - name: home
    type: http
    service: app
    timeout: 20s                  # per request of this check (default 10s)
    steps:
      - path: /
        expect:
          contains: [Hello world!, wp-content]
          not_contains: [There has been a critical error]
          headers: {Content-Type: text/html}
  - name: login
    type: http
    service: app
    steps:
      - {path: /wp-login.php, save: {test_cookie: "header:Set-Cookie"}}
      - method: POST
        path: /wp-login.php
        form: {log: drill, pwd: "env:WP_DRILL_PASSWORD", testcookie: "1"}
        expect: {status: 302, headers: {Location: /wp-admin/}}
      - path: /wp-admin/
        timeout: 30s
        expect: {contains: Dashboard}
  - name: posts
    type: sql
    service: db
    database: wordpress
    query: SELECT count(*) FROM wp_posts WHERE post_status = 'publish'
    expect: {at_least: 1}
"""


def example_yaml() -> str:
    """The annotated example drill file."""
    return EXAMPLE


def reference_markdown() -> str:
    """Every model and field of the drill schema as Markdown tables (docs/drill-reference.md)."""
    from backupctl.drills.schema import Drill
    from backupctl.policy.example import reference_markdown as tables

    return tables(Drill, "Drill reference", "`backupctl/drills/schema.py` by `backupctl drill reference`")
