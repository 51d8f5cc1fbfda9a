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
        $failure = strata_bench_ban($node, $site);
        if ($failure !== null) {
            error_log("strata bench purge: BAN to $node failed: $failure");
        }
    }
});

/*
 * Sends `BAN /` with `X-Ban-Host: $site` to the node at $node (HOST:PORT) and returns null on a
 * 200, else what went wrong. PHP's own sockets rather than wp_remote_request(): this site sets
 * WP_HTTP_BLOCK_EXTERNAL, which keeps WordPress's HTTP API from reaching any host but itself,
 * and the nodes behind the director have addresses of their own.
 */
function strata_bench_ban($node, $site) {
    $port = (int) substr(strrchr($node, ':'), 1);
    $host = substr($node, 0, strrpos($node, ':'));
    $socket = @fsockopen($host, $port, $errno, $errstr, 2);
    if ($socket === false) {
        return "connect: $errstr ($errno)";
    }
    stream_set_timeout($socket, 2);
    fwrite($socket, "BAN / HTTP/1.1\r\nHost: $node\r\nX-Ban-Host: $site\r\nConnection: close\r\n\r\n");
    $status = fgets($socket);
    fclose($socket);
    if ($status === false) {
        return 'no answer';
    }
    return preg_match('#^HTTP/1\.[01] 200 #', $status) ? null : trim($status);
}
