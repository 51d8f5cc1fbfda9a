<?php
/**
 * The admin side: "Purge this page" and "Purge everything" in the admin bar (nonce-checked
 * admin-post actions, capability manage_options), the Settings → Strata page (each node's
 * state from its /cluster, the last bans sent and their answers, the node list and send
 * mode when no constant sets them) and a notice when bans cannot be signed.
 */

namespace Strata;

final class Admin
{
    /** Capability needed to purge and to see or change the settings. */
    public const CAPABILITY = 'manage_options';
    /** admin-post.php action of both purge links. */
    public const PURGE_ACTION = 'strata_purge';
    /** admin-post.php action of the settings form. */
    public const SAVE_ACTION = 'strata_save';
    /** The settings page's slug. */
    public const PAGE = 'strata';

    public static function register(): void
    {
        add_action('admin_bar_menu', [self::class, 'admin_bar'], 100);
        add_action('admin_post_' . self::PURGE_ACTION, [self::class, 'purge']);
        add_action('admin_post_' . self::SAVE_ACTION, [self::class, 'save']);
        add_action('admin_menu', [self::class, 'menu']);
        add_action('admin_notices', [self::class, 'notices']);
    }

    /** The "Strata" admin bar menu with its two purge links. */
    public static function admin_bar(\WP_Admin_Bar $bar): void
    {
        if (!current_user_can(self::CAPABILITY)) {
            return;
        }
        $bar->add_node(['id' => 'strata', 'title' => 'Strata', 'href' => admin_url('options-general.php?page=' . self::PAGE)]);
        if (!is_admin() && isset($_SERVER['HTTP_HOST'], $_SERVER['REQUEST_URI'])) {
            $url = (is_ssl() ? 'https://' : 'http://') . $_SERVER['HTTP_HOST'] . $_SERVER['REQUEST_URI'];
            $bar->add_node([
                'parent' => 'strata',
                'id' => 'strata-purge-page',
                'title' => 'Purge this page',
                'href' => self::purge_link(['what' => 'url', 'url' => rawurlencode($url)]),
            ]);
        }
        $bar->add_node([
            'parent' => 'strata',
            'id' => 'strata-purge-all',
            'title' => 'Purge everything',
            'href' => self::purge_link(['what' => 'all']),
        ]);
    }

    private static function purge_link(array $args): string
    {
        $args['action'] = self::PURGE_ACTION;
        return wp_nonce_url(add_query_arg($args, admin_url('admin-post.php')), self::PURGE_ACTION);
    }

    /** admin-post.php?action=strata_purge: sends the ban now and reports its answer. */
    public static function purge(): void
    {
        if (!current_user_can(self::CAPABILITY)) {
            wp_die('You may not purge the cache.', 403);
        }
        check_admin_referer(self::PURGE_ACTION);
        $what = isset($_GET['what']) ? sanitize_key(wp_unslash($_GET['what'])) : '';
        $back = wp_get_referer() ?: admin_url('options-general.php?page=' . self::PAGE);
        if ($what === 'url') {
            $url = isset($_GET['url']) ? esc_url_raw(wp_unslash($_GET['url'])) : '';
            if ($url === '') {
                wp_die('No URL to purge.', 400);
            }
            $bans = [Rules::url($url)];
            $back = $url;
        } elseif ($what === 'all') {
            $bans = [Rules::all()];
        } else {
            wp_die('Nothing to purge.', 400);
        }
        $entry = Bans::send($bans);
        set_transient('strata_notice_' . get_current_user_id(), self::summary($entry), 60);
        wp_safe_redirect($back);
        exit;
    }

    /** One line saying how a sending went. */
    public static function summary(array $entry): string
    {
        $answers = [];
        foreach ($entry['nodes'] as $n) {
            $answers[] = $n['node'] . ': ' . ($n['error'] ?? (string) $n['status']);
        }
        return ($entry['ok'] ? 'Strata: sent ' : 'Strata: NOT sent ') . $entry['bans'] . ' (' . implode('; ', $answers) . ')';
    }

    public static function menu(): void
    {
        add_options_page('Strata', 'Strata', self::CAPABILITY, self::PAGE, [self::class, 'page']);
    }

    /** The notices: the last purge's outcome, and a secret that cannot sign. */
    public static function notices(): void
    {
        if (!current_user_can(self::CAPABILITY)) {
            return;
        }
        $key = 'strata_notice_' . get_current_user_id();
        $notice = get_transient($key);
        if (is_string($notice)) {
            delete_transient($key);
            $class = str_contains($notice, 'NOT sent') ? 'notice-error' : 'notice-success';
            printf('<div class="notice %s is-dismissible"><p>%s</p></div>', esc_attr($class), esc_html($notice));
        }
        $secret = Config::secret();
        if ($secret['secret'] === null && (Config::nodes() !== [] || defined('STRATA_SECRET_FILE') || defined('STRATA_SECRET'))) {
            printf(
                '<div class="notice notice-error"><p>%s</p></div>',
                esc_html('Strata cannot sign bans, so the caching nodes are not told about changes: ' . $secret['problem']
                    . '. Define STRATA_SECRET_FILE (a file holding the cluster secret, at least 16 characters) in wp-config.php.')
            );
        }
    }

    /** admin-post.php?action=strata_save: the node list and send mode of the settings page. */
    public static function save(): void
    {
        if (!current_user_can(self::CAPABILITY)) {
            wp_die('You may not change these settings.', 403);
        }
        check_admin_referer(self::SAVE_ACTION);
        if (!Config::nodes_from_constant() && isset($_POST['nodes'])) {
            $nodes = Config::parse_nodes(wp_unslash((string) $_POST['nodes']));
            update_option(Config::OPTION_NODES, implode("\n", $nodes));
        }
        if (!defined('STRATA_SEND') && isset($_POST['send'])) {
            update_option(Config::OPTION_SEND, wp_unslash($_POST['send']) === 'each' ? 'each' : 'one');
        }
        wp_safe_redirect(admin_url('options-general.php?page=' . self::PAGE . '&saved=1'));
        exit;
    }

