#!/usr/bin/env bash
# Entrypoint of backupctl/mariadb:10.11. Behaves like the official mariadb image's entrypoint, so one
# drill file works with `mariadb:10.11` and with this locally built image:
#
#   MARIADB_ROOT_PASSWORD | MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1 | MARIADB_RANDOM_ROOT_PASSWORD=1  (one)
#   MARIADB_ROOT_HOST        host part of the remote root account (default %)
#   MARIADB_DATABASE         database created at first start; initdb.d SQL runs in it
#   MARIADB_USER, MARIADB_PASSWORD   an account with all privileges on MARIADB_DATABASE
#   MARIADB_INITDB_SKIP_TZINFO=1     do not load the time zone tables (first start 2.6 s instead of 5 s)
#   MYSQL_* instead of MARIADB_* and <NAME>_FILE (read the value from a file) work as well.
#
# On the first start (no <datadir>/mysql): mariadb-install-db, then a temporary server without
# networking runs /docker-entrypoint-initdb.d/*.sql, *.sql.gz, *.sql.xz, *.sql.zst (as root, in
# MARIADB_DATABASE) and *.sh (executed if executable, else sourced), in name order; then the real
# server starts. Not implemented from the official image: replication (MARIADB_REPLICATION_*),
# MARIADB_AUTO_UPGRADE, *_PASSWORD_HASH, MARIADB_MYSQL_LOCALHOST_USER.
#
# Invoked as healthcheck.sh (a symlink), it is the readiness probe: `healthcheck.sh --connect
# --innodb_initialized` succeeds only when the real server accepts TCP connections (the temporary
# one has none) and InnoDB is up. `mariadb-admin ping` over the socket already answers during setup.
set -Eeo pipefail

note() { printf '%s [entrypoint] %s\n' "$(date --rfc-3339=seconds)" "$*"; }
warn() { note "warning: $*" >&2; }
error() { note "error: $*" >&2; exit 1; }

# --- healthcheck.sh ---------------------------------------------------------------------------------
healthcheck() {
    local datadir="${MARIADB_DATADIR:-/var/lib/mysql}" test
    local client=(mariadb --defaults-extra-file="$datadir/.my-healthcheck.cnf" --protocol=tcp
                  --host=127.0.0.1 --skip-ssl --batch --skip-column-names)
    [ $# -gt 0 ] || set -- --connect
    [ -r "$datadir/.my-healthcheck.cnf" ] || { echo "healthcheck: not initialised yet" >&2; return 1; }
    for test; do
        case "$test" in
            --connect)
                "${client[@]}" -e 'SELECT 1' >/dev/null || return 1 ;;
            --innodb_initialized)
                [ "$("${client[@]}" -e "SELECT 1 FROM information_schema.ENGINES
                      WHERE engine = 'InnoDB' AND support IN ('YES', 'DEFAULT', 'ENABLED')")" = 1 ] ||
                    return 1 ;;
            *) echo "healthcheck: unknown test $test (supported: --connect, --innodb_initialized)" >&2
               return 2 ;;
        esac
    done
}
if [ "${0##*/}" = healthcheck.sh ]; then
    healthcheck "$@"
    exit
fi

# --- settings ---------------------------------------------------------------------------------------
# env_value NAME [DEFAULT]: MARIADB_NAME, else MYSQL_NAME, or the file named by either's _FILE variant;
# exported as MARIADB_NAME (and MYSQL_NAME, for initdb.d scripts written for either image).
env_value() {
    local name="$1" default="${2:-}" var value="" found=""
    for var in "MARIADB_$name" "MYSQL_$name"; do
        local file_var="${var}_FILE"
        if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
            error "both $var and $file_var are set (but are exclusive)"
        fi
        if [ -z "$found" ] && [ -n "${!var:-}" ]; then
            value="${!var}" found=1
        elif [ -z "$found" ] && [ -n "${!file_var:-}" ]; then
            value="$(<"${!file_var}")" found=1
        fi
        unset "$file_var"
    done
    [ -n "$found" ] || value="$default"
    export "MARIADB_$name"="$value" "MYSQL_$name"="$value"
}

# server_options mariadbd [args]: "datadir socket port" as the server would use them (config files and
# arguments). The value table of --verbose --help starts in column 1; wrapped help text does not.
server_options() {
    "$@" --verbose --help 2>/dev/null | awk '
        /^[^ \t]/ && ($1 == "datadir" || $1 == "socket" || $1 == "port") && !($1 in seen) { seen[$1] = $2 }
        END { print seen["datadir"], seen["socket"], seen["port"] }'
}

