<?php
/**
 * Plugin Name: Strata
 * Description: Tells the Strata caching nodes what changed when a change never passes
 *              through them (wp-cron, WP-CLI, imports, moderation, themes, menus, options):
 *              signed tag bans to the nodes' admin listeners, tags for term and author pages,
 *              purge links in the admin bar, a settings page and a WP-CLI command.
 * Version: 1.1.0
 * Requires at least: 6.0
 * Requires PHP: 8.1
 * License: MIT
 *
 * Works as a normal plugin (wp-content/plugins/strata/) and as a must-use plugin
 * (wp-content/mu-plugins/strata/ plus the one-line loader mu-loader.php copied to
 * wp-content/mu-plugins/strata.php). See docs/wordpress-plugin.md in the Strata repository.
 */

if (!defined('ABSPATH')) {
    // Loaded outside WordPress: only the pure parts (signer, rules) may be used, by tests.
    return;
}
if (defined('STRATA_PLUGIN_VERSION')) {
    // Installed twice (plugin and must-use plugin): the first copy loaded wins.
    return;
}

/** The plugin's version, announced in the X-Strata-Plugin response header. */
define('STRATA_PLUGIN_VERSION', '1.1.0');

require_once __DIR__ . '/includes/signer.php';
require_once __DIR__ . '/includes/rules.php';
require_once __DIR__ . '/includes/config.php';
require_once __DIR__ . '/includes/client.php';
require_once __DIR__ . '/includes/bans.php';
require_once __DIR__ . '/includes/hooks.php';
require_once __DIR__ . '/includes/admin.php';

Strata\Hooks::register();
Strata\Admin::register();

if (defined('WP_CLI') && WP_CLI) {
    require_once __DIR__ . '/includes/cli.php';
    WP_CLI::add_command('strata', Strata\Cli::class);
}
