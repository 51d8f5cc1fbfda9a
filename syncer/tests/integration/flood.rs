//! The flood check's in-memory index gives WordPress's answers: comments PHP wrote after the
//! index was built count, deleted comments stop counting, and comments from other addresses
//! and e-mails pass without the query.

use strata_wire::comment::Status;

use crate::harness::*;

/// The value of `strata_syncer_flood_checks_total{by="…"}`.
fn checks(env: &Env, by: &str) -> u64 {
    let text = env.metrics.render();
    let prefix = format!("strata_syncer_flood_checks_total{{by=\"{by}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_comment_php_wrote_after_the_index_was_built_makes_a_flood() {
    let mut env = Env::new("").await;
    let t = token();
    let post = open_post(&env.db, &t).await;
    // A first comment builds the index; nobody sent anything from its address or e-mail.
    let first = env
        .push(record(
            post,
            "Flood First",
            &format!("first-{t}@example.test"),
            "",
            &format!("first {t}"),
            &ip_for(&format!("{t}first")),
        ))
        .await;
    env.drain().await;
    assert_eq!(env.verdict(first).await.unwrap().status, Status::Approved);
    assert_eq!(checks(&env, "index"), 1, "{}", env.metrics.render());
    assert_eq!(checks(&env, "query"), 0);

    // PHP writes a comment (as for a logged-in user); then the same e-mail through the queue.
    let email = format!("php-{t}@example.test");
    let (status, _, body) = post_to_php(&[
        ("comment_post_ID", &post.to_string()),
        ("author", "Flood PHP"),
        ("email", &email),
        ("comment", &format!("from php {t}")),
    ])
    .await;
    assert_eq!(status, 302, "{body}");
    let seq = env
        .push(record(
            post,
            "Flood Queue",
            &email,
            "",
            &format!("from the queue {t}"),
            &ip_for(&format!("{t}queue")),
        ))
        .await;
    env.drain().await;
    let v = env.verdict(seq).await.unwrap();
    assert_eq!((v.status, v.http), (Status::Rejected, 429), "{v:?}");
    assert_eq!(checks(&env, "query"), 1);
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_comment_no_longer_makes_a_flood() {
    let mut env = Env::new("").await;
    let t = token();
    let post = open_post(&env.db, &t).await;
    let (email, ip) = (format!("deleted-{t}@example.test"), ip_for(&t));
    let a = env
        .push(record(post, "Deleted", &email, "", &format!("first {t}"), &ip))
        .await;
    env.drain().await;
    let id = env.verdict(a).await.unwrap().comment_id.unwrap();
    // The moderator deletes it: WordPress's query no longer finds it.
    let mut c = env.db.get_conn().await.unwrap();
    mysql_async::prelude::Queryable::exec_drop(&mut c, "DELETE FROM wp_comments WHERE comment_ID = ?", (id,))
        .await
        .unwrap();
    drop(c);
    let b = env
        .push(record(post, "Deleted", &email, "", &format!("second {t}"), &ip))
        .await;
    env.drain().await;
    let v = env.verdict(b).await.unwrap();
    assert_eq!(v.status, Status::Approved, "{v:?}");
    // The index suspected a flood; the query decided.
    assert_eq!(checks(&env, "query"), 1);
    env.finish(Some(&t)).await;
}
