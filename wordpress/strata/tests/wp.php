<?php
/*
 * What the integration tests do inside the demo WordPress, from the command line (run as
 * the web server's user): php wp.php COMMAND ARGS… prints JSON.
 *
 *   state                      the plugin's version, secret source and node options
 *   set-nodes URLS             sets the node list option; prints the previous options
 *   restore JSON               puts back the options set-nodes printed
 *   post TITLE [TERM_ID]       publishes a post (in category TERM_ID); prints its id and link
 *   future-post TITLE SECONDS  schedules a post SECONDS from now (cron event included);
 *                              prints its id and link
 *   status ID                  the post's status
 *   pending-comment ID TEXT    adds a comment awaiting moderation to post ID
 *   approve ID                 approves comment ID (wp_set_comment_status)
 *   delete-post ID             deletes post ID and its comments for good
 *   last-bans                  the plugin's log of sendings, newest first
 *   category NAME              creates a category; prints its id, slug and link
 *   delete-term ID             deletes category ID
 *   menu NAME                  creates a navigation menu (in no location); prints its id
 *   delete-menu ID             deletes menu ID
 *   get-options NAMES          the options' values, by name
 *   set-option NAME VALUE      sets an option
 *   comment-status ID          the comment's status (approved, unapproved, spam, trash)
 *
 * WordPress is loaded from STRATA_WP_LOAD (default /usr/share/wordpress/wp-load.php).
 */

if (PHP_SAPI !== 'cli') {
    exit(1);
}
require getenv('STRATA_WP_LOAD') ?: '/usr/share/wordpress/wp-load.php';

function out($value): void
{
    echo json_encode($value, JSON_UNESCAPED_SLASHES), "\n";
}

function fail(string $why): void
{
    fwrite(STDERR, "$why\n");
    exit(1);
}

$args = array_slice($argv, 2);
switch ($argv[1] ?? '') {
    case 'state':
        $loaded = class_exists('Strata\\Config');
        out([
            'version' => defined('STRATA_PLUGIN_VERSION') ? STRATA_PLUGIN_VERSION : null,
            'secret_file' => defined('STRATA_SECRET_FILE') ? STRATA_SECRET_FILE : null,
            'secret_problem' => $loaded ? Strata\Config::secret()['problem'] : 'plugin not loaded',
            'nodes_constant' => defined('STRATA_NODES'),
        ]);
        break;
    case 'set-nodes':
        $previous = [];
        foreach (['strata_nodes', 'strata_send'] as $name) {
            $previous[$name] = get_option($name, null);
        }
        update_option('strata_nodes', implode("\n", $args));
        delete_option('strata_send');
        out($previous);
        break;
    case 'restore':
        $previous = json_decode($args[0] ?? 'null', true);
        if (!is_array($previous)) {
            fail('restore takes the JSON set-nodes printed');
        }
        foreach ($previous as $name => $value) {
            $value === null ? delete_option($name) : update_option($name, $value);
        }
        out('restored');
        break;
    case 'post':
    case 'future-post':
        $future = $argv[1] === 'future-post';
        $postarr = [
            'post_title' => $args[0] ?? fail('no title'),
            'post_content' => 'Written by the Strata plugin tests.',
            'post_status' => $future ? 'future' : 'publish',
            'post_author' => 1,
            'comment_status' => 'open',
        ];
        if (!$future && isset($args[1])) {
            $postarr['post_category'] = [(int) $args[1]];
        }
        if ($future) {
            // WordPress publishes at once a post dated less than a minute ahead: schedule
            // it two minutes ahead, then bring its date and its cron event to SECONDS from
            // now, as a post scheduled earlier looks shortly before its time.
            $gmt = gmdate('Y-m-d H:i:s', time() + 120);
            $postarr['post_date_gmt'] = $gmt;
            $postarr['post_date'] = get_date_from_gmt($gmt);
        }
        $id = wp_insert_post($postarr, true);
        if (is_wp_error($id)) {
            fail($id->get_error_message());
        }
        if ($future) {
            $at = time() + (int) ($args[1] ?? 3);
            $gmt = gmdate('Y-m-d H:i:s', $at);
            $GLOBALS['wpdb']->update($GLOBALS['wpdb']->posts, ['post_date_gmt' => $gmt, 'post_date' => get_date_from_gmt($gmt)], ['ID' => $id]);
            clean_post_cache($id);
            wp_clear_scheduled_hook('publish_future_post', [$id]);
            wp_schedule_single_event($at, 'publish_future_post', [$id]);
        }
        $post = get_post($id);
        out(['id' => $id, 'status' => $post->post_status, 'link' => get_permalink($id), 'slug' => $post->post_name]);
        break;
    case 'status':
        out(get_post_status((int) ($args[0] ?? 0)));
        break;
    case 'pending-comment':
        $id = wp_insert_comment([
            'comment_post_ID' => (int) ($args[0] ?? 0),
            'comment_content' => $args[1] ?? fail('no text'),
            'comment_author' => 'Strata plugin test',
            'comment_author_email' => 'plugin-test@example.com',
            'comment_approved' => 0,
        ]);
        $id ? out($id) : fail('comment not inserted');
        break;
    case 'approve':
        $ok = wp_set_comment_status((int) ($args[0] ?? 0), 'approve', true);
        $ok === true ? out('approved') : fail('not approved');
        break;
    case 'delete-post':
        $deleted = wp_delete_post((int) ($args[0] ?? 0), true);
        out($deleted ? 'deleted' : 'not deleted');
        break;
    case 'last-bans':
        out(get_option('strata_last_bans', []));
        break;
    case 'category':
        $made = wp_insert_term($args[0] ?? fail('no name'), 'category');
        if (is_wp_error($made)) {
            fail($made->get_error_message());
        }
        $term = get_term($made['term_id'], 'category');
        out(['id' => $term->term_id, 'slug' => $term->slug, 'link' => get_term_link($term)]);
        break;
    case 'delete-term':
        out(wp_delete_term((int) ($args[0] ?? 0), 'category') === true ? 'deleted' : 'not deleted');
        break;
    case 'menu':
        $id = wp_create_nav_menu($args[0] ?? fail('no name'));
        is_wp_error($id) ? fail($id->get_error_message()) : out($id);
        break;
    case 'delete-menu':
        out(wp_delete_nav_menu((int) ($args[0] ?? 0)) === true ? 'deleted' : 'not deleted');
        break;
    case 'get-options':
        $values = [];
        foreach ($args as $name) {
            $values[$name] = get_option($name);
        }
        out($values);
        break;
    case 'set-option':
        update_option($args[0] ?? fail('no name'), $args[1] ?? fail('no value'));
        out(get_option($args[0]));
        break;
    case 'comment-status':
        out(wp_get_comment_status((int) ($args[0] ?? 0)));
        break;
    default:
        fail('unknown command; see the top of this file');
}
