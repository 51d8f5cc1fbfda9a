//! Lists of the latest comments (WordPress's latest-comments block, the recent-comments
//! widget): found in a page as runs of `<li>` siblings each linking to one comment
//! (`#comment-ID"`), and patched with a [`Recent`] patch: the new comments on top, as many
//! of the oldest leave at the bottom.
//!
//! A list is patched only when its items are exactly the newest comments the patch lists
//! before the batch, in order, and fewer of them than the patch lists (a list showing as many
//! may be one that grows or one that is full: which cannot be told from the page). The
//! items' markup is learnt from one item the page shows and proven on another, as a thread's
//! comments are ([`Template::proven`]).

use std::ops::Range;

use memchr::memmem;
use strata_wire::patch::Recent;

use super::{element_end, Position, Template, Unpatched};

/// One item of a list: an `<li>` element linking to one comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item {
    /// The comment it links to.
    id: u64,
    start: usize,
    end: usize,
}

/// The byte ranges of the lists of latest comments in `page`, each from its first item's
/// `<li` to its last item's `</li>`, in page order; none in a page that is not text.
pub fn lists(page: &[u8]) -> Vec<Range<usize>> {
    let Ok(page) = std::str::from_utf8(page) else {
        return Vec::new();
    };
    runs(page).iter().map(|r| r[0].start..r[r.len() - 1].end).collect()
}

/// The list that is the whole of `list` (the bytes [`lists`] found, alone) with `patch`
/// applied.
pub fn patch_list(list: &str, patch: &Recent) -> Result<String, Unpatched> {
    match runs(list).as_slice() {
        [run] if run[0].start == 0 && run[run.len() - 1].end == list.len() => patch_run(list, run, patch),
        _ => Err(Unpatched::NoList),
    }
}

/// `page` with every list of latest comments patched; an error when it has none, or when
/// one of them cannot be patched.
pub fn patch_page(page: &str, patch: &Recent) -> Result<String, Unpatched> {
    let runs = runs(page);
    if runs.is_empty() {
        return Err(Unpatched::NoList);
    }
    let mut out = String::with_capacity(page.len() + 1024);
    let mut at = 0;
    for run in &runs {
        let range = run[0].start..run[run.len() - 1].end;
        out.push_str(&page[at..range.start]);
        out.push_str(&patch_run(page, run, patch)?);
        at = range.end;
    }
    out.push_str(&page[at..]);
    Ok(out)
}

/// The new bytes of the list `run` of `page` (its first item's start to its last's end).
fn patch_run(page: &str, run: &[Item], patch: &Recent) -> Result<String, Unpatched> {
    let n = run.len();
    if n > patch.before.len() || run.iter().zip(&patch.before).any(|(item, id)| item.id != *id) {
        return Err(Unpatched::NotNewest);
    }
    if n == patch.before.len() {
        return Err(Unpatched::Ambiguous);
    }
    if n < 2 {
        return Err(Unpatched::NoTemplate);
    }
    let sep = &page[run[0].end..run[1].start];
    if run.windows(2).any(|w| &page[w[0].end..w[1].start] != sep) {
        return Err(Unpatched::NoTemplate);
    }
    let at = Position { alt: 0, thread: 0 };
    let samples: Vec<_> = patch
        .samples
        .iter()
        .filter_map(|s| {
            let item = run.iter().find(|i| i.id == s.id)?;
            Some((s, &page[item.start..item.end], at))
        })
        .collect();
    let template = Template::proven(&samples, &patch.added)?;
    let shown = patch.added.len().min(n);
    let kept = n - shown;
    let mut out = String::with_capacity(run[n - 1].end - run[0].start + 1024);
    for (i, c) in patch.added[..shown].iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&template.render(c, at)?);
    }
    if kept > 0 {
        out.push_str(sep);
        out.push_str(&page[run[0].start..run[kept - 1].end]);
    }
    Ok(out)
}

/// The runs of items of `page`: `<li>` elements holding no other, not a comment of a thread
/// (`<li id="comment-…`), linking to one comment, each run's items separated by white space
/// only.
fn runs(page: &str) -> Vec<Vec<Item>> {
    let b = page.as_bytes();
    let mut items: Vec<Item> = Vec::new();
    // The start of an item found to link to two comments: no item.
    let mut refused = None;
    for at in memmem::find_iter(b, b"#comment-") {
        let digits = b[at + 9..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || b.get(at + 9 + digits) != Some(&b'"') {
            continue;
        }
        let Ok(id) = page[at + 9..at + 9 + digits].parse::<u64>() else {
            continue;
        };
        let Some(start) = last_li_open(&b[..at]) else { continue };
        if refused == Some(start) {
            continue;
        }
        if let Some(last) = items.last().filter(|i| i.start == start) {
            // A second link in the same item: to the same comment, or the item is no item.
            if last.id != id {
                items.pop();
                refused = Some(start);
            }
            continue;
        }
        let Some(end) = element_end(page, start) else { continue };
        let open_end = page[start..].find('>').map_or(end, |i| start + i);
        if end <= at || last_li_open(&b[at..end]).is_some() || page[start..open_end].contains(" id=\"comment-") {
            continue;
        }
        items.push(Item { id, start, end });
    }
    let mut runs: Vec<Vec<Item>> = Vec::new();
    for item in items {
        match runs.last_mut() {
            Some(run)
                if page[run[run.len() - 1].end..item.start]
                    .bytes()
                    .all(|c| c.is_ascii_whitespace()) =>
            {
                run.push(item)
            }
            _ => runs.push(vec![item]),
        }
    }
    runs
}

/// Where the last `<li` tag of `before` opens.
fn last_li_open(before: &[u8]) -> Option<usize> {
    let mut end = before.len();
    while let Some(i) = memmem::rfind(&before[..end], b"<li") {
        if matches!(before.get(i + 3), Some(b' ' | b'>' | b'\t' | b'\n')) {
            return Some(i);
        }
        end = i;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests;
