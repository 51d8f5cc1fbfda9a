//! Checks of patched pages against the origin's render, where the real WordPress cannot be
//! made to wait: a programmable origin serving the comments of a post as WordPress 6 and
//! Twenty Twenty-One print them (`src/patch/thread.html`), holding its answers behind a
//! gate the test opens. The order of events is proven by the origin's log and the
//! counters, never by timing. (Checks against the real WordPress: the syncer's end-to-end
//! tests.)

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use strata_wire::ban::{Ban, Kind};
use strata_wire::patch::{fields, Patch, Shown, Thread};
use tokio::sync::watch;

use crate::fixture::{full, Fixture};
use crate::harness::{ban_at, ban_json, metric_at, poll, TestProxy};

/// Comments 601 to 605 of post 199 as WordPress printed them.
const PAGE: &str = include_str!("../../src/patch/thread.html");

/// The page before comment 605: its element cut out, the count 4.
fn before_605() -> String {
    let start = PAGE.find("\t\t<li id=\"comment-605\"").expect("605 shown");
    let end = PAGE.find("\t\t</ol><!-- .comment-list -->").expect("the list's end");
    format!("{}{}", &PAGE[..start], &PAGE[end..]).replacen("5 comments", "4 comments", 1)
}

fn shown(id: u64, author: &str, avatar: &str, iso: &str, date: &str, time: &str, content: &str) -> Shown {
    let f = [
        (fields::AUTHOR_LINK, author),
        (fields::AUTHOR_ATTR, author),
        (fields::AVATAR, avatar),
        (fields::DATE_ISO, iso),
        (fields::DATE, date),
        (fields::TIME, time),
        (fields::CONTENT, content),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Shown { id, fields: f }
}

/// The ban of `post:199` carrying the patch that adds comment 605, as the syncer sends it.
fn patch_605() -> String {
    let patch = Thread {
        post: 199,
        count_before: 4,
        count_after: 5,
        after: 604,
        samples: vec![
            shown(
                604,
                "Frances Allen",
                "http://2.gravatar.com/avatar/e44b8ab3e050d9e8496d9f2ef25bf65e",
                "2024-12-18T06:59:15+00:00",
                "December 18, 2024",
                "06:59",
                "<p>Writer while month warm writer. Reason rarely large river small visitor.</p>\n",
            ),
            shown(
                603,
                "Leslie Lamport",
                "http://2.gravatar.com/avatar/5a9e6954d85fc10a55adbd5d20ab3b30",
                "2024-12-17T23:21:31+00:00",
                "December 17, 2024",
                "23:21",
                "<p>This always router process they token without measure they signal release checks.</p>\n",
            ),
        ],
        added: vec![shown(
            605,
            "John Backus",
            "http://1.gravatar.com/avatar/431569069bbc6d2d4b06e93f59e90263",
            "2024-12-19T03:19:15+00:00",
            "December 19, 2024",
            "03:19",
            "<p>Thread which buffer engine idle many moves most gives stream writer.</p>\n",
        )],
    };
    let ban = Ban {
        patch: Some(Box::new(Patch::Thread(patch))),
        ..Ban::new(Kind::Tag, "post:199")
    };
    serde_json::to_string(&ban).expect("ban JSON")
}

/// An origin serving `page` as post 199's singular page, each answer waiting while the gate
/// is closed (the fixture counts the requests).
struct Origin {
    fixture: Fixture,
    page: Arc<parking_lot::Mutex<String>>,
    gate: watch::Sender<bool>,
}

impl Origin {
    async fn start(page: String) -> Origin {
        let page = Arc::new(parking_lot::Mutex::new(page));
        let (gate, open) = watch::channel(true);
        let served = page.clone();
        let fixture = Fixture::start(move |_req| {
            let (served, mut open) = (served.clone(), open.clone());
            async move {
                // Bounded: the test opens the gate; 30 s is only a safety limit.
                let _ = tokio::time::timeout(Duration::from_secs(30), open.wait_for(|o| *o)).await;
                let body = served.lock().clone();
                Response::builder()
                    .header("content-type", "text/html; charset=UTF-8")
                    .header("link", "<http://127.0.0.1:8080/?p=199>; rel=shortlink")
                    .body(full(body))
                    .unwrap()
            }
        })
        .await;
        Origin { fixture, page, gate }
    }
}

/// A check whose page is banned while the origin renders it is dropped (`skipped`): neither
/// a match nor a mismatch, and the render, older than the ban, is not stored.
#[tokio::test]
async fn a_check_is_dropped_when_the_page_is_banned_while_the_origin_renders_it() {
    let origin = Origin::start(before_605()).await;
    let p = TestProxy::start(&origin.fixture.url(), &[("comments", "patch_check_interval = \"0s\"")]).await;
    let first = p.get("/field-notes/", &[]).await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(origin.fixture.hits(), 1);

    // The patch applies; its check's request reaches the origin and waits there.
    origin.gate.send_replace(false);
    ban_at(p.admin, &patch_605(), None).await;
    assert_eq!(
        metric_at(p.admin, "strata_proxy_patches_total", "result=\"patched\"").await,
        1.0
    );
    let patched = p.get("/field-notes/", &[]).await;
    assert_eq!(patched.x_cache(), "HIT");
    assert_eq!(patched.text(), PAGE, "the patched page is WordPress's");
    poll("the check's request", Duration::from_secs(10), || async {
        (origin.fixture.hits() == 2).then_some(())
    })
    .await;

    // The page is banned meanwhile; the origin then answers.
    ban_at(p.admin, &ban_json("tag", "post:199", None, false), None).await;
    *origin.page.lock() = PAGE.to_string();
    origin.gate.send_replace(true);
    let result = |r: &'static str| {
        let admin = p.admin;
        async move { metric_at(admin, "strata_proxy_patch_checks_total", &format!("result=\"{r}\"")).await }
    };
    poll("the check to end", Duration::from_secs(10), || async {
        (result("skipped").await == 1.0).then_some(())
    })
    .await;
    assert_eq!((result("match").await, result("mismatch").await), (0.0, 0.0));
    assert_eq!(metric_at(p.admin, "strata_proxy_patch_templates_off", "").await, 0.0);
    let again = p.get("/field-notes/", &[]).await;
    assert_eq!(again.x_cache(), "MISS", "the check's render was not stored");
    assert_eq!(origin.fixture.hits(), 3);
}

