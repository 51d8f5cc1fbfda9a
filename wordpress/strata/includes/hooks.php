<?php
/**
 * WordPress's hooks turned into bans, and the response headers the plugin adds: the tags of
 * term and author pages (`xkey`), and `X-Strata-Plugin` announcing the plugin.
 */

namespace Strata;

final class Hooks
{
    /** Tags response header read by strata-proxy (bans.tag_headers; space-separated). */
    public const TAG_HEADER = 'xkey';
    /** The header announcing the plugin to the nodes, which remove it before delivery. */
    public const ANNOUNCE_HEADER = 'X-Strata-Plugin';

    /**
     * The kinds of admin change whose bans this plugin sends itself (the hooks below), as
     * the nodes' write rules name them: for these, a node that sees the announcement with
     * its cluster's key leaves out its own guess (a ban of every page).
     */
    public const COVERS = ['posts', 'comments', 'terms', 'menus', 'widgets', 'customizer', 'themes', 'options', 'updates', 'purges'];

    public static function register(): void
    {
        add_action('init', [self::class, 'announce'], 0);
        add_action('template_redirect', [self::class, 'tag_page'], 0);

        // Posts: publish, update, unpublish, trash (status changes), scheduled posts going
        // live in wp-cron (future -> publish), permanent deletion, term changes of a post.
        add_action('transition_post_status', [self::class, 'post_transition'], 10, 3);
        add_action('before_delete_post', [self::class, 'post_deleting'], 10, 2);
        add_action('set_object_terms', [self::class, 'post_terms_set'], 10, 6);
        add_action('post_stuck', [self::class, 'sticky_changed']);
        add_action('post_unstuck', [self::class, 'sticky_changed']);

        // Terms.
        add_action('created_term', [self::class, 'term_changed'], 10, 3);
        add_action('edited_term', [self::class, 'term_changed'], 10, 3);
        add_action('delete_term', [self::class, 'term_changed'], 10, 3);
        add_action('profile_update', [self::class, 'author_changed'], 10, 2);

        // Comments: approve, unapprove, spam, trash, delete (all transitions), edits of
        // approved comments, comments inserted approved outside wp-comments-post.php.
        add_action('transition_comment_status', [self::class, 'comment_transition'], 10, 3);
        add_action('edit_comment', [self::class, 'comment_edited'], 10, 2);
        add_action('wp_insert_comment', [self::class, 'comment_inserted'], 10, 2);

        // Everything a page shows around its content: menus, widgets, customizer, theme,
        // site options (Rules::SITE_OPTIONS), updates and plugin (de)activation.
        add_action('wp_update_nav_menu', [self::class, 'everything']);
        add_action('wp_delete_nav_menu', [self::class, 'everything']);
        add_action('customize_save_after', [self::class, 'everything']);
        add_action('switch_theme', [self::class, 'everything']);
        add_action('upgrader_process_complete', [self::class, 'code_changed']);
        add_action('_core_updated_successfully', [self::class, 'code_changed']);
        add_action('activated_plugin', [self::class, 'code_changed']);
        add_action('deactivated_plugin', [self::class, 'code_changed']);
        add_action('updated_option', [self::class, 'option_changed'], 10, 3);
        add_action('added_option', [self::class, 'option_changed'], 10, 2);
        add_action('deleted_option', [self::class, 'option_changed']);
    }

    /** Sends X-Strata-Plugin on every answer WordPress gives (front end, admin, REST, cron). */
    public static function announce(): void
    {
        if (PHP_SAPI !== 'cli' && !headers_sent()) {
            header(self::ANNOUNCE_HEADER . ': ' . self::announcement());
        }
    }

