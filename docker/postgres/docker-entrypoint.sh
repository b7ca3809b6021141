#!/usr/bin/env bash
# Entrypoint of backupctl/postgres:15. Behaves like the official postgres image's entrypoint, so one drill
# file works with `postgres:15` and with this locally built image:
#
#   POSTGRES_PASSWORD        superuser password; required unless POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_USER            superuser name (default postgres)
#   POSTGRES_DB              database created at first start (default: $POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP clients (default scram-sha-256)
#   POSTGRES_INITDB_ARGS     extra initdb arguments; POSTGRES_INITDB_WALDIR a separate WAL directory
#   <NAME>_FILE              read POSTGRES_PASSWORD, _USER, _DB, _INITDB_ARGS from a file (secrets)
#
# On the first start (no $PGDATA/PG_VERSION): initdb, then a temporary server on the Unix socket only
# runs /docker-entrypoint-initdb.d/*.sql, *.sql.gz, *.sql.xz, *.sql.zst (psql, ON_ERROR_STOP) and *.sh
# (executed if executable, else sourced), in name order; then the real server starts on all addresses.
# Readiness: `pg_isready -h 127.0.0.1` inside the container. Plain `pg_isready` (Unix socket) already
# answers during the initdb.d phase, exactly as in the official image.
set -Eeo pipefail

note() { printf '%s [entrypoint] %s\n' "$(date --rfc-3339=seconds)" "$*"; }
error() { note "error: $*" >&2; exit 1; }

# file_env VAR [DEFAULT]: VAR from the environment, or from the file named by VAR_FILE (not both).
file_env() {
    local var="$1" file_var="${1}_FILE" default="${2:-}" value
    if [ "${!var:-}" ] && [ "${!file_var:-}" ]; then
        error "both $var and $file_var are set (but are exclusive)"
    fi
    value="$default"
    if [ "${!var:-}" ]; then
        value="${!var}"
    elif [ "${!file_var:-}" ]; then
        value="$(<"${!file_var}")"
    fi
    export "$var"="$value"
    unset "$file_var"
}

setup_env() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=}"
    DATABASE_ALREADY_EXISTS=
    [ ! -s "$PGDATA/PG_VERSION" ] || DATABASE_ALREADY_EXISTS=true
}

create_directories() {
    local user_id
    user_id="$(id -u)"
    mkdir -p "$PGDATA"
    chmod 00700 "$PGDATA" || :   # fails when PGDATA is a mount owned by someone else; initdb says why
    mkdir -p /var/run/postgresql || :
    chmod 03775 /var/run/postgresql || :
    if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        [ "$user_id" != 0 ] || find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
        chmod 700 "$POSTGRES_INITDB_WALDIR"
    fi
    if [ "$user_id" = 0 ]; then
        find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
        find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
    fi
}

verify_minimum_env() {
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        cat >&2 <<'EOM'
Error: the database is uninitialized and the superuser password is not specified.
       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value, or set
       POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without a password (never outside
       a disposable test).
EOM
        exit 1
    fi
    if [ "${#POSTGRES_PASSWORD}" -gt 100 ]; then
        note "warning: POSTGRES_PASSWORD is longer than 100 characters; some clients truncate it"
    fi
}

init_database_dir() {
    local args=()
    [ -z "${POSTGRES_INITDB_WALDIR:-}" ] || args+=(--waldir "$POSTGRES_INITDB_WALDIR")
    # The password reaches initdb through a pipe, never through argv.
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as in the official image
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        "${args[@]}" $POSTGRES_INITDB_ARGS
}

setup_hba_conf() {
    local method="$POSTGRES_HOST_AUTH_METHOD"
    [ "${1:-}" != postgres ] || shift
    if [ -z "$method" ]; then
        # the default follows password_encryption (scram-sha-256 on 14+, md5 if initdb args chose md5)
        method="$(postgres -C password_encryption "$@" 2>/dev/null || echo scram-sha-256)"
        [ "$method" = md5 ] || method=scram-sha-256
    fi
    if [ "$method" = trust ]; then
        note "warning: POSTGRES_HOST_AUTH_METHOD=trust: every TCP client connects without a password"
    fi
    printf '\nhost all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
}

temp_server_start() {
    # Unix socket only: nothing outside the container can connect (or look ready) during setup.
    PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
}

temp_server_stop() {
    PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -m fast -w stop
}

# process_sql [psql args...]: run SQL as the superuser over the socket, stopping at the first error.
process_sql() {
    local args=(--username "$POSTGRES_USER" --no-password --no-psqlrc)
    [ -z "$POSTGRES_DB" ] || args+=(--dbname "$POSTGRES_DB")
    PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 "${args[@]}" "$@"
}

setup_db() {
    local exists
    # the last --dbname wins: these run in the postgres database, where $POSTGRES_DB may not exist yet
    exists="$(process_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only \
        <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")"
    if [ -z "$exists" ]; then
        process_sql --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
        note "created database $POSTGRES_DB"
    fi
}

process_init_files() {
    local file
    for file; do
        case "$file" in
            *.sh)
                if [ -x "$file" ]; then
                    note "running $file"
                    "$file"
                else
                    note "sourcing $file"
                    # shellcheck disable=SC1090
                    . "$file"
                fi
                ;;
            *.sql) note "running $file"; process_sql -f "$file" ;;
            *.sql.gz) note "running $file"; gunzip -c "$file" | process_sql ;;
            *.sql.xz) note "running $file"; xzcat "$file" | process_sql ;;
            *.sql.zst) note "running $file"; zstd -dc "$file" | process_sql ;;
            *) note "ignoring $file" ;;
        esac
    done
}

# `postgres --help`, `-V`, `-C name` and friends print and exit: no setup for them.
want_help() {
    local arg
    for arg; do
        case "$arg" in
            -'?' | --help | --describe-config | -V | --version) return 0 ;;
        esac
    done
    return 1
}

main() {
    if [ "${1:0:1}" = '-' ]; then
        set -- postgres "$@"
    fi
    if [ "$1" = postgres ] && ! want_help "$@"; then
        setup_env
        create_directories
        if [ "$(id -u)" = 0 ]; then
            exec gosu postgres "${BASH_SOURCE[0]}" "$@"
        fi
        if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
            verify_minimum_env
            ls /docker-entrypoint-initdb.d/ >/dev/null   # unreadable mount: fail before initdb
            init_database_dir
            setup_hba_conf "$@"
            export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
            temp_server_start "$@"
            setup_db
            process_init_files /docker-entrypoint-initdb.d/*
            temp_server_stop
            unset PGPASSWORD
            note "PostgreSQL init process complete; ready for start up."
        else
            note "PostgreSQL database directory appears to contain a database; skipping initialization"
        fi
    fi
    exec "$@"
}

main "$@"
