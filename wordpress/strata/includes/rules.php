<?php
/**
 * Which bans a change calls for: plain functions over plain data (no WordPress function is
 * called here), so tests can check them without a site.
 */

namespace Strata;

final class Rules
{
    /** Most bans sent in one request; a longer list becomes one ban of every HTML page. */
    public const MAX_BANS = 64;

    /** Tag of every HTML object on a node. */
    public const HTML = 'html';

    /** Tag of every list on a node: home, archives, feeds, sitemaps, REST collections. */
    public const LIST = 'list';

    /** Lists a post appears in once it is public (or stops appearing in when it is not). */
    public const POST_LISTS = ['list:home', 'list:feed', 'list:sitemap', 'list:date', 'list:rest', 'list:search'];

    /**
     * Options whose value shows on every page, feed or REST list (title, tagline, URLs,
     * formats, reading and discussion settings the theme prints, the front page): a change
     * bans all HTML and every list.
     */
    public const SITE_OPTIONS = [
        'blogname', 'blogdescription', 'siteurl', 'home', 'permalink_structure', 'category_base',
        'tag_base', 'show_on_front', 'page_on_front', 'page_for_posts', 'posts_per_page',
        'posts_per_rss', 'rss_use_excerpt', 'date_format', 'time_format', 'start_of_week',
        'timezone_string', 'gmt_offset', 'WPLANG', 'site_icon', 'blog_public', 'show_avatars',
        'avatar_rating', 'avatar_default', 'default_comment_status', 'comment_registration',
        'require_name_email', 'thread_comments', 'thread_comments_depth', 'page_comments',
        'comments_per_page', 'default_comments_page', 'comment_order', 'close_comments_for_old_posts',
        'close_comments_days_old', 'show_comments_cookies_opt_in', 'sidebars_widgets',
        'nav_menu_options', 'stylesheet', 'template', 'custom_css_post_id', 'wp_page_for_privacy_policy',
    ];

    /** A tag ban. */
    public static function tag(string $tag): array
    {
        return ['kind' => 'tag', 'value' => $tag];
    }

    /** A ban of one URL (absolute) with all its variants. */
    public static function url(string $url): array
    {
        return ['kind' => 'url', 'value' => $url];
    }

    /** A ban of everything the nodes hold. */
    public static function all(): array
    {
        return ['kind' => 'all'];
    }

    /**
     * The bans of a public post that appeared, changed or disappeared: its own pages, the
     * lists it is (or was) in, its terms' and author's archives (`term:ID`, `author:ID`:
     * archives only, not the other posts of the term or author), the latest-posts widgets;
     * a post that just became public also bans cached 404s (its URL may have been one).
     *
     * @param int[] $term_ids
     * @return array<int,array>
     */
    public static function post_bans(int $post_id, string $post_type, array $term_ids, int $author_id, bool $newly_public): array
    {
        $bans = [self::tag("post:$post_id")];
        foreach (self::POST_LISTS as $list) {
            $bans[] = self::tag($list);
        }
        if ($post_type !== 'post' && $post_type !== 'page') {
            // Custom post types' archives are "other" lists.
            $bans[] = self::tag('list:other');
        }
        foreach ($term_ids as $id) {
            $bans[] = self::tag('term:' . (int) $id);
        }
        if ($author_id > 0) {
            $bans[] = self::tag("author:$author_id");
        }
        $bans[] = self::tag('wp:recent-posts');
        if ($newly_public) {
            $bans[] = self::tag('list:404');
        }
        return $bans;
    }

    /**
     * The bans of a term created, edited or deleted: its archive (`term:ID`), the posts
     * filed under it, which show its name (`in-term:ID`), and every list.
     */
    public static function term_bans(int $term_id): array
    {
        return [self::tag("term:$term_id"), self::tag("in-term:$term_id"), self::tag('list')];
    }

    /**
     * The bans of an author whose public name or description changed: their archive
     * (`author:ID`) and their posts, which show the name (`by-author:ID`).
     */
    public static function author_bans(int $user_id): array
    {
        return [self::tag("author:$user_id"), self::tag("by-author:$user_id")];
    }

    /**
     * The bans of a visible comment that changed: its post's pages, the latest-comments
     * blocks and widgets and the REST list of comments (`wp:recent-comments`), and the
     * feeds (comment feeds list it, post feeds count it).
     */
    public static function comment_bans(int $post_id): array
    {
        return [self::tag("post:$post_id"), self::tag('wp:recent-comments'), self::tag('list:feed')];
    }

    /** The bans of a change anything may show: every HTML page and every list. */
    public static function site_bans(): array
    {
        return [self::tag(self::HTML), self::tag(self::LIST)];
    }

    /**
     * The bans of an option's change: every HTML page and list for the options listed in
     * SITE_OPTIONS; every HTML page for widgets' settings and theme modifications (menus,
     * header, colours); the home page for sticky posts; nothing for the rest.
     */
    public static function option_bans(string $name): array
    {
        if (in_array($name, self::SITE_OPTIONS, true)) {
            return self::site_bans();
        }
        if (str_starts_with($name, 'widget_') || str_starts_with($name, 'theme_mods_')) {
            return [self::tag(self::HTML)];
        }
        if ($name === 'sticky_posts') {
            return [self::tag('list:home')];
        }
        return [];
    }

    /** Whether a comment status (as transition_comment_status names it) shows the comment. */
    public static function comment_visible(string $status): bool
    {
        return $status === 'approved' || $status === '1';
    }

    /**
     * The bans to send for what one PHP request collected: duplicates dropped, order kept;
     * a ban of everything replaces the rest; more than MAX_BANS become one ban of every
     * HTML page (a change that wide touches most pages anyway).
     *
     * @param array<int,array> $bans
     * @return array<int,array>
     */
    public static function finish(array $bans): array
    {
        $seen = [];
        $out = [];
        foreach ($bans as $ban) {
            if (($ban['kind'] ?? '') === 'all') {
                return [self::all()];
            }
            $key = ($ban['kind'] ?? '') . "\0" . ($ban['value'] ?? '') . "\0" . ($ban['host'] ?? '');
            if (!isset($seen[$key])) {
                $seen[$key] = true;
                $out[] = $ban;
            }
        }
        if (count($out) > self::MAX_BANS) {
            return [self::tag(self::HTML)];
        }
        return $out;
    }

    /** A short text naming bans, for logs and the settings page: "tag post:12, url …". */
    public static function describe(array $bans): string
    {
        $parts = [];
        foreach ($bans as $ban) {
            $parts[] = ($ban['kind'] ?? '?') . (isset($ban['value']) && $ban['value'] !== '' ? ' ' . $ban['value'] : '');
        }
        return implode(', ', $parts);
    }
}
