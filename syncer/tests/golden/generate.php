<?php
/*
 * Regenerates syncer/tests/golden/cases.json from the installed WordPress: every input in
 * inputs.json goes through the real PHP functions the syncer ports. Run as:
 *   HTTP_HOST=127.0.0.1:8080 php syncer/tests/golden/generate.php > syncer/tests/golden/cases.json
 */
require '/usr/share/wordpress/wp-load.php';

$inputs = json_decode(file_get_contents(__DIR__ . '/inputs.json'), true);
$out = array('wp_version' => $GLOBALS['wp_version'], 'home' => home_url(), 'cases' => array());

foreach ($inputs as $s) {
    // The full wp_filter_comment chain, slashed as wp_handle_comment_submission passes it.
    $data = wp_filter_comment(wp_slash(array(
        'comment_author' => $s,
        'comment_author_email' => $s,
        'comment_author_url' => $s,
        'comment_content' => $s,
        'comment_author_IP' => $s,
        'comment_agent' => $s,
    )));
    $data = wp_unslash($data);
    $text = apply_filters('comment_text', $data['comment_content'], null, array());
    $out['cases'][] = array(
        'in' => $s,
        'kses' => wp_kses($s, 'pre_comment_content'),
        'author' => $data['comment_author'],
        'email' => $data['comment_author_email'],
        'url' => $data['comment_author_url'],
        'content' => $data['comment_content'],
        'sanitize_text_field' => sanitize_text_field($s),
        'sanitize_email' => sanitize_email($s),
        'is_email' => (bool) is_email($s),
        'esc_url_raw' => esc_url_raw($s),
        'esc_url' => esc_url($s),
        'esc_html' => esc_html($s),
        'specialchars' => _wp_specialchars($s),
        'strip_all_tags' => wp_strip_all_tags($s),
        'links' => preg_match_all('/<a [^>]*href/i', $text, $m),
    );
}
echo json_encode($out, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\n";