    /**
     * A node's state from its /cluster (a signed GET).
     *
     * @return array{ok:bool,text:string}
     */
    public static function node_state(string $node): array
    {
        $secret = Config::secret()['secret'];
        if ($secret === null) {
            return ['ok' => false, 'text' => 'no secret to sign with'];
        }
        $r = Client::request($secret, 'GET', $node, '/cluster', '', Config::timeout());
        if ($r['status'] !== 200) {
            return ['ok' => false, 'text' => $r['error'] ?? "answered {$r['status']}: " . substr($r['body'], 0, 200)];
        }
        $c = json_decode($r['body'], true);
        if (!is_array($c)) {
            return ['ok' => false, 'text' => 'answer is not JSON'];
        }
        $sibs = is_array($c['siblings'] ?? null) ? $c['siblings'] : [];
        $up = count(array_filter($sibs, static fn($s) => !empty($s['up'])));
        return [
            'ok' => true,
            'text' => sprintf(
                'node %s, ban sequence %s, %s, siblings up %d of %d (%s ms)',
                $c['node'] ?? '?',
                $c['seq'] ?? '?',
                !empty($c['confirmed']) ? 'confirmed current' : 'NOT confirmed current',
                $up,
                count($sibs),
                $r['ms']
            ),
        ];
    }

    /** Settings → Strata. */
    public static function page(): void
    {
        if (!current_user_can(self::CAPABILITY)) {
            return;
        }
        $nodes = Config::nodes();
        $secret = Config::secret();
        echo '<div class="wrap"><h1>Strata</h1>';
        if (isset($_GET['saved'])) {
            echo '<div class="notice notice-success"><p>Settings saved.</p></div>';
        }
        echo '<h2>Configuration</h2><table class="form-table" role="presentation">';
        printf('<tr><th>Secret</th><td>%s</td></tr>', esc_html($secret['source'] . ($secret['problem'] ? ' — ' . $secret['problem'] : ' — usable')));
        printf('<tr><th>Timeout</th><td>%s s per node</td></tr>', esc_html((string) Config::timeout()));
        printf('<tr><th>Plugin version</th><td>%s</td></tr></table>', esc_html(STRATA_PLUGIN_VERSION));

        echo '<h2>Nodes</h2>';
        if ($nodes === []) {
            echo '<p>No node is configured: nothing is sent.</p>';
        } else {
            echo '<table class="widefat striped"><thead><tr><th>Admin URL</th><th>State (GET /cluster)</th></tr></thead><tbody>';
            foreach ($nodes as $node) {
                $state = self::node_state($node);
                printf('<tr><td>%s</td><td style="color:%s">%s</td></tr>', esc_html($node), $state['ok'] ? 'inherit' : '#b32d2e', esc_html($state['text']));
            }
            echo '</tbody></table>';
        }

        echo '<form method="post" action="' . esc_url(admin_url('admin-post.php')) . '">';
        wp_nonce_field(self::SAVE_ACTION);
        printf('<input type="hidden" name="action" value="%s">', esc_attr(self::SAVE_ACTION));
        echo '<table class="form-table" role="presentation"><tr><th><label for="strata-nodes">Node admin URLs</label></th><td>';
        printf(
            '<textarea id="strata-nodes" name="nodes" rows="4" cols="50" %s>%s</textarea>',
            Config::nodes_from_constant() ? 'disabled' : '',
            esc_textarea(implode("\n", $nodes))
        );
        echo '<p class="description">One per line, e.g. http://10.0.0.2:9080.' . (Config::nodes_from_constant() ? ' Set by STRATA_NODES in wp-config.php.' : '') . '</p></td></tr>';
        echo '<tr><th><label for="strata-send">Send to</label></th><td>';
        printf('<select id="strata-send" name="send" %s>', defined('STRATA_SEND') ? 'disabled' : '');
        foreach (['one' => 'one node (the next if it fails); it tells the others', 'each' => 'each node'] as $value => $label) {
            printf('<option value="%s" %s>%s</option>', esc_attr($value), selected(Config::send_mode(), $value, false), esc_html($label));
        }
        echo '</select>' . (defined('STRATA_SEND') ? '<p class="description">Set by STRATA_SEND in wp-config.php.</p>' : '') . '</td></tr></table>';
        submit_button('Save');
        echo '</form>';

        echo '<h2>Last bans sent</h2>';
        $log = Bans::log();
        if ($log === []) {
            echo '<p>None yet.</p>';
        } else {
            echo '<table class="widefat striped"><thead><tr><th>When</th><th>Bans</th><th>Answers</th></tr></thead><tbody>';
            foreach ($log as $entry) {
                $answers = [];
                foreach ($entry['nodes'] ?? [] as $n) {
                    $answers[] = $n['node'] . ' → ' . ($n['error'] ?? $n['status'] . ' ' . $n['answer']) . ' (' . $n['ms'] . ' ms)';
                }
                printf(
                    '<tr><td>%s</td><td>%s</td><td style="color:%s">%s</td></tr>',
                    esc_html(wp_date('Y-m-d H:i:s', (int) ($entry['time'] ?? 0))),
                    esc_html((string) ($entry['bans'] ?? '')),
                    !empty($entry['ok']) ? 'inherit' : '#b32d2e',
                    implode('<br>', array_map('esc_html', $answers))
                );
            }
            echo '</tbody></table>';
        }
        echo '</div>';
    }
}