    /**
     * The X-Strata-Plugin value: the version; and when bans can be sent (nodes and a usable
     * secret), the kinds of change it reports and the key of the secret it signs with:
     * "1.1.0; covers=posts,comments,…; key=0f9be4e5213846a9". Without them no node trusts
     * the plugin to report anything.
     */
    public static function announcement(): string
    {
        $value = STRATA_PLUGIN_VERSION;
        $secret = Config::secret()['secret'];
        if ($secret !== null && Config::nodes() !== []) {
            $value .= '; covers=' . implode(',', self::COVERS) . '; key=' . Signer::plugin_key($secret);
        }
        return $value;
    }

    /** Adds the page's own tags in `xkey`, so bans of terms and authors find it. */
    public static function tag_page(): void
    {
        if (headers_sent() || is_admin()) {
            return;
        }
        $tags = self::page_tags();
        if ($tags !== []) {
            header(self::TAG_HEADER . ': ' . implode(' ', $tags), false);
        }
    }

    /**
     * The tags of the page WordPress is about to render: a singular page names its post
     * (`post:ID`), the terms it is filed under (`in-term:ID`) and its author
     * (`by-author:ID`); a term archive its term (`term:ID`); an author archive its author
     * (`author:ID`).
     *
     * @return string[]
     */
    public static function page_tags(): array
    {
        $tags = [];
        if (is_singular()) {
            $post = get_queried_object();
            if ($post instanceof \WP_Post) {
                // Not term:ID and author:ID: those are the archives, banned by every post
                // published in the term or by the author; a post page changes only when the
                // term or the author itself does.
                $tags[] = 'post:' . $post->ID;
                foreach (self::term_ids($post) as $id) {
                    $tags[] = "in-term:$id";
                }
                if ((int) $post->post_author > 0) {
                    $tags[] = 'by-author:' . (int) $post->post_author;
                }
            }
        } elseif (is_category() || is_tag() || is_tax()) {
            $term = get_queried_object();
            if ($term instanceof \WP_Term) {
                $tags[] = 'term:' . $term->term_id;
            }
        } elseif (is_author()) {
            $id = (int) get_queried_object_id();
            if ($id > 0) {
                $tags[] = "author:$id";
            }
        }
        return $tags;
    }

    /**
     * The ids of a post's terms in its public taxonomies.
     *
     * @return int[]
     */
    public static function term_ids(\WP_Post $post): array
    {
        $ids = [];
        foreach (get_object_taxonomies($post->post_type) as $taxonomy) {
            if (!is_taxonomy_viewable($taxonomy)) {
                continue;
            }
            $terms = get_the_terms($post, $taxonomy);
            if (is_array($terms)) {
                foreach ($terms as $term) {
                    $ids[] = (int) $term->term_id;
                }
            }
        }
        return $ids;
    }

    /** Whether changes to a post can show on public pages at all. */
    private static function watched(\WP_Post $post): bool
    {
        if (wp_is_post_revision($post) || wp_is_post_autosave($post)) {
            return false;
        }
        return is_post_type_viewable($post->post_type) && $post->post_type !== 'attachment';
    }

    /**
     * A post's status changed (or it was saved with the same status): bans when it is, or
     * was, public. Drafts, pending and scheduled posts that never were public ban nothing;
     * a scheduled post going live in wp-cron is future -> publish.
     */
    public static function post_transition(string $new, string $old, \WP_Post $post): void
    {
        if (!self::watched($post) || (defined('DOING_AUTOSAVE') && DOING_AUTOSAVE)) {
            return;
        }
        $was = $old === 'publish';
        $is = $new === 'publish';
        if (!$was && !$is) {
            return;
        }
        Bans::add(Rules::post_bans($post->ID, $post->post_type, self::term_ids($post), (int) $post->post_author, $is && !$was));
    }

    /** A post is about to be deleted for good: its terms are still known now. */
    public static function post_deleting(int $post_id, $post = null): void
    {
        $post = $post instanceof \WP_Post ? $post : get_post($post_id);
        if ($post instanceof \WP_Post && self::watched($post) && $post->post_status === 'publish') {
            Bans::add(Rules::post_bans($post->ID, $post->post_type, self::term_ids($post), (int) $post->post_author, false));
        }
    }

