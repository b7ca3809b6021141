<?php
// Read by Debian's /usr/share/wordpress/wp-config.php for any host name. Values come from the
// environment (the official image's WORDPRESS_* variables), so no password is written to a file.
function backupctl_env($name, $default) {
    $value = getenv($name);
    return ($value === false || $value === '') ? $default : $value;
}
define('DB_NAME', backupctl_env('WORDPRESS_DB_NAME', 'wordpress'));
define('DB_USER', backupctl_env('WORDPRESS_DB_USER', 'root'));
define('DB_PASSWORD', backupctl_env('WORDPRESS_DB_PASSWORD', ''));
define('DB_HOST', backupctl_env('WORDPRESS_DB_HOST', 'mysql'));
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
define('WP_CONTENT_DIR', '/var/lib/wordpress/wp-content');
define('FS_METHOD', 'direct');
$table_prefix = backupctl_env('WORDPRESS_TABLE_PREFIX', 'wp_');
if ($backupctl_extra = getenv('WORDPRESS_CONFIG_EXTRA')) {
    eval($backupctl_extra);
}
