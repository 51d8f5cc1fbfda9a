//! Time of the comment filters on worst-case 64 KiB comments: thousands of attributes in a
//! tag, thousands of tags, comment openers, entities, bare URLs, `<script` openers. Numbers
//! only, never pass/fail.
//!
//! `cargo bench -p strata-syncer --bench kses [RUNS]` (release build): milliseconds per
//! 64 KiB comment (the fastest of RUNS, default 5: the least disturbed by other work on the
//! machine) for each filter, and how much longer `wp_kses`, `filter_comment` and
//! `link_count` take on 256 KiB than on 64 KiB of the same shape: about 4 when the work is
//! linear in the comment's length, about 16 when it is quadratic.

use std::time::{Duration, Instant};

use strata_syncer::format::{filter_comment, Raw};
use strata_syncer::kses;

/// 64 KiB: the largest comment WordPress takes.
const SIZE: usize = 64 * 1024;

/// `head`, then `unit` repeated up to `size` bytes, then `tail`.
fn fill(size: usize, head: &str, unit: &str, tail: &str) -> String {
    let mut s = String::from(head);
    while s.len() + unit.len() + tail.len() <= size {
        s.push_str(unit);
    }
    s.push_str(tail);
    s
}

/// The worst cases, `size` bytes each.
fn cases(size: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "attributes in one tag",
            fill(size, "<a href=x title=y ", "t=z ", ">x</a>"),
        ),
        (
            "quoted attributes in one tag",
            fill(size, "<a href=\"x\" ", "title=\"y\" ", ">x</a>"),
        ),
        ("tags", fill(size, "", "<a href=x title=y>", "")),
        ("comment openers on a line", fill(size, "", "<!--a>", "\nX")),
        ("bare URLs", fill(size, "", " http://example.test/p ", "")),
        ("scheme after scheme", fill(size, "", "(a://", "")),
        ("nested %0d in a www. host", {
            let n = size / 6;
            format!(" www.{}{}", "%".repeat(n), "0d".repeat(n))
        }),
        (
            "<script openers with a link",
            fill(size, "<a target=_blank href=x>", "<script", ""),
        ),
        ("entities", fill(size, "", "&amp;&#65;&#x41;&nbsp;&bogus;", "")),
        (
            "plain prose",
            fill(size, "", "The quick brown fox jumps over the lazy dog. ", ""),
        ),
    ]
}

fn raw(content: &str) -> Raw<'_> {
    Raw {
        author: "A",
        email: "a@example.test",
        url: "",
        content,
        ip: "192.0.2.1",
        agent: "bench",
    }
}

/// The fastest of `runs` timings of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let runs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(5);
    println!("fastest of {runs} runs, milliseconds per 64 KiB comment; x4: 256 KiB time / 64 KiB time");
    println!(
        "{:<30} {:>9} {:>10} {:>9} {:>14} {:>9} {:>9} {:>9}",
        "input", "wp_kses", "link_count", "rel_ugc", "filter_comment", "x4 kses", "x4 filter", "x4 links"
    );
    let larger = cases(4 * SIZE);
    for ((name, text), (_, big)) in cases(SIZE).into_iter().zip(larger) {
        let kses = time(runs, || {
            std::hint::black_box(kses::wp_kses(&text));
        });
        let links = time(runs, || {
            std::hint::black_box(kses::link_count(&text));
        });
        let rel = time(runs, || {
            std::hint::black_box(kses::rel_ugc(&text, "example.test"));
        });
        let filter = time(runs, || {
            std::hint::black_box(filter_comment(raw(&text), "example.test"));
        });
        let filter_big = time(runs, || {
            std::hint::black_box(filter_comment(raw(&big), "example.test"));
        });
        let links_big = time(runs, || {
            std::hint::black_box(kses::link_count(&big));
        });
        let kses_big = time(runs, || {
            std::hint::black_box(kses::wp_kses(&big));
        });
        let ratio = |a: Duration, b: Duration| format!("{:.1}", a.as_secs_f64() / b.as_secs_f64().max(1e-9));
        println!(
            "{name:<30} {:>9} {:>10} {:>9} {:>14} {:>9} {:>9} {:>9}",
            ms(kses),
            ms(links),
            ms(rel),
            ms(filter),
            ratio(kses_big, kses),
            ratio(filter_big, filter),
            ratio(links_big, links)
        );
    }
}
