use super::*;
use crate::format::Filtered;
use strata_wire::comment::Record;

fn inserted(approved: &'static str, consent: bool, email: &str, redirect_to: Option<&str>) -> Inserted {
    Inserted {
        id: 5,
        approved,
        filtered: Filtered {
            author: "Ann &amp; Bob".into(),
            email: email.into(),
            url: "http://ann.test/?a=1&amp;b=2".into(),
            content: "hi".into(),
            ip: "127.0.0.1".into(),
            agent: "t".into(),
        },
        date_gmt: "2026-11-26 14:03:07".into(),
        record: Box::new(Record {
            v: 1,
            epoch: 1,
            seq: 9,
            post_id: 12,
            parent: 0,
            author: "Ann & Bob".into(),
            email: email.into(),
            url: "http://ann.test/?a=1&b=2".into(),
            content: "hi".into(),
            ip: "127.0.0.1".into(),
            agent: "t".into(),
            accepted_ms: 0,
            consent,
            redirect_to: redirect_to.map(str::to_string),
            node: "n".into(),
        }),
    }
}

const SITE: Site<'static> = Site {
    permalink: "http://127.0.0.1:8080/hello-world/",
    home: "http://127.0.0.1:8080",
    siteurl: "http://127.0.0.1:8080",
    auth_salt: Some("abcKEYdefSALT"),
};

#[test]
fn approved_comments_go_to_their_anchor() {
    let c = inserted("1", false, "a@b.test", None);
    let v = super::inserted(9, &c, SITE);
    assert_eq!(v.http, 302);
    assert_eq!(v.status, Status::Approved);
    assert_eq!(v.comment_id, Some(5));
    assert_eq!(
        v.location.as_deref(),
        Some("http://127.0.0.1:8080/hello-world/#comment-5")
    );
    assert_eq!(v.cookie_author.as_deref(), Some("Ann &amp; Bob"));
    assert_eq!(v.cookie_url.as_deref(), Some("http://ann.test/?a=1&#038;b=2"));
}

#[test]
fn held_comments_without_consent_get_the_moderation_hash() {
    // hash_hmac('md5', '2026-11-26 14:03:07', 'abcKEYdefSALT') in PHP.
    let c = inserted("0", false, "a@b.test", None);
    assert_eq!(
        location(&c, SITE),
        "http://127.0.0.1:8080/hello-world/?unapproved=5&moderation-hash=8c25859fdb03272c6cd695707223c200#comment-5"
    );
    // With consent, or without an e-mail, the plain link.
    for c in [inserted("0", true, "a@b.test", None), inserted("0", false, "", None)] {
        assert_eq!(location(&c, SITE), "http://127.0.0.1:8080/hello-world/#comment-5");
    }
    assert_eq!(
        super::inserted(9, &inserted("0", true, "a@b.test", None), SITE).status,
        Status::Held
    );
}

#[test]
fn redirect_to_overrides_the_link_but_not_the_site() {
    let c = inserted("1", false, "a@b.test", Some("http://127.0.0.1:8080/thanks/"));
    assert_eq!(location(&c, SITE), "http://127.0.0.1:8080/thanks/#comment-5");
    let c = inserted("1", false, "a@b.test", Some("http://evil.test/"));
    assert_eq!(location(&c, SITE), "http://127.0.0.1:8080/wp-admin/");
}

#[test]
fn query_args_are_added_like_add_query_arg() {
    // Outputs of WordPress's add_query_arg().
    let args = [("unapproved", "5"), ("moderation-hash", "ab")];
    assert_eq!(
        add_query_args("http://h/x/?a=b%20c&d=e+f&g#comment-5", &args),
        "http://h/x/?a=b+c&d=e+f&g&unapproved=5&moderation-hash=ab#comment-5"
    );
    assert_eq!(
        add_query_args("http://h/?p=12#comment-5", &args),
        "http://h/?p=12&unapproved=5&moderation-hash=ab#comment-5"
    );
}

#[test]
fn refusals_carry_status_and_message() {
    let v = refused(3, &crate::rules::DUPLICATE);
    assert_eq!((v.status, v.http), (Status::Rejected, 409));
    assert!(v.message.contains("Duplicate comment"));
    let v = refused(3, &crate::rules::Refusal::Ignored("post_not_found"));
    assert_eq!((v.status, v.http, v.message.as_str()), (Status::Ignored, 200, ""));
}
