use super::*;
use std::collections::HashMap;

fn options(pairs: &[(&str, &str)]) -> Options {
    let mut rows: HashMap<String, String> = [
        ("home", "http://127.0.0.1:8080"),
        ("require_name_email", "1"),
        ("comment_max_links", "2"),
        ("comment_previously_approved", "1"),
        ("comment_moderation", "0"),
        ("disallowed_keys", "forbidden"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in pairs {
        rows.insert(k.to_string(), v.to_string());
    }
    Options::from_rows(&rows)
}

fn candidate(content: &str, date: i64) -> Candidate {
    Candidate {
        filtered: Filtered {
            author: "Ann".into(),
            email: "ann@example.test".into(),
            url: String::new(),
            content: content.into(),
            ip: "192.0.2.1".into(),
            agent: "Mozilla".into(),
        },
        raw: None,
        date_gmt: date,
        flood_since: date - 3600,
        flood_ask: false,
    }
}

fn pair(earlier: usize) -> Pair {
    Pair {
        earlier,
        ..Pair::default()
    }
}

const T: i64 = 1_800_000_000;

fn rules(o: &Options, flood: i64) -> Rules<'_> {
    Rules {
        options: o,
        version: (6, 1),
        flood_interval: flood,
    }
}

fn known_author() -> Facts {
    Facts {
        approved_before: [Some(true), None],
        ..Facts::default()
    }
}

#[test]
fn an_earlier_saved_equal_comment_makes_a_duplicate() {
    let o = options(&[]);
    let c = [candidate("same", T), candidate("same", T + 60)];
    let pairs = vec![
        vec![],
        vec![Pair {
            duplicate: true,
            ..pair(0)
        }],
    ];
    let d = resolve(&c, &[known_author(); 2], &pairs, rules(&o, 15), &|_| true);
    assert_eq!(d, vec![Decision::Save("1"), Decision::Refuse(rules::DUPLICATE)]);
}

#[test]
fn a_refused_trashed_or_unsaved_earlier_comment_is_no_duplicate() {
    let o = options(&[]);
    let dup = |i| Pair {
        duplicate: true,
        ..pair(i)
    };
    // The first is a duplicate of the table, the second a duplicate of the first only.
    let c = [candidate("same", T), candidate("same", T + 60)];
    let facts = [
        Facts {
            duplicate: true,
            ..known_author()
        },
        known_author(),
    ];
    let d = resolve(&c, &facts, &[vec![], vec![dup(0)]], rules(&o, 15), &|_| true);
    assert_eq!(d[1], Decision::Save("1"));
    // Trashed (a disallowed word): WordPress's duplicate query skips trash.
    let c = [candidate("forbidden", T), candidate("forbidden", T + 60)];
    let d = resolve(
        &c,
        &[known_author(); 2],
        &[vec![], vec![dup(0)]],
        rules(&o, 15),
        &|_| true,
    );
    assert_eq!(d, vec![Decision::Save("trash"), Decision::Save("trash")]);
    // Decided to save but refused by MySQL.
    let c = [candidate("same", T), candidate("same", T + 60)];
    let d = resolve(&c, &[known_author(); 2], &[vec![], vec![dup(0)]], rules(&o, 15), &|i| {
        i != 0
    });
    assert_eq!(d[1], Decision::Save("1"));
}

#[test]
fn floods_count_the_table_and_the_batch() {
    let o = options(&[]);
    let sender = |i| Pair {
        same_sender: true,
        ..pair(i)
    };
    let c = [
        candidate("one", T),
        candidate("two", T + 10),
        candidate("three", T + 20),
    ];
    let pairs = vec![vec![], vec![sender(0)], vec![sender(0), sender(1)]];
    let d = resolve(&c, &[known_author(); 3], &pairs, rules(&o, 15), &|_| true);
    // The third is 20 s after the first and 10 s after the refused second: WordPress only
    // sees the first, saved one.
    assert_eq!(
        d,
        vec![Decision::Save("1"), Decision::Refuse(rules::FLOOD), Decision::Save("1")]
    );
    // The table's latest comment from the sender.
    let facts = [Facts {
        flood_latest: Some(T - 5),
        ..known_author()
    }];
    let d = resolve(&c[..1], &facts, &[vec![]], rules(&o, 15), &|_| true);
    assert_eq!(d, vec![Decision::Refuse(rules::FLOOD)]);
    // No interval, no flood.
    let d = resolve(&c[..1], &facts, &[vec![]], rules(&o, 0), &|_| true);
    assert_eq!(d, vec![Decision::Save("1")]);
    // A duplicate that is also a flood answers as a duplicate.
    let c = [candidate("same", T), candidate("same", T + 1)];
    let both = Pair {
        duplicate: true,
        same_sender: true,
        ..pair(0)
    };
    let d = resolve(&c, &[known_author(); 2], &[vec![], vec![both]], rules(&o, 15), &|_| {
        true
    });
    assert_eq!(d[1], Decision::Refuse(rules::DUPLICATE));
}

#[test]
fn an_earlier_approved_comment_of_the_batch_counts_as_previously_approved() {
    let o = options(&[]);
    let c = [candidate("one", T), candidate("two", T + 60)];
    let same = |i| Pair {
        same_author: true,
        ..pair(i)
    };
    let unknown = Facts {
        approved_before: [Some(false), None],
        ..Facts::default()
    };
    // Neither had an approved comment before: both held.
    let d = resolve(&c, &[unknown; 2], &[vec![], vec![same(0)]], rules(&o, 0), &|_| true);
    assert_eq!(d, vec![Decision::Save("0"), Decision::Save("0")]);
    // The first is known, so the second counts it.
    let d = resolve(
        &c,
        &[known_author(), unknown],
        &[vec![], vec![same(0)]],
        rules(&o, 0),
        &|_| true,
    );
    assert_eq!(d, vec![Decision::Save("1"), Decision::Save("1")]);
    // A registered user's e-mail: only the user's own comments count.
    let user = Facts {
        user: [true, false],
        ..unknown
    };
    let d = resolve(
        &c,
        &[known_author(), user],
        &[vec![], vec![same(0)]],
        rules(&o, 0),
        &|_| true,
    );
    assert_eq!(d[1], Decision::Save("0"));
}

#[test]
fn literals_read_the_same_with_or_without_backslash_escapes() {
    assert_eq!(lit("it's"), "'it''s'");
    assert_eq!(lit(""), "''");
    assert_eq!(lit("a\\b"), "_utf8mb4 X'615C62'");
    assert_eq!(lit("\0"), "_utf8mb4 X'00'");
    assert_eq!(lit("é"), "'é'");
    assert_eq!(datetime(0), "'1970-01-01 00:00:00'");
}

#[test]
fn statements_are_chunked_by_size_with_their_row_counts() {
    let rows = (0..5).map(|i| format!("({i})"));
    let out = chunked("INSERT INTO t VALUES", rows, 30);
    assert_eq!(
        out,
        vec![
            ("INSERT INTO t VALUES (0),(1)".to_string(), 2),
            ("INSERT INTO t VALUES (2),(3)".to_string(), 2),
            ("INSERT INTO t VALUES (4)".to_string(), 1),
        ]
    );
    // A row longer than the limit still gets a statement.
    let out = chunked("H", ["x".repeat(40)], 10);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, 1);
}

