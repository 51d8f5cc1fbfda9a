//! A batch judged at once, as PHP judges comments one request after the other: each comment
//! sees the earlier ones of its batch (duplicates, the author's approved comments) under the
//! table's own collation, a row MySQL refuses is left out of what later ones see, and every
//! verdict names the row it was saved as. The tests run on tables of their own (a copy of
//! the site's options, posts and users) so the site's options can change without touching
//! other tests.

use mysql_async::prelude::Queryable;
use strata_syncer::config::Config;
use strata_wire::comment::{Status, Verdict};

use crate::harness::*;

/// A copy of the site's tables under `{prefix}`, with an empty comments table.
struct Site {
    prefix: String,
    db: mysql_async::Pool,
}

impl Site {
    async fn copy(db: &mysql_async::Pool, prefix: &str) -> Site {
        let mut c = db.get_conn().await.unwrap();
        for t in ["options", "posts", "users"] {
            c.query_drop(format!("DROP TABLE IF EXISTS {prefix}{t}")).await.unwrap();
            c.query_drop(format!("CREATE TABLE {prefix}{t} LIKE wp_{t}"))
                .await
                .unwrap();
            c.query_drop(format!("INSERT INTO {prefix}{t} SELECT * FROM wp_{t}"))
                .await
                .unwrap();
        }
        c.query_drop(format!("DROP TABLE IF EXISTS {prefix}comments"))
            .await
            .unwrap();
        c.query_drop(format!("CREATE TABLE {prefix}comments LIKE wp_comments"))
            .await
            .unwrap();
        Site {
            prefix: prefix.to_string(),
            db: db.clone(),
        }
    }

    /// A copy under a prefix of `letters` and the end of the test's token `t`.
    async fn for_token(letters: &str, t: &str) -> Site {
        let db = mysql_async::Pool::new(mysql_url().as_str());
        Site::copy(&db, &format!("{letters}{}_", &t[t.len() - 8..])).await
    }

    async fn option(&self, name: &str, value: &str) {
        let mut c = self.db.get_conn().await.unwrap();
        c.exec_drop(
            format!(
                "UPDATE {}options SET option_value = ? WHERE option_name = ?",
                self.prefix
            ),
            (value, name),
        )
        .await
        .unwrap();
    }

    async fn open_post(&self) -> u64 {
        let mut c = self.db.get_conn().await.unwrap();
        c.query_first(format!(
            "SELECT ID FROM {}posts WHERE post_type = 'post' AND post_status = 'publish' \
             AND post_password = '' AND comment_status = 'open' ORDER BY ID LIMIT 1",
            self.prefix
        ))
        .await
        .unwrap()
        .expect("an open post: run scripts/wordpress.sh")
    }

    async fn content_of(&self, id: u64) -> (String, String) {
        let mut c = self.db.get_conn().await.unwrap();
        c.exec_first(
            format!(
                "SELECT comment_content, comment_approved FROM {}comments WHERE comment_ID = ?",
                self.prefix
            ),
            (id,),
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("comment {id} is not in the table"))
    }

    async fn drop_tables(self) {
        let mut c = self.db.get_conn().await.unwrap();
        for t in ["options", "posts", "users", "comments", "strata_syncer"] {
            c.query_drop(format!("DROP TABLE IF EXISTS {}{t}", self.prefix))
                .await
                .unwrap();
        }
    }
}

async fn env_on(site: &Site) -> Env {
    let queue = format!("strata-test:{}:", token());
    let extra = format!("table_prefix = \"{}\"\nflood_interval = \"0\"", site.prefix);
    let cfg = Config::from_toml(&config_toml(&queue, &extra), None).unwrap_or_else(|e| panic!("test config: {e}"));
    Env::with_config(queue, cfg).await
}

