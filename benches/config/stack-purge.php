<?php
/*
 * Plugin Name: Strata full-stack benchmark: Varnish purge
 * Description: What a purge plugin (Proxy Cache Purge and the like) does for a Varnish
 *              cluster: when a comment is posted, send a BAN to every Varnish node, one after
 *              another, before WordPress answers. Installed by benches/stack.sh in
 *              wp-content/mu-plugins/ for its Varnish phase only, and removed afterwards.
 */

add_action('comment_post', function ($comment_id) {
    // The Varnish nodes' public addresses: stack.sh fills in this list when it installs the file.
    $nodes = [];
    $site = wp_parse_url(home_url(), PHP_URL_HOST) . ':' . (wp_parse_url(home_url(), PHP_URL_PORT) ?: 80);
    foreach ($nodes as $node) {
        $r = wp_remote_request("http://$node/", [
            'method' => 'BAN',
            'headers' => ['X-Ban-Host' => $site],
            'timeout' => 2,
        ]);
        if (is_wp_error($r) || wp_remote_retrieve_response_code($r) !== 200) {
            error_log("strata bench purge: BAN to $node failed: " .
                (is_wp_error($r) ? $r->get_error_message() : wp_remote_retrieve_response_code($r)));
        }
    }
});