#[test]
fn scratch_tables_copy_the_collations_and_refuse_odd_names() {
    let col = |cs: &str, coll: &str| TextColumn {
        charset: cs.into(),
        collation: coll.into(),
    };
    let mut c = Collations {
        author: col("utf8mb4", "utf8mb4_unicode_520_ci"),
        email: col("utf8mb4", "utf8mb4_unicode_520_ci"),
        ip: col("utf8mb4", "utf8mb4_unicode_520_ci"),
        content: col("utf8mb4", "utf8mb4_unicode_520_ci"),
        user_email: col("utf8mb4", "utf8mb4_general_ci"),
    };
    let sql = scratch_sql(&c).unwrap();
    assert!(sql.contains("h_user LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL"));
    c.content = col("utf8mb4", "x; DROP TABLE y");
    assert_eq!(scratch_sql(&c), None);
}

#[test]
fn fold_lowers_ascii_drops_trailing_spaces_and_gives_up_on_the_rest() {
    assert_eq!(fold("Ann Smith  ").as_deref(), Some("ann smith"));
    assert_eq!(fold("a\tb\r\n").as_deref(), Some("a\tb\r\n"));
    assert_eq!(fold("").as_deref(), Some(""));
    // Non-ASCII, control characters (ignorable under UCA collations) and DEL.
    assert_eq!(fold("café"), None);
    assert_eq!(fold("a\u{1}b"), None);
    assert_eq!(fold("a\u{7f}"), None);
}

#[test]
fn fold_agrees_only_when_every_equal_pair_folds_the_same() {
    // utf8mb4_unicode_520_ci's answer: the case pairs, and the space with the empty string.
    let mut equal: Vec<(u8, u8)> = (b'A'..=b'Z').map(|c| (c, c.to_ascii_lowercase())).collect();
    equal.push((0, b' '));
    assert!(fold_agrees(&equal));
    // A collation finding two letters equal (or a character ignorable) cannot be folded.
    assert!(!fold_agrees(&[(b'v', b'w')]));
    assert!(!fold_agrees(&[(0, b'\t')]));
}

