<?php
/*
 * Plugin Name: Strata demo origin
 * Description: Small adjustments so the demo WordPress behaves well under tests
 *              and benchmarks. Installed by scripts/wordpress.sh as a
 *              must-use plugin (wp-content/mu-plugins/strata-origin.php).
 */

// Every test client posts from 127.0.0.1; WordPress would refuse a second
// anonymous comment from the same address within 15 seconds ("You are posting
// comments too quickly", HTTP 429). Duplicate-content detection stays on.
remove_action('check_comment_flood', 'check_comment_flood_db', 10);

// The machine has no outbound network (WP_HTTP_BLOCK_EXTERNAL): skip the
// WordPress.org update checks instead of logging a warning for each failure.
foreach (['_maybe_update_core', '_maybe_update_plugins', '_maybe_update_themes'] as $f) {
    remove_action('admin_init', $f);
}
foreach (['load-plugins.php', 'load-themes.php', 'load-update.php', 'load-update-core.php'] as $hook) {
    remove_action($hook, 'wp_update_plugins');
    remove_action($hook, 'wp_update_themes');
}
remove_action('init', 'wp_schedule_update_checks');
