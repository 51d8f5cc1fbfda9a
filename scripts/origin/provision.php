<?php
/*
 * Provisions the Strata demo WordPress (run by scripts/wordpress.sh, as www-data).
 *
 *   php provision.php install            creates the tables and the admin user (wp_install)
 *   php provision.php content VERSION    sets options/theme and generates the demo content
 *
 * Everything is deterministic (fixed seed, fixed dates) and idempotent: items that
 * already exist (looked up by slug) are left alone. At the end of `content` the
 * option strata_provision_version is set to VERSION so later runs can be skipped.
 */

const SITE_URL = 'http://127.0.0.1:8080';
const SITE_TITLE = 'Strata Demo';
const ADMIN_USER = 'admin';
const ADMIN_PASSWORD = 'admin';
const ADMIN_EMAIL = 'admin@example.com';
const POST_COUNT = 200;
const SEED = 20240601;
// Posts are spread over the two years before this instant (UTC).
const ANCHOR = '2025-01-01 00:00:00';

$mode = $argv[1] ?? '';
$version = $argv[2] ?? '';
if (!in_array($mode, ['install', 'content'], true)) {
    fwrite(STDERR, "usage: php provision.php install | content VERSION\n");
    exit(2);
}

// Debian's wp-config.php picks /etc/wordpress/config-<host>.php from the Host header.
$_SERVER['HTTP_HOST'] = '127.0.0.1:8080';
$_SERVER['SERVER_NAME'] = '127.0.0.1';
$_SERVER['SERVER_PORT'] = '8080';
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';
$_SERVER['REMOTE_ADDR'] = '127.0.0.1';

if ($mode === 'install') {
    define('WP_INSTALLING', true);
    define('WP_SITEURL', SITE_URL);
    define('WP_HOME', SITE_URL);
    // No mail on this machine: skip the "your new site" e-mail.
    function wp_new_blog_notification($blog_title, $blog_url, $user_id, $password)
    {
    }
}

require '/usr/share/wordpress/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';

if ($mode === 'install') {
    if (is_blog_installed()) {
        echo "WordPress already installed\n";
        exit(0);
    }
    $result = wp_install(SITE_TITLE, ADMIN_USER, ADMIN_EMAIL, true, '', ADMIN_PASSWORD);
    if (empty($result['user_id'])) {
        fwrite(STDERR, "wp_install failed\n");
        exit(1);
    }
    echo "WordPress installed (admin user id {$result['user_id']})\n";
    exit(0);
}

/* ---------------------------------------------------------------- content */

if (!is_blog_installed()) {
    fwrite(STDERR, "WordPress is not installed; run the install step first\n");
    exit(1);
}
$admin = get_user_by('login', ADMIN_USER);
if (!$admin) {
    fwrite(STDERR, "admin user missing\n");
    exit(1);
}
wp_set_current_user($admin->ID);

// Site options.
$options = [
    'siteurl' => SITE_URL,
    'home' => SITE_URL,
    'blogname' => SITE_TITLE,
    'blogdescription' => 'A WordPress origin behind strata-proxy',
    'blog_public' => '1',
    'timezone_string' => 'UTC',
    'gmt_offset' => '0',
    'date_format' => 'F j, Y',
    'time_format' => 'H:i',
    'show_on_front' => 'posts',
    'posts_per_page' => '10',
    'default_comment_status' => 'open',
    'default_ping_status' => 'closed',
    'default_pingback_flag' => '0',
    'comment_moderation' => '0',
    'comment_previously_approved' => '0',
    'close_comments_for_old_posts' => '0',
    'comment_registration' => '0',
    'require_name_email' => '1',
    'comments_notify' => '0',
    'moderation_notify' => '0',
    'thread_comments' => '1',
    'page_comments' => '0',
];
foreach ($options as $name => $value) {
    update_option($name, $value);
}

// Theme.
$theme = wp_get_theme('twentytwentyone');
if (!$theme->exists()) {
    fwrite(STDERR, "theme twentytwentyone not found under " . get_theme_root() . "\n");
    exit(1);
}
if (get_option('stylesheet') !== 'twentytwentyone' || get_option('template') !== 'twentytwentyone') {
    switch_theme('twentytwentyone');
}

