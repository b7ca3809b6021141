#!/bin/sh
# Start Apache in the foreground with Debian's environment (as the official image's
# apache2-foreground); any other command runs as given.
set -e
if [ "${1:-}" = apache2-foreground ]; then
    . /etc/apache2/envvars   # (not under set -u: it reads unset variables)
    mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR" "$APACHE_LOG_DIR"
    rm -f "$APACHE_PID_FILE"
    mkdir -p /var/lib/wordpress/wp-content/uploads
    chown www-data:www-data /var/lib/wordpress/wp-content/uploads || true
    exec apache2 -DFOREGROUND
fi
exec "$@"