setup_env() {
    env_value ROOT_PASSWORD
    env_value ROOT_HOST %
    env_value DATABASE
    env_value USER
    env_value PASSWORD
    env_value ALLOW_EMPTY_ROOT_PASSWORD
    env_value RANDOM_ROOT_PASSWORD
    env_value INITDB_SKIP_TZINFO
    read -r DATADIR SOCKET PORT <<<"$(server_options "$@")"
    DATADIR="${DATADIR%/}"
    [ -n "$DATADIR" ] && [ -n "$SOCKET" ] && [ -n "$PORT" ] ||
        error "'$* --verbose --help' failed: is the configuration valid?"
    DATABASE_ALREADY_EXISTS=
    [ ! -d "$DATADIR/mysql" ] || DATABASE_ALREADY_EXISTS=true
}

verify_minimum_env() {
    if [ -z "$MARIADB_ROOT_PASSWORD" ] && [ -z "$MARIADB_ALLOW_EMPTY_ROOT_PASSWORD" ] &&
            [ -z "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
        error "the database is uninitialized and no root password option is set: set one of
  MARIADB_ROOT_PASSWORD, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD, MARIADB_RANDOM_ROOT_PASSWORD"
    fi
    if [ "$MARIADB_USER" = root ]; then
        error "MARIADB_USER=root: root is created by the image; use MARIADB_ROOT_PASSWORD for its password"
    fi
    if [ -n "$MARIADB_USER" ] && [ -z "$MARIADB_PASSWORD" ]; then
        error "MARIADB_USER is set but MARIADB_PASSWORD is not"
    fi
    if [ -n "$MARIADB_PASSWORD" ] && [ -z "$MARIADB_USER" ]; then
        warn "MARIADB_PASSWORD is set but MARIADB_USER is not: no user is created"
    fi
}

create_directories() {
    mkdir -p "$DATADIR"
    if [ "$(id -u)" = 0 ]; then
        find "$DATADIR" \! -user mysql -exec chown mysql: '{}' +
        find "${SOCKET%/*}" -maxdepth 0 \! -user mysql -exec chown mysql: '{}' \; 2>/dev/null || :
    fi
}

# --- first start ------------------------------------------------------------------------------------
# An SQL string literal's body: backslash, newline and quote escaped.
sql_escape() {
    local escaped="${1//\\/\\\\}"
    escaped="${escaped//$'\n'/\\n}"
    printf '%s' "${escaped//\'/\\\'}"
}

random_password() {
    local password
    password="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 || :)"
    [ "${#password}" -eq 32 ] || error "could not read /dev/urandom"
    printf '%s' "$password"
}

# process_sql [--dont-use-root-password] [client args...]: SQL from stdin as root over the socket.
# The password travels in the environment of the client (MYSQL_PWD), never on its command line.
process_sql() {
    local password="$MARIADB_ROOT_PASSWORD" args=()
    if [ "${1:-}" = --dont-use-root-password ]; then
        password=""
        shift
    fi
    [ -z "$MARIADB_DATABASE" ] || args+=(--database="$MARIADB_DATABASE")
    MYSQL_PWD="$password" mariadb --protocol=socket --user=root --host=localhost --socket="$SOCKET" \
        "${args[@]}" "$@"
}

init_database_dir() {
    note "initializing the database directory $DATADIR"
    local old_mode=(--old-mode='UTF8_IS_UTF8MB3')   # 10.6+; 10.5 (backupctl/mariadb:10.5) lacks the value
    case "$("$1" --version 2>/dev/null)" in *Ver\ 10.[0-5].*) old_mode=() ;; esac
    shift   # mariadbd; the rest are server options, valid for install-db too
    mariadb-install-db --datadir="$DATADIR" --rpm --auth-root-authentication-method=normal \
        --skip-test-db "${old_mode[@]}" --default-time-zone=SYSTEM --enforce-storage-engine= \
        --skip-log-bin --expire-logs-days=0 --loose-innodb_buffer_pool_load_at_startup=0 \
        --loose-innodb_buffer_pool_dump_at_shutdown=0 "$@" >/dev/null
}

temp_server_start() {
    "$@" --skip-networking --default-time-zone=SYSTEM --socket="$SOCKET" --wsrep_on=OFF \
        --expire-logs-days=0 --skip-slave-start --loose-innodb_buffer_pool_load_at_startup=0 \
        --skip-ssl &
    TEMP_SERVER_PID=$!
    local _
    for _ in $(seq 300); do   # up to 60 s
        if process_sql --dont-use-root-password --database=mysql <<<'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$TEMP_SERVER_PID" 2>/dev/null || error "the temporary server exited during start-up"
        sleep 0.2
    done
    error "the temporary server did not accept connections within 60 s"
}

temp_server_stop() {
    kill "$TEMP_SERVER_PID"
    wait "$TEMP_SERVER_PID" || :
}