/// Checks that a saved verdict names the row holding `content` with the status it reports.
async fn assert_saved_as(site: &Site, v: &Verdict, content: &str) {
    let id = v.comment_id.unwrap_or_else(|| panic!("no comment id in {v:?}"));
    let (stored, approved) = site.content_of(id).await;
    assert_eq!(stored, content, "comment {id}");
    let expected = match v.status {
        Status::Approved => "1",
        Status::Held => "0",
        _ => "trash",
    };
    assert_eq!(approved, expected, "comment {id}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_batch_is_judged_as_php_judges_one_comment_after_the_other() {
    let t = token();
    let site = Site::for_token("sb", &t).await;
    site.option("comment_previously_approved", "1").await;
    site.option("close_comments_for_old_posts", "0").await;
    let post = site.open_post().await;
    let mut c = site.db.get_conn().await.unwrap();
    c.exec_drop(
        format!(
            "INSERT INTO {}comments (comment_post_ID, comment_author, comment_author_email, comment_date, \
             comment_date_gmt, comment_content, comment_approved, comment_type) \
             VALUES (?, 'Known', 'known@example.test', NOW(), UTC_TIMESTAMP(), 'earlier', '1', 'comment')",
            site.prefix
        ),
        (post,),
    )
    .await
    .unwrap();
    drop(c);
    let mut env = env_on(&site).await;

    let ip = ip_for(&t);
    let r = |author: &str, email: &str, content: &str| record(post, author, email, "", content, &ip);
    let contents = [
        format!("first {t}"),
        format!("k1 {t}"),
        format!("k2 {t}"),
        format!("second {t}"),
        format!("K1 {t}"),
        format!("after {t}"),
    ];
    let seqs = [
        // Unknown author: held.
        env.push(r("Ann", "ann@example.test", &contents[0])).await,
        // Approved before: approved.
        env.push(r("Known", "known@example.test", &contents[1])).await,
        // The e-mail in other letters is the same e-mail to the table's collation.
        env.push(r("Known", "KNOWN@example.test", &contents[2])).await,
        // Ann's first comment is held, not approved: held again.
        env.push(r("Ann", "ann@example.test", &contents[3])).await,
        // Known said "k1" already in this batch (the case differs, the collation does not
        // care): a duplicate.
        env.push(r("Known", "known@example.test", &contents[4])).await,
        // Bob, held; his row must be the one his verdict names.
        env.push(r("Bob", "bob@example.test", &contents[5])).await,
    ];
    let report = env.drain().await;
    assert_eq!(report.depth, 0);
    let mut verdicts = Vec::new();
    for s in seqs {
        verdicts.push(env.verdict(s).await.unwrap_or_else(|| panic!("no verdict for {s}")));
    }
    let statuses: Vec<Status> = verdicts.iter().map(|v| v.status).collect();
    assert_eq!(
        statuses,
        [
            Status::Held,
            Status::Approved,
            Status::Approved,
            Status::Held,
            Status::Rejected,
            Status::Held
        ]
    );
    assert_eq!(verdicts[4].http, 409);
    for i in [0, 1, 2, 3, 5] {
        assert_saved_as(&site, &verdicts[i], &contents[i]).await;
    }
    // Once the queue has been empty a while, comment_count is recounted as WordPress counts:
    // the approved ones, the earlier comment included.
    let mut c = site.db.get_conn().await.unwrap();
    let mut count: Option<u64> = None;
    for _ in 0..100 {
        env.syncer.tick().await.unwrap();
        count = c
            .exec_first(
                format!("SELECT comment_count FROM {}posts WHERE ID = ?", site.prefix),
                (post,),
            )
            .await
            .unwrap();
        if count == Some(3) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(count, Some(3));
    drop(c);
    env.finish(None).await;
    site.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_mysql_refuses_fails_alone_and_later_comments_do_not_see_it() {
    let t = token();
    let site = Site::for_token("sr", &t).await;
    site.option("close_comments_for_old_posts", "0").await;
    let post = site.open_post().await;
    // A constraint stands for whatever makes MySQL refuse a row (a trigger, a full disk
    // for one table, a value a customised column cannot hold): WordPress answers 500.
    let mut c = site.db.get_conn().await.unwrap();
    c.query_drop(format!(
        "ALTER TABLE {}comments ADD CONSTRAINT refused CHECK (comment_content NOT LIKE 'refuse me%')",
        site.prefix
    ))
    .await
    .unwrap();
    drop(c);
    let mut env = env_on(&site).await;
    let ip = ip_for(&t);
    let refused = format!("refuse me {t}");
    let ok = format!("fine {t}");
    let a = env.push(record(post, "Cy", "cy@example.test", "", &refused, &ip)).await;
    // The same as the refused row: no duplicate of a row that does not exist, but refused
    // for the same reason.
    let b = env.push(record(post, "Cy", "cy@example.test", "", &refused, &ip)).await;
    let d = env.push(record(post, "Dee", "dee@example.test", "", &ok, &ip)).await;
    let e = env.push(record(post, "Dee", "dee@example.test", "", &ok, &ip)).await;
    env.drain().await;
    for s in [a, b] {
        let v = env.verdict(s).await.unwrap();
        assert_eq!((v.status, v.http), (Status::Rejected, 500), "{v:?}");
    }
    let v = env.verdict(d).await.unwrap();
    assert_eq!(v.status, Status::Approved);
    assert_saved_as(&site, &v, &ok).await;
    assert_eq!(env.verdict(e).await.unwrap().http, 409);
    env.finish(None).await;
    site.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recount_repairs_only_a_count_changed_behind_the_syncers_back() {
    let t = token();
    let site = Site::for_token("sc", &t).await;
    let post = site.open_post().await;
    let count_sql = format!("SELECT comment_count FROM {}posts WHERE ID = {post}", site.prefix);
    let mut c = site.db.get_conn().await.unwrap();
    for (approved, n) in [("1", 2), ("0", 1)] {
        for i in 0..n {
            c.exec_drop(
                format!(
                    "INSERT INTO {}comments (comment_post_ID, comment_author, comment_date, comment_date_gmt, \
                     comment_content, comment_approved, comment_type) \
                     VALUES (?, 'Someone', NOW(), UTC_TIMESTAMP(), ?, ?, 'comment')",
                    site.prefix
                ),
                (post, format!("{approved}-{i} {t}"), approved),
            )
            .await
            .unwrap();
        }
    }
    // Something behind the syncer's back left the count at 7: two approved comments it is.
    c.query_drop(format!(
        "UPDATE {}posts SET comment_count = 7 WHERE ID = {post}",
        site.prefix
    ))
    .await
    .unwrap();
    let store = strata_syncer::store::Store::new(&mysql_url(), &site.prefix, &format!("strata-test:{t}:")).unwrap();
    let posts = std::collections::BTreeSet::from([post]);
    assert_eq!(store.recount(&posts, (6, 1)).await.unwrap(), 1, "one post repaired");
    assert_eq!(c.query_first::<u64, _>(&count_sql).await.unwrap(), Some(2));
    assert_eq!(
        store.recount(&posts, (6, 1)).await.unwrap(),
        0,
        "a right count is not written"
    );
    assert_eq!(c.query_first::<u64, _>(&count_sql).await.unwrap(), Some(2));
    drop(c);
    site.drop_tables().await;
}

/// The `strata_syncer_pair_checks_total` sample of `by`.
/// The value of a labelled counter of the syncer's metrics (0 before it counted).
fn counter(env: &Env, name: &str, label: &str, value: &str) -> u64 {
    let text = env.metrics.render();
    let line = format!("{name}{{{label}=\"{value}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn pair_checks(env: &Env, by: &str) -> u64 {
    counter(env, "strata_syncer_pair_checks_total", "by", by)
}

fn judged_ahead(env: &Env) -> (u64, u64) {
    let n = |outcome| counter(env, "strata_syncer_judged_ahead_total", "outcome", outcome);
    (n("kept"), n("judged_again"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_syncer_compares_distinct_ascii_comments_itself_and_asks_mysql_otherwise() {
    let t = token();
    let site = Site::for_token("sp", &t).await;
    site.option("comment_previously_approved", "0").await;
    site.option("close_comments_for_old_posts", "0").await;
    let post = site.open_post().await;
    let mut env = env_on(&site).await;
    let r = |author: &str, email: &str, content: &str| record(post, author, email, "", content, &ip_for(&t));

    // Distinct ASCII comments: no two can be equal, MySQL is not asked about pairs.
    let distinct = [format!("one {t}"), format!("two {t}"), format!("three {t}")];
    let mut seqs = Vec::new();
    for (i, content) in distinct.iter().enumerate() {
        seqs.push(
            env.push(r(&format!("Ann{i}"), &format!("ann{i}@example.test"), content))
                .await,
        );
    }
    env.drain().await;
    for (s, content) in seqs.iter().zip(&distinct) {
        let v = env.verdict(*s).await.unwrap_or_else(|| panic!("no verdict for {s}"));
        assert_eq!(v.status, Status::Approved, "{v:?}");
        assert_saved_as(&site, &v, content).await;
    }
    assert_eq!((pair_checks(&env, "syncer"), pair_checks(&env, "query")), (1, 0));

    // The same comment again in other letters: the collation finds it equal, so MySQL is
    // asked, and the later one is a duplicate.
    let first = env.push(r("Bob", "bob@example.test", &format!("again {t}"))).await;
    let second = env
        .push(r("BOB", "BOB@example.test", &format!("AGAIN {}", t.to_uppercase())))
        .await;
    env.drain().await;
    assert_eq!(env.verdict(first).await.unwrap().status, Status::Approved);
    assert_eq!(env.verdict(second).await.unwrap().http, 409);
    assert_eq!(pair_checks(&env, "query"), 1);

    // Text the syncer does not compare (accents: the collation ignores them) goes to MySQL.
    let first = env.push(r("Zoë", "zoe@example.test", &format!("café {t}"))).await;
    let second = env.push(r("Zoe", "zoe@example.test", &format!("cafe {t}"))).await;
    env.drain().await;
    assert_eq!(env.verdict(first).await.unwrap().status, Status::Approved);
    assert_eq!(env.verdict(second).await.unwrap().http, 409);
    assert_eq!((pair_checks(&env, "syncer"), pair_checks(&env, "query")), (1, 2));
    env.finish(None).await;
    site.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_of_saved_comments_are_found_among_new_ones_under_the_tables_collation() {
    let t = token();
    let site = Site::for_token("dd", &t).await;
    site.option("comment_previously_approved", "0").await;
    site.option("close_comments_for_old_posts", "0").await;
    site.option("require_name_email", "0").await;
    let post = site.open_post().await;
    let mut env = env_on(&site).await;
    let r = |author: &str, email: &str, content: &str| record(post, author, email, "", content, &ip_for(&t));
    let saved = [
        r("Ann", "ann@example.test", &format!("hello {t}")),
        r("Zoë", "zoe@example.test", &format!("café {t}")),
        r("Anon", "", &format!("no address {t}")),
    ];
    for c in &saved {
        let seq = env.push(c.clone()).await;
        env.drain().await;
        assert_eq!(env.verdict(seq).await.unwrap().status, Status::Approved);
    }

    // Each later batch: new comments around one that repeats a saved one as the table's
    // collation sees it (case, accents, trailing spaces), which WordPress refuses.
    let repeats = [
        r("ANN", "Ann@Example.TEST", &format!("hello {t}  ")),
        r("Zoe", "ZOE@example.test", &format!("cafe {}", t.to_uppercase())),
        r("anon", "", &format!("No Address {t}")),
    ];
    for (i, repeat) in repeats.into_iter().enumerate() {
        let before = env
            .push(r(
                &format!("Ben{i}"),
                &format!("ben{i}@example.test"),
                &format!("before {i} {t}"),
            ))
            .await;
        let dupe = env.push(repeat).await;
        let after = env.push(r(&format!("Cy{i}"), "", &format!("after {i} {t}"))).await;
        env.drain().await;
        assert_eq!(env.verdict(before).await.unwrap().status, Status::Approved, "batch {i}");
        assert_eq!(env.verdict(dupe).await.unwrap().http, 409, "batch {i}");
        assert_eq!(env.verdict(after).await.unwrap().status, Status::Approved, "batch {i}");
    }

    // A repeat under another post, another parent, or with other words is no duplicate.
    let mut c = site.db.get_conn().await.unwrap();
    let other_post: u64 = c
        .query_first(format!(
            "SELECT ID FROM {}posts WHERE post_type = 'post' AND post_status = 'publish' \
             AND post_password = '' AND comment_status = 'open' AND ID != {post} ORDER BY ID LIMIT 1",
            site.prefix
        ))
        .await
        .unwrap()
        .expect("two open posts: run scripts/wordpress.sh");
    drop(c);
    let mut elsewhere = r("Ann", "ann@example.test", &format!("hello {t}"));
    elsewhere.post_id = other_post;
    let different = [elsewhere, r("Ann", "ann@example.test", &format!("hello again {t}"))];
    let seqs = [
        env.push(different[0].clone()).await,
        env.push(different[1].clone()).await,
    ];
    env.drain().await;
    for seq in seqs {
        assert_eq!(env.verdict(seq).await.unwrap().status, Status::Approved);
    }
    env.finish(None).await;
    site.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_judged_ahead_is_judged_again_when_an_option_or_its_post_changed() {
    let t = token();
    let site = Site::for_token("ja", &t).await;
    site.option("comment_previously_approved", "0").await;
    site.option("close_comments_for_old_posts", "0").await;
    let post = site.open_post().await;
    let mut env = env_on(&site).await;
    let mut batch = async |n: usize| {
        let seq = env
            .push(record(
                post,
                &format!("Ada{n}"),
                &format!("ada{n}@example.test"),
                "",
                &format!("comment {n} {t}"),
                &ip_for(&t),
            ))
            .await;
        env.drain().await;
        env.verdict(seq).await.unwrap_or_else(|| panic!("no verdict for {seq}"))
    };

    // The first batch has nothing to be judged against ahead; the second has the first's
    // reads, and they still hold.
    assert_eq!(batch(1).await.status, Status::Approved);
    assert_eq!(batch(2).await.status, Status::Approved);
    // Moderation turned on between two batches: judged again, held.
    site.option("comment_moderation", "1").await;
    assert_eq!(batch(3).await.status, Status::Held);
    // The post closed for comments: judged again, refused as WordPress refuses it.
    let mut c = site.db.get_conn().await.unwrap();
    c.exec_drop(
        format!("UPDATE {}posts SET comment_status = 'closed' WHERE ID = ?", site.prefix),
        (post,),
    )
    .await
    .unwrap();
    drop(c);
    let closed = batch(4).await;
    assert_eq!((closed.status, closed.http), (Status::Rejected, 403), "{closed:?}");
    assert_eq!(judged_ahead(&env), (1, 2));
    env.finish(None).await;
    site.drop_tables().await;
}