// Pretty permalinks: /%postname%/.
global $wp_rewrite;
if (get_option('permalink_structure') !== '/%postname%/' || !get_option('rewrite_rules')) {
    $wp_rewrite->set_permalink_structure('/%postname%/');
    flush_rewrite_rules(false); // soft flush: never write .htaccess
}

// The defaults wp_install() creates are replaced by the generated content below.
foreach ([['hello-world', 'post'], ['sample-page', 'page']] as [$slug, $type]) {
    $p = get_page_by_path($slug, OBJECT, $type);
    if ($p) {
        wp_delete_post($p->ID, true);
    }
}

const WORDS = [
    'cache', 'origin', 'request', 'header', 'latency', 'server', 'page', 'content', 'edge',
    'purge', 'memory', 'signal', 'quiet', 'steady', 'fresh', 'stale', 'warm', 'cold', 'fast',
    'careful', 'simple', 'plain', 'small', 'large', 'busy', 'idle', 'bright', 'gentle', 'river',
    'mountain', 'harbor', 'garden', 'window', 'letter', 'morning', 'evening', 'season', 'market',
    'bridge', 'lantern', 'compass', 'journal', 'orchard', 'meadow', 'engine', 'thread', 'socket',
    'buffer', 'stream', 'packet', 'router', 'client', 'visitor', 'reader', 'writer', 'editor',
    'archive', 'index', 'table', 'column', 'record', 'update', 'change', 'version', 'release',
    'measure', 'number', 'minute', 'second', 'hour', 'week', 'month', 'year', 'story', 'note',
    'question', 'answer', 'reason', 'detail', 'pattern', 'method', 'system', 'process', 'worker',
    'queue', 'batch', 'budget', 'limit', 'policy', 'rule', 'token', 'secret', 'signature',
    'always', 'often', 'rarely', 'never', 'usually', 'quickly', 'slowly', 'together', 'again',
    'about', 'after', 'before', 'during', 'without', 'within', 'between', 'under', 'over',
    'the', 'a', 'an', 'and', 'or', 'but', 'so', 'because', 'while', 'when', 'where', 'which',
    'we', 'they', 'it', 'every', 'each', 'some', 'many', 'few', 'most', 'our', 'their', 'this',
    'keeps', 'serves', 'stores', 'sends', 'reads', 'writes', 'checks', 'counts', 'waits', 'moves',
    'holds', 'finds', 'builds', 'learns', 'shows', 'makes', 'takes', 'gives', 'brings', 'turns',
];
const TITLE_WORDS_A = ['Warm', 'Quiet', 'Steady', 'Fresh', 'Careful', 'Simple', 'Busy', 'Gentle',
    'Bright', 'Plain', 'Small', 'Patient', 'Honest', 'Early', 'Late', 'Hidden'];
const TITLE_WORDS_B = ['Caches', 'Origins', 'Headers', 'Mornings', 'Gardens', 'Bridges', 'Harbors',
    'Lanterns', 'Journals', 'Queues', 'Workers', 'Streams', 'Archives', 'Markets', 'Rivers', 'Seasons'];
const TITLE_WORDS_C = ['and the Long Tail', 'on a Busy Day', 'Under Load', 'in the Evening',
    'at the Edge', 'for Every Reader', 'Without Surprises', 'Between Releases', 'After the Purge',
    'Before Breakfast', 'in Plain Words', 'That Stay Fresh'];
const CATEGORIES = ['News', 'Engineering', 'Performance', 'Operations', 'Community'];
const TAGS = ['caching', 'http', 'wordpress', 'latency', 'nginx', 'php', 'mariadb', 'benchmarks',
    'cdn', 'rust', 'memcached', 'purging'];
const COMMENTERS = ['Ada Lovelace', 'Alan Turing', 'Grace Hopper', 'Edsger Dijkstra', 'Barbara Liskov',
    'Donald Knuth', 'Frances Allen', 'Ken Thompson', 'Margaret Hamilton', 'John Backus',
    'Radia Perlman', 'Leslie Lamport', 'Hedy Lamarr', 'Niklaus Wirth', 'Sophie Wilson', 'Tony Hoare'];

// Own PRNG (xorshift32): WordPress itself calls mt_rand() while inserting posts,
// which would make mt_rand()-based content depend on what WordPress did.
$rng_state = SEED;