healthcheck_users_sql() {
    local password host
    password="$(random_password)"
    for host in 127.0.0.1 ::1 localhost; do
        printf "CREATE USER IF NOT EXISTS healthcheck@'%s' IDENTIFIED BY '%s';\n" "$host" "$password"
        printf "SET PASSWORD FOR healthcheck@'%s' = PASSWORD('%s');\n" "$host" "$password"
        printf "GRANT USAGE ON *.* TO healthcheck@'%s';\n" "$host"
    done
    (umask 0077 && printf '[mariadb-client]\nport=%s\nsocket=%s\nuser=healthcheck\npassword=%s\n' \
        "$PORT" "$SOCKET" "$password" >"$DATADIR/.my-healthcheck.cnf")
}

setup_db() {
    if [ -z "$MARIADB_INITDB_SKIP_TZINFO" ]; then
        # --skip-write-binlog keeps it out of the binary log; LOCK TABLES makes the load fast
        mariadb-tzinfo-to-sql --skip-write-binlog /usr/share/zoneinfo 2>/dev/null |
            MARIADB_DATABASE='' process_sql --dont-use-root-password --database=mysql
    fi
    if [ -n "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
        MARIADB_ROOT_PASSWORD="$(random_password)"
        export MARIADB_ROOT_PASSWORD MYSQL_ROOT_PASSWORD="$MARIADB_ROOT_PASSWORD"
        note "GENERATED ROOT PASSWORD: $MARIADB_ROOT_PASSWORD"
    fi
    local root_password root_remote="" health database="" user="" grants=""
    root_password="$(sql_escape "$MARIADB_ROOT_PASSWORD")"
    health="$(healthcheck_users_sql)"
    if [ -n "$MARIADB_ROOT_HOST" ] && [ "$MARIADB_ROOT_HOST" != localhost ]; then
        root_remote="CREATE USER 'root'@'$MARIADB_ROOT_HOST' IDENTIFIED BY '$root_password';
GRANT ALL ON *.* TO 'root'@'$MARIADB_ROOT_HOST' WITH GRANT OPTION;
GRANT PROXY ON ''@'%' TO 'root'@'$MARIADB_ROOT_HOST' WITH GRANT OPTION;"
    fi
    if [ -n "$MARIADB_DATABASE" ]; then
        note "creating database $MARIADB_DATABASE"
        database="CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;"
    fi
    if [ -n "$MARIADB_USER" ] && [ -n "$MARIADB_PASSWORD" ]; then
        note "creating user $MARIADB_USER"
        user="CREATE USER '$MARIADB_USER'@'%' IDENTIFIED BY '$(sql_escape "$MARIADB_PASSWORD")';"
        if [ -n "$MARIADB_DATABASE" ]; then
            grants="GRANT ALL ON \`${MARIADB_DATABASE//_/\\_}\`.* TO '$MARIADB_USER'@'%';"
        fi
    fi
    note "securing system users (what mariadb-secure-installation does)"
    # root has no password yet; --binary-mode keeps the bytes of passwords and names as they are
    MARIADB_DATABASE='' process_sql --dont-use-root-password --database=mysql --binary-mode <<-EOSQL
SET @orig_sql_log_bin = @@SESSION.SQL_LOG_BIN;
SET @@SESSION.SQL_LOG_BIN = 0;
SET @@SESSION.SQL_MODE = REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');
DROP USER IF EXISTS root@'127.0.0.1', root@'::1';
EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname, '\'');
SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$root_password');
$root_remote
$health
SET @@SESSION.SQL_LOG_BIN = @orig_sql_log_bin;
$database
$user
$grants
EOSQL
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
            *.sql) note "running $file"; process_sql <"$file" ;;
            *.sql.gz) note "running $file"; gunzip -c "$file" | process_sql ;;
            *.sql.xz) note "running $file"; xzcat "$file" | process_sql ;;
            *.sql.zst) note "running $file"; zstd -dc "$file" | process_sql ;;
            *) note "ignoring $file" ;;
        esac
    done
}

# `mariadbd --help`, `--version` and friends print and exit: no setup for them.
want_help() {
    local arg
    for arg; do
        case "$arg" in
            -'?' | --help | --print-defaults | -V | --version) return 0 ;;
        esac
    done
    return 1
}

main() {
    if [ "${1:0:1}" = '-' ]; then
        set -- mariadbd "$@"
    fi
    if { [ "$1" = mariadbd ] || [ "$1" = mysqld ]; } && ! want_help "$@"; then
        setup_env "$@"
        create_directories
        if [ "$(id -u)" = 0 ]; then
            exec gosu mysql "${BASH_SOURCE[0]}" "$@"
        fi
        if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
            verify_minimum_env
            ls /docker-entrypoint-initdb.d/ >/dev/null   # unreadable mount: fail before install-db
            init_database_dir "$@"
            note "starting the temporary server"
            temp_server_start "$@"
            setup_db
            process_init_files /docker-entrypoint-initdb.d/*
            note "stopping the temporary server"
            temp_server_stop
            note "MariaDB init process done. Ready for start up."
        else
            note "the data directory holds a database; skipping initialization"
        fi
    fi
    exec "$@"
}

main "$@"