#[test]
fn the_fold_check_covers_untailored_collations_only() {
    let col = |cs: &str, coll: &str| TextColumn {
        charset: cs.into(),
        collation: coll.into(),
    };
    let sql = fold_check_sql(&col("utf8mb4", "utf8mb4_unicode_520_ci")).unwrap();
    assert!(sql.contains("USING utf8mb4) COLLATE utf8mb4_unicode_520_ci"));
    assert!(sql.contains("i IN (0,9,10,13,32,33,"));
    assert!(fold_check_sql(&col("utf8mb3", "utf8mb3_general_ci")).is_some());
    assert!(fold_check_sql(&col("latin1", "latin1_swedish_ci")).is_some());
    // Hungarian makes "ccs" equal "cscs": characters one by one cannot show it.
    assert_eq!(fold_check_sql(&col("utf8mb4", "utf8mb4_hungarian_ci")), None);
    assert_eq!(fold_check_sql(&col("utf8mb4", "latin1_bin")), None);
    assert_eq!(fold_check_sql(&col("utf8mb4", "utf8mb4_bin; DROP")), None);
}

fn probe<'a>(post: u64, author: &'a str, email: &'a str, content: &'a str, ip: &str) -> (Probe<'a>, Stored<'a>) {
    let b = Probe {
        post,
        parent: 0,
        author,
        email,
        content,
        history: [None, None],
        flood: Some(Sender {
            ip: ip.to_string(),
            email: email.to_string(),
            since: None,
        }),
    };
    let e = Stored {
        post,
        parent: 0,
        author,
        email,
        content,
        ip: "",
    };
    (b, e)
}

fn possible(batch: Vec<(Probe<'_>, Stored<'_>)>) -> bool {
    let (probes, rows): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    pairs_possible(&probes, &rows)
}

#[test]
fn pairs_are_skipped_only_when_no_two_comments_can_match() {
    let with_ip = |mut c: (Probe<'static>, Stored<'static>), ip: &'static str| {
        c.1.ip = ip;
        c
    };
    let a = || with_ip(probe(1, "Ann", "ann@example.test", "Hello", "192.0.2.1"), "192.0.2.1");
    let b = || with_ip(probe(1, "Bob", "bob@example.test", "Hi", "192.0.2.2"), "192.0.2.2");
    assert!(!possible(vec![a(), b()]));
    assert!(!possible(vec![a()]));
    // The same comment again, differing in case and trailing spaces: a possible duplicate.
    let again = with_ip(
        probe(1, "ANN", "other@example.test", "hello  ", "192.0.2.9"),
        "192.0.2.9",
    );
    assert!(possible(vec![a(), again]));
    // The same text on another post is no duplicate.
    let elsewhere = with_ip(probe(2, "Ann", "x@example.test", "Hello", "192.0.2.9"), "192.0.2.9");
    assert!(!possible(vec![a(), elsewhere]));
    // Same address, or same e-mail: a possible flood.
    let same_ip = with_ip(probe(1, "Cy", "cy@example.test", "Yo", "192.0.2.1"), "192.0.2.1");
    assert!(possible(vec![a(), same_ip]));
    let same_email = with_ip(probe(1, "Cy", "ANN@example.test", "Yo", "192.0.2.7"), "192.0.2.7");
    assert!(possible(vec![a(), same_email]));
    // Text the syncer cannot compare goes to MySQL, whatever it is.
    let accented = with_ip(probe(1, "Zoë", "z@example.test", "Yo", "192.0.2.8"), "192.0.2.8");
    assert!(possible(vec![a(), accented]));
}

#[test]
fn pairs_look_at_earlier_comments_only_and_at_previous_approvals() {
    let mut first = probe(1, "Ann", "ann@example.test", "One", "192.0.2.1");
    first.0.flood = None;
    first.1.ip = "192.0.2.1";
    let mut second = probe(1, "Bob", "bob@example.test", "Two", "192.0.2.2");
    second.0.flood = None;
    second.1.ip = "192.0.2.2";
    assert!(!possible(vec![first.clone(), second.clone()]));
    // The second asks whether Ann (slashed values) was approved before: the first is hers.
    second.0.history[0] = Some(Who {
        author: "ann".into(),
        email: "Ann@Example.test".into(),
        user_email: "ann@example.test".into(),
    });
    assert!(possible(vec![first.clone(), second.clone()]));
    // The first asking about Bob looks at nothing: only earlier comments count.
    let mut first_asks = first.clone();
    first_asks.0.history[0] = Some(Who {
        author: "Bob".into(),
        email: "bob@example.test".into(),
        user_email: "bob@example.test".into(),
    });
    second.0.history[0] = None;
    assert!(!possible(vec![first_asks, second]));
}