/// A check's render that differs from the patched copy is a mismatch only once no ban says
/// the page changed meanwhile; it replaces the patched copy, and the next patch of the same
/// template is refused (`template-off`): the page is banned.
#[tokio::test]
async fn a_mismatch_replaces_the_page_and_turns_its_template_off() {
    let origin = Origin::start(before_605()).await;
    let p = TestProxy::start(&origin.fixture.url(), &[("comments", "patch_check_interval = \"0s\"")]).await;
    p.get("/field-notes/", &[]).await;
    // The origin's render will not be the patched page: its comment 605 says otherwise.
    let theirs = PAGE.replace("Thread which buffer engine", "Something else entirely");
    *origin.page.lock() = theirs.clone();
    ban_at(p.admin, &patch_605(), None).await;
    // Counted once no ban arrived within `SETTLE` (5 s) of the difference.
    poll("the mismatch", Duration::from_secs(30), || async {
        let n = metric_at(p.admin, "strata_proxy_patch_checks_total", "result=\"mismatch\"").await;
        (n == 1.0).then_some(())
    })
    .await;
    assert_eq!(metric_at(p.admin, "strata_proxy_patch_templates_off", "").await, 1.0);
    let served = p.get("/field-notes/", &[]).await;
    assert_eq!(served.x_cache(), "HIT");
    assert_eq!(served.text(), theirs, "the origin's copy replaced the patched one");

    // The same patch on a page of the same markup: refused, the page banned.
    *origin.page.lock() = before_605();
    ban_at(p.admin, &ban_json("tag", "post:199", None, false), None).await;
    p.get("/field-notes/", &[]).await;
    ban_at(p.admin, &patch_605(), None).await;
    assert_eq!(
        metric_at(p.admin, "strata_proxy_patches_total", "result=\"template-off\"").await,
        1.0
    );
    let after = p.get("/field-notes/", &[]).await;
    assert_eq!(after.x_cache(), "MISS", "banned instead of patched");
}
