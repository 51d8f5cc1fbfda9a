<?php
/*
 * Checks of the plugin's pure parts (no WordPress needed): php rules.php prints "ok" and
 * exits 0, or names the first failed check and exits 1.
 */

require __DIR__ . '/../includes/signer.php';
require __DIR__ . '/../includes/rules.php';
require __DIR__ . '/../includes/config.php';

use Strata\Config;
use Strata\Rules;
use Strata\Signer;

function check(bool $ok, string $what): void
{
    if (!$ok) {
        fwrite(STDERR, "FAILED: $what\n");
        exit(1);
    }
}

$tags = static fn(array $bans): array => array_map(static fn($b) => $b['value'], $bans);

$post = $tags(Rules::post_bans(12, 'post', [3, 7], 2, false));
foreach (['post:12', 'list:home', 'list:feed', 'list:sitemap', 'list:date', 'list:rest', 'term:3', 'term:7', 'author:2', 'wp:recent-posts'] as $t) {
    check(in_array($t, $post, true), "a post's bans include $t");
}
check(!in_array('html', $post, true) && !in_array('list', $post, true), 'a post bans neither all html nor every list');
check(!in_array('list:404', $post, true), 'an update does not ban 404s');
check(in_array('list:404', $tags(Rules::post_bans(12, 'post', [], 2, true)), true), 'a new post bans 404s');
check(in_array('list:other', $tags(Rules::post_bans(5, 'product', [], 0, false)), true), 'a custom post type bans other lists');

check($tags(Rules::comment_bans(9)) === ['post:9', 'wp:recent-comments', 'list:feed'], 'a comment bans its post, latest-comments and feeds');
check($tags(Rules::term_bans(4)) === ['term:4', 'in-term:4', 'list'], 'a term bans its archive, its posts and the lists');
check($tags(Rules::author_bans(2)) === ['author:2', 'by-author:2'], 'an author bans their archive and posts');
check(!in_array('in-term:3', $post, true) && !in_array('by-author:2', $post, true), "a post does not ban its term's or author's other posts");
check(Rules::comment_visible('approved') && Rules::comment_visible('1') && !Rules::comment_visible('unapproved') && !Rules::comment_visible('spam'), 'visible comments');

foreach (['blogname', 'blogdescription', 'permalink_structure', 'posts_per_rss', 'sidebars_widgets'] as $o) {
    check($tags(Rules::option_bans($o)) === ['html', 'list'], "option $o bans all html and every list");
}
foreach (['widget_block', 'theme_mods_twentytwentyone'] as $o) {
    check($tags(Rules::option_bans($o)) === ['html'], "option $o bans all html");
}
check($tags(Rules::site_bans()) === ['html', 'list'], 'code changes ban all html and every list');
foreach (['cron', 'rewrite_rules', '_transient_doing_cron', 'strata_last_bans', 'active_plugins'] as $o) {
    check(Rules::option_bans($o) === [], "option $o bans nothing");
}
check($tags(Rules::option_bans('sticky_posts')) === ['list:home'], 'sticky posts ban the home page');

$dup = Rules::finish([Rules::tag('a'), Rules::tag('b'), Rules::tag('a')]);
check($tags($dup) === ['a', 'b'], 'duplicates are dropped, order kept');
check(Rules::finish([Rules::tag('a'), Rules::all()]) === [Rules::all()], 'a ban of everything replaces the rest');
$many = [];
for ($i = 0; $i < Rules::MAX_BANS; $i++) {
    $many[] = Rules::tag("post:$i");
}
check(count(Rules::finish($many)) === Rules::MAX_BANS, '64 bans go as they are');
$many[] = Rules::tag('post:x');
check(Rules::finish($many) === [Rules::tag('html')], 'more than 64 become one ban of all html');
check(json_encode(Rules::finish([Rules::tag('post:1'), Rules::url('http://h/a/')]), JSON_UNESCAPED_SLASHES)
    === '[{"kind":"tag","value":"post:1"},{"kind":"url","value":"http://h/a/"}]', 'the JSON POST /ban takes');

check(Signer::plugin_key('0123456789abcdef0123') === '0f9be4e5213846a9', "the announcement's key is strata-wire's plugin_key");
check(Signer::parse_secret(" 0123456789abcdef \n") === '0123456789abcdef', 'secrets are trimmed');
check(Signer::parse_secret("0123456789abcde\n") === null, 'short secrets are refused');
check(preg_match('/^[0-9a-f]{32}$/', Signer::nonce()) === 1, 'nonces are 32 hex digits');
check(Signer::nonce() !== Signer::nonce(), 'nonces differ');
check(abs(Signer::now_ms() - (int) (microtime(true) * 1000)) < 1000, 'timestamps are Unix milliseconds');

check(Config::authority('http://10.0.0.2:9080') === '10.0.0.2:9080', 'authority with a port');
check(Config::authority('http://[::1]:9080') === '[::1]:9080', 'IPv6 authority');
check(Config::authority('https://node1') === 'node1', 'authority without a port');
foreach (['10.0.0.2:9080', 'http://10.0.0.2:9080/admin', 'http://u@h:1', 'ftp://h:1', 'http://'] as $bad) {
    check(Config::authority($bad) === null, "$bad is no admin URL");
}
check(Config::parse_nodes("http://a:1/, http://b:2\nhttp://a:1 junk") === ['http://a:1', 'http://b:2'], 'node lists');
check(Config::parse_nodes(['http://a:1', 'x']) === ['http://a:1'], 'node arrays');

echo "ok\n";
