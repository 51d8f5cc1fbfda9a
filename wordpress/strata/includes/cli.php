<?php
/**
 * `wp strata`: purge from the command line and show the nodes' state. Loaded only when
 * WP-CLI runs WordPress.
 */

namespace Strata;

final class Cli
{
    /**
     * Sends a ban to the nodes now and prints their answers.
     *
     * ## OPTIONS
     *
     * [--post=<id>]
     * : A post: its pages, lists, terms and author archives.
     *
     * [--url=<url>]
     * : One absolute URL with all its variants.
     *
     * [--tag=<tag>]
     * : Every page carrying a tag (post:12, term:5, list:home, html…).
     *
     * [--all]
     * : Everything the nodes hold.
     *
     * ## EXAMPLES
     *
     *     wp strata purge --post=12
     *     wp strata purge --url=https://example.com/hello-world/
     *     wp strata purge --tag=html
     *     wp strata purge --all
     */
    public function purge(array $args, array $assoc): void
    {
        $bans = [];
        if (isset($assoc['post'])) {
            $post = get_post((int) $assoc['post']);
            if (!$post instanceof \WP_Post) {
                \WP_CLI::error("no post {$assoc['post']}");
            }
            $bans = array_merge($bans, Rules::post_bans($post->ID, $post->post_type, Hooks::term_ids($post), (int) $post->post_author, false));
        }
        if (isset($assoc['url'])) {
            $bans[] = Rules::url((string) $assoc['url']);
        }
        if (isset($assoc['tag'])) {
            $bans[] = Rules::tag((string) $assoc['tag']);
        }
        if (isset($assoc['all'])) {
            $bans[] = Rules::all();
        }
        if ($bans === []) {
            \WP_CLI::error('say what to purge: --post=ID, --url=URL, --tag=TAG or --all');
        }
        if (!Config::ready()) {
            \WP_CLI::error('not configured: ' . (Config::nodes() === [] ? 'no node (STRATA_NODES)' : Config::secret()['problem']));
        }
        $entry = Bans::send(Rules::finish($bans));
        foreach ($entry['nodes'] as $n) {
            \WP_CLI::log(sprintf('%s: %s (%s ms) %s', $n['node'], $n['error'] ?? $n['status'], $n['ms'], $n['answer']));
        }
        $entry['ok'] ? \WP_CLI::success('sent ' . $entry['bans']) : \WP_CLI::error('not sent: ' . $entry['bans']);
    }

    /**
     * Shows the configuration and each node's state (its /cluster).
     */
    public function status(array $args, array $assoc): void
    {
        $secret = Config::secret();
        \WP_CLI::log('secret: ' . $secret['source'] . ($secret['problem'] ? ' — ' . $secret['problem'] : ' — usable'));
        \WP_CLI::log('send to: ' . Config::send_mode() . ', timeout ' . Config::timeout() . ' s');
        $nodes = Config::nodes();
        if ($nodes === []) {
            \WP_CLI::warning('no node configured: nothing is sent');
        }
        foreach ($nodes as $node) {
            $state = Admin::node_state($node);
            \WP_CLI::log("$node: " . $state['text']);
        }
        foreach (array_slice(Bans::log(), 0, 5) as $entry) {
            \WP_CLI::log(sprintf('%s %s %s', wp_date('Y-m-d H:i:s', (int) $entry['time']), $entry['ok'] ? 'sent' : 'NOT sent', $entry['bans']));
        }
    }
}