function rnd(int $min, int $max): int
{
    global $rng_state;
    $x = $rng_state;
    $x ^= ($x << 13) & 0xffffffff;
    $x ^= $x >> 17;
    $x ^= ($x << 5) & 0xffffffff;
    $rng_state = $x;
    return $min + $x % ($max - $min + 1);
}

function pick(array $a)
{
    return $a[rnd(0, count($a) - 1)];
}

function sentence(int $min, int $max): string
{
    $n = rnd($min, $max);
    $w = [];
    for ($i = 0; $i < $n; $i++) {
        $w[] = pick(WORDS);
    }
    return ucfirst(implode(' ', $w)) . '.';
}

function paragraph(): string
{
    $s = [];
    $n = rnd(2, 7);
    for ($i = 0; $i < $n; $i++) {
        $s[] = sentence(6, 18);
    }
    return implode(' ', $s);
}

function block_paragraph(string $text): string
{
    return "<!-- wp:paragraph -->\n<p>" . $text . "</p>\n<!-- /wp:paragraph -->";
}

function post_body(): string
{
    $blocks = [];
    $n = rnd(2, 12);
    for ($i = 0; $i < $n; $i++) {
        $r = rnd(1, 10);
        if ($i > 0 && $r === 1) {
            $blocks[] = "<!-- wp:heading -->\n<h2>" . rtrim(sentence(3, 6), '.') . "</h2>\n<!-- /wp:heading -->";
        } elseif ($i > 0 && $r === 2) {
            $items = '';
            $k = rnd(3, 5);
            for ($j = 0; $j < $k; $j++) {
                $items .= '<li>' . sentence(3, 8) . '</li>';
            }
            $blocks[] = "<!-- wp:list -->\n<ul>" . $items . "</ul>\n<!-- /wp:list -->";
        }
        $blocks[] = block_paragraph(paragraph());
    }
    return implode("\n\n", $blocks);
}

function ensure_term(string $name, string $taxonomy): int
{
    $t = term_exists($name, $taxonomy);
    if (!$t) {
        $t = wp_insert_term($name, $taxonomy);
        if (is_wp_error($t)) {
            fwrite(STDERR, "cannot create term $name: " . $t->get_error_message() . "\n");
            exit(1);
        }
    }
    return (int) $t['term_id'];
}

$category_ids = [];
foreach (CATEGORIES as $c) {
    $category_ids[] = ensure_term($c, 'category');
}
foreach (TAGS as $t) {
    ensure_term($t, 'post_tag');
}

// Builds one post (and its comments) from the random stream. Always consumes the
// same random numbers, whether or not the post is inserted, so the content does
// not depend on what already exists.
function make_post(int $i, int $timestamp, array $category_ids, array $extra = []): array
{
    $title = sprintf('%s %s %s', pick(TITLE_WORDS_A), pick(TITLE_WORDS_B), pick(TITLE_WORDS_C));
    $title = sprintf('Field Notes %03d: %s', $i, $title);
    $body = post_body();
    $cats = [pick($category_ids)];
    if (rnd(0, 2) === 0) {
        $cats[] = pick($category_ids);
    }
    $tags = [];
    $nt = rnd(1, 3);
    for ($k = 0; $k < $nt; $k++) {
        $tags[] = pick(TAGS);
    }
    $comments = [];
    $nc = rnd(1, 5);
    $t = $timestamp;
    for ($k = 0; $k < $nc; $k++) {
        $t += rnd(1800, 86400);
        $author = pick(COMMENTERS);
        $comments[] = [
            'author' => $author,
            'email' => strtolower(str_replace(' ', '.', $author)) . '@example.com',
            'content' => sentence(5, 14) . (rnd(0, 1) ? ' ' . sentence(4, 12) : ''),
            'time' => $t,
            'ip' => '192.0.2.' . rnd(1, 254),
        ];
    }
    return array_merge([
        'title' => $title,
        'slug' => sanitize_title($title),
        'body' => $body,
        'time' => $timestamp,
        'categories' => array_values(array_unique($cats)),
        'tags' => array_values(array_unique($tags)),
        'comments' => $comments,
    ], $extra);
}