    /** A public post's terms changed: the archives of the terms it left or joined. */
    public static function post_terms_set(int $object_id, $terms, array $tt_ids, string $taxonomy, bool $append, array $old_tt_ids): void
    {
        if (!is_taxonomy_viewable($taxonomy)) {
            return;
        }
        $post = get_post($object_id);
        if (!$post instanceof \WP_Post || !self::watched($post) || $post->post_status !== 'publish') {
            return;
        }
        $old = array_map('intval', $old_tt_ids);
        $new = array_map('intval', $tt_ids);
        // Appending only adds terms; setting replaces them: the terms left and the terms joined.
        $changed = $append ? array_diff($new, $old) : array_merge(array_diff($old, $new), array_diff($new, $old));
        $bans = [];
        foreach (array_unique($changed) as $tt_id) {
            $term = get_term_by('term_taxonomy_id', $tt_id, $taxonomy);
            if ($term instanceof \WP_Term) {
                $bans[] = Rules::tag('term:' . $term->term_id);
            }
        }
        Bans::add($bans);
    }

    /** A post was made sticky or not: the home page orders it differently. */
    public static function sticky_changed(): void
    {
        Bans::add(Rules::option_bans('sticky_posts'));
    }

    /** A term was created, edited or deleted in a public taxonomy. */
    public static function term_changed(int $term_id, int $tt_id = 0, string $taxonomy = ''): void
    {
        if ($taxonomy !== '' && !is_taxonomy_viewable($taxonomy)) {
            return;
        }
        Bans::add(Rules::term_bans($term_id));
    }

    /** A user's public name, slug or website changed: their archive and posts. */
    public static function author_changed(int $user_id, $old = null): void
    {
        $new = get_userdata($user_id);
        if (!$new instanceof \WP_User || !$old instanceof \WP_User) {
            return;
        }
        foreach (['display_name', 'user_nicename', 'user_url'] as $field) {
            if ($old->$field !== $new->$field) {
                Bans::add(Rules::author_bans($user_id));
                return;
            }
        }
    }

    /** A comment's status changed: bans when it was, or now is, shown. */
    public static function comment_transition(string $new, string $old, $comment): void
    {
        if (!Rules::comment_visible($new) && !Rules::comment_visible($old)) {
            return;
        }
        self::comment_bans($comment);
    }

    /** An approved comment was edited. */
    public static function comment_edited(int $comment_id, $data = null): void
    {
        $comment = get_comment($comment_id);
        if ($comment instanceof \WP_Comment && Rules::comment_visible((string) $comment->comment_approved)) {
            self::comment_bans($comment);
        }
    }

    /** A comment was inserted already approved (admin reply, import, WP-CLI). */
    public static function comment_inserted(int $comment_id, $comment): void
    {
        if ($comment instanceof \WP_Comment && Rules::comment_visible((string) $comment->comment_approved)) {
            self::comment_bans($comment);
        }
    }

    private static function comment_bans($comment): void
    {
        if (!$comment instanceof \WP_Comment) {
            return;
        }
        $post = get_post((int) $comment->comment_post_ID);
        if ($post instanceof \WP_Post && self::watched($post)) {
            Bans::add(Rules::comment_bans($post->ID));
        }
    }

    /** A change every HTML page may show (menus, customizer, theme). */
    public static function everything(): void
    {
        Bans::add([Rules::tag(Rules::HTML)]);
    }

    /** Code changed (updates, plugin activation): every HTML page and every list. */
    public static function code_changed(): void
    {
        Bans::add(Rules::site_bans());
    }

    /** An option was added, changed or deleted: see Rules::option_bans. */
    public static function option_changed(string $name, $old = null, $new = null): void
    {
        if (func_num_args() === 3 && $old === $new) {
            return;
        }
        Bans::add(Rules::option_bans($name));
    }
}
