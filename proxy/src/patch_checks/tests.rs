use super::*;

const T: Template = Template { kind: "thread", key: 7 };

fn at(start: Instant, ms: u64) -> Instant {
    start + Duration::from_millis(ms)
}

#[test]
fn checks_start_at_most_at_the_rate_whatever_is_waiting() {
    let t0 = Instant::now();
    let mut s = Schedule::new(Duration::from_secs(10), 2, t0);
    for i in 0..100 {
        assert_eq!(s.patched(&format!("h/p{i}"), i, T, t0), Noted::Queued);
    }
    let mut started = 0;
    let mut ticks = Vec::new();
    // Ten seconds of 250 ms ticks.
    for tick in 0..=40 {
        let n = s.due(at(t0, tick * 250)).len();
        started += n;
        ticks.push(n);
    }
    // One at once, then two a second: never a burst of more than a second's worth.
    assert_eq!(started, 1 + 2 * 10, "{ticks:?}");
    assert!(ticks.iter().all(|&n| n <= 2), "{ticks:?}");
    assert_eq!(s.pending(), 100 - started);
}

#[test]
fn a_page_is_checked_at_most_once_per_interval() {
    let t0 = Instant::now();
    let mut s = Schedule::new(Duration::from_secs(10), 100, t0);
    s.patched("h/a", 1, T, t0);
    let due = s.due(t0);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1.object, 1);
    // Patched again a second later: due ten seconds after the first check started.
    s.patched("h/a", 2, T, at(t0, 1000));
    assert!(s.due(at(t0, 9_999)).is_empty());
    let due = s.due(at(t0, 10_000));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1.object, 2);
    // Not checked for longer than the interval: due at once.
    s.patched("h/a", 3, T, at(t0, 30_000));
    assert_eq!(s.due(at(t0, 30_000)).len(), 1);
}

#[test]
fn a_page_patched_again_while_waiting_compares_the_newest_copy_with_every_template() {
    let t0 = Instant::now();
    let mut s = Schedule::new(Duration::from_secs(10), 1, t0);
    s.patched("h/b", 1, T, t0);
    let other = Template { kind: "recent", key: 9 };
    s.patched("h/b", 2, other, t0);
    s.patched("h/b", 3, T, t0);
    let (key, p) = s.due(t0).pop().expect("due");
    assert_eq!(&*key, "h/b");
    assert_eq!(p.object, 3);
    assert_eq!(p.templates, vec![T, other]);
    assert_eq!(p.kinds(), vec!["thread", "recent"]);
}

#[test]
fn a_check_that_could_not_start_waits_again_with_its_token() {
    let t0 = Instant::now();
    let mut s = Schedule::new(Duration::from_secs(10), 1, t0);
    s.patched("h/c", 1, T, t0);
    let (key, p) = s.due(t0).pop().expect("due");
    s.put_back(key, p, t0);
    let (_, p) = s.due(t0).pop().expect("due again at once: the token came back");
    assert_eq!(p.object, 1);
    // Put back while a newer patch of the page waits: the newer object, both templates.
    s.patched("h/c", 5, Template { kind: "recent", key: 1 }, t0);
    s.put_back("h/c".into(), p, t0);
    let (_, p) = s.due(t0).pop().expect("due");
    assert_eq!(p.object, 5);
    assert_eq!(p.templates.len(), 2);
}

#[test]
fn no_rate_checks_nothing_and_the_queue_is_bounded() {
    let t0 = Instant::now();
    let mut s = Schedule::new(Duration::from_secs(10), 0, t0);
    assert_eq!(s.patched("h/a", 1, T, t0), Noted::Off);
    assert!(s.due(at(t0, 60_000)).is_empty());
    let mut s = Schedule::new(Duration::from_secs(10), 1, t0);
    for i in 0..MAX_PENDING {
        assert_eq!(s.patched(&format!("h/{i}"), 1, T, t0), Noted::Queued);
    }
    assert_eq!(s.patched("h/one-more", 1, T, t0), Noted::Full);
    assert_eq!(s.patched("h/0", 2, T, t0), Noted::Queued, "a waiting page is updated");
}

#[test]
fn templates_stay_off_once_turned_off() {
    let t = Templates::default();
    assert!(!t.is_off(&T));
    assert!(t.turn_off(T));
    assert!(!t.turn_off(T));
    assert!(t.is_off(&T));
    assert!(!t.is_off(&Template { kind: "thread", key: 8 }));
    assert_eq!(t.count(), 1);
}

const PAGE: &str = "<h2>3 comments</h2><ol><li>a</li><li>b</li></ol>\
    <aside><ol class=\"wp-block-latest-comments\"><li>b</li><li>a</li></ol></aside><footer>f</footer>";

#[test]
fn the_same_page_matches() {
    assert_eq!(compare(PAGE.as_bytes(), PAGE.as_bytes(), &ignored(&["thread"])), None);
}

#[test]
fn a_difference_is_found_with_its_offset_and_both_sides() {
    let theirs = PAGE.replace("<li>b</li></ol><aside>", "<li>B</li></ol><aside>");
    let d = compare(PAGE.as_bytes(), theirs.as_bytes(), &ignored(&["thread"])).expect("differs");
    assert_eq!(d.at, PAGE.find("b</li></ol><aside>").unwrap());
    assert!(d.ours.starts_with("b</li></ol><aside>"), "{d:?}");
    assert!(d.theirs.starts_with("B</li></ol><aside>"), "{d:?}");
    assert!(d.ours.len() <= EXCERPT);
    // A page that ends early differs where it ends.
    let short = &PAGE[..20];
    let d = compare(short.as_bytes(), PAGE.as_bytes(), &[]).expect("differs");
    assert_eq!((d.at, d.ours.as_str()), (20, ""));
}

#[test]
fn the_latest_comments_block_is_ignored_unless_a_patch_keeps_it_current() {
    let theirs = PAGE.replace("<li>b</li><li>a</li></ol></aside>", "<li>c</li><li>b</li></ol></aside>");
    assert_eq!(compare(PAGE.as_bytes(), theirs.as_bytes(), &ignored(&["thread"])), None);
    let d = compare(PAGE.as_bytes(), theirs.as_bytes(), &ignored(&["thread", "recent"]));
    assert!(d.is_some(), "compared when a recent patch was applied");
    // Only the block: a difference after it still counts.
    let theirs = theirs.replace("<footer>f", "<footer>g");
    assert!(compare(PAGE.as_bytes(), theirs.as_bytes(), &ignored(&["thread"])).is_some());
    // The offset is the patched copy's, the block counted.
    let ours = PAGE.replace("<footer>f", "<footer>x");
    let d = compare(ours.as_bytes(), theirs.as_bytes(), &ignored(&["thread"])).expect("differs");
    assert_eq!(d.at, ours.find("x</footer>").unwrap());
    assert!(
        d.ours.starts_with("x</footer>") && d.theirs.starts_with("g</footer>"),
        "{d:?}"
    );
    // A block on one side only: cut where it is.
    let cut = PAGE.replace("<ol class=\"wp-block-latest-comments\"><li>b</li><li>a</li></ol>", "");
    assert_eq!(compare(cut.as_bytes(), PAGE.as_bytes(), &ignored(&["thread"])), None);
}