function insert_post(array $p, int $author_id, string $type = 'post'): bool
{
    if (get_page_by_path($p['slug'], OBJECT, $type)) {
        return false;
    }
    $date = gmdate('Y-m-d H:i:s', $p['time']);
    $id = wp_insert_post([
        'post_type' => $type,
        'post_status' => 'publish',
        'post_author' => $author_id,
        'post_title' => $p['title'],
        'post_name' => $p['slug'],
        'post_content' => $p['body'],
        'post_date' => $date,
        'post_date_gmt' => $date,
        'comment_status' => $p['comment_status'] ?? 'open',
        'ping_status' => 'closed',
        'post_password' => $p['password'] ?? '',
        'menu_order' => $p['menu_order'] ?? 0,
    ], true);
    if (is_wp_error($id)) {
        fwrite(STDERR, "cannot create {$p['slug']}: " . $id->get_error_message() . "\n");
        exit(1);
    }
    if ($type === 'post') {
        wp_set_post_terms($id, $p['categories'], 'category');
        wp_set_post_terms($id, $p['tags'], 'post_tag');
    }
    foreach ($p['comments'] ?? [] as $c) {
        $cdate = gmdate('Y-m-d H:i:s', $c['time']);
        $cid = wp_insert_comment([
            'comment_post_ID' => $id,
            'comment_author' => $c['author'],
            'comment_author_email' => $c['email'],
            'comment_author_url' => '',
            'comment_author_IP' => $c['ip'],
            'comment_content' => $c['content'],
            'comment_date' => $cdate,
            'comment_date_gmt' => $cdate,
            'comment_approved' => 1,
            'comment_type' => 'comment',
            'comment_agent' => 'strata-provision',
            'user_id' => 0,
        ]);
        if (!$cid) {
            fwrite(STDERR, "cannot add a comment to {$p['slug']}\n");
            exit(1);
        }
    }
    return true;
}

wp_defer_term_counting(true);
wp_defer_comment_counting(true);

$created = 0;
$anchor = strtotime(ANCHOR . ' UTC');
$span = 730 * 86400;
for ($i = 1; $i <= POST_COUNT; $i++) {
    // Post 1 is the oldest (about two years before ANCHOR), post 200 the newest.
    $ts = $anchor - intdiv($span * (POST_COUNT - $i), POST_COUNT) - rnd(3600, 20 * 3600);
    $p = make_post($i, $ts, $category_ids);
    $created += insert_post($p, $admin->ID) ? 1 : 0;
}

// Special posts for tests.
$p = make_post(901, strtotime('2023-06-15 10:00:00 UTC'), $category_ids, [
    'title' => 'Protected Post',
    'slug' => 'protected-post',
    'password' => 'strata',
]);
$created += insert_post($p, $admin->ID) ? 1 : 0;
$p = make_post(902, strtotime('2023-06-16 10:00:00 UTC'), $category_ids, [
    'title' => 'Closed Post',
    'slug' => 'closed-post',
    'comment_status' => 'closed',
]);
$created += insert_post($p, $admin->ID) ? 1 : 0;

// Pages.
$pages = [
    ['About', 'about', 'Strata Demo is a WordPress site served through strata-proxy, a caching reverse proxy.'],
    ['Contact', 'contact', 'Write to admin@example.com. Comments on posts are open to everyone.'],
    ['Sample', 'sample', 'A sample page with a little text.'],
];
foreach ($pages as $n => [$title, $slug, $intro]) {
    $body = block_paragraph($intro);
    for ($k = 0; $k < 3; $k++) {
        $body .= "\n\n" . block_paragraph(paragraph());
    }
    $created += insert_post([
        'title' => $title,
        'slug' => $slug,
        'body' => $body,
        'time' => strtotime('2023-01-01 09:00:00 UTC') + $n * 3600,
        'comment_status' => 'closed',
        'menu_order' => $n,
    ], $admin->ID, 'page') ? 1 : 0;
}

wp_defer_term_counting(false);
wp_defer_comment_counting(false);

update_option('strata_provision_version', $version, false);

global $wpdb;
printf("content: %d items created; %d published posts, %d approved comments\n",
    $created,
    $wpdb->get_var("SELECT COUNT(*) FROM $wpdb->posts WHERE post_type = 'post' AND post_status = 'publish'"),
    $wpdb->get_var("SELECT COUNT(*) FROM $wpdb->comments WHERE comment_approved = '1'"));
