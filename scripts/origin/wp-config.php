<?php
/*
 * WordPress site configuration for the Strata demo origin.
 *
 * Installed by scripts/wordpress.sh as /etc/wordpress/config-127.0.0.1.php
 * (with config-localhost.php and config-default.php symlinked to it). Debian's
 * /usr/share/wordpress/wp-config.php picks /etc/wordpress/config-<host>.php,
 * where <host> is the Host header without its port, so `Host: 127.0.0.1:8080`
 * (the proxy's public address) and `Host: 127.0.0.1:8081` both land here.
 */

define('DB_NAME', 'strata_wp');
define('DB_USER', 'strata_wp');
define('DB_PASSWORD', 'strata_wp');
define('DB_HOST', 'localhost'); // unix socket /run/mysqld/mysqld.sock
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
$table_prefix = 'wp_';

// Debian layout: themes, plugins and uploads live under /var/lib/wordpress.
define('WP_CONTENT_DIR', '/var/lib/wordpress/wp-content');

// The machine has no outbound network and nothing should happen behind a request's back.
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('WP_AUTO_UPDATE_CORE', false);
define('DISALLOW_FILE_MODS', true);

// The Strata plugin (a must-use plugin here) signs its bans with the local cluster secret,
// which scripts/wordpress.sh makes readable by www-data. No node is named: the plugin sends
// nothing until STRATA_NODES is defined here or nodes are set on Settings -> Strata.
define('STRATA_SECRET_FILE', '/var/lib/strata/cluster.secret');

// Command-line scripts have no Host header; behave like the public address.
if (PHP_SAPI === 'cli' && empty($_SERVER['HTTP_HOST'])) {
    $_SERVER['HTTP_HOST'] = '127.0.0.1:8080';
}

// Authentication keys and salts, generated once per machine by scripts/wordpress.sh.
require '/etc/wordpress/strata-salts.php';
