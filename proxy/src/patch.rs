//! Comment patches applied to a stored page (see [`strata_wire::patch`]): the new comments'
//! markup learnt from comments the page already shows, inserted where WordPress puts them,
//! the comment heading's count raised. Pure: a page in, the patched page or why not out; the
//! caller bans what is not patched.
//!
//! Nothing is guessed: the page must show exactly the comments and count the patch expects,
//! the markup learnt from one comment must reproduce another comment of the page byte for
//! byte (so every field the template fills is proven to be that field), and the
//! alternating classes WordPress gives each comment must be where they are computed to be.

use strata_wire::patch::{Patch, Shown, Thread};

mod recent;
#[cfg(test)]
pub(crate) use recent::tests::patch_636 as recent_test_patch;
pub use recent::{lists as recent_lists, patch_list as recent_list};

/// Why a page was not patched (it is banned instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unpatched {
    /// The page is not UTF-8 text.
    #[error("the page is not text")]
    NotText,
    /// The comment the patch follows is not on the page, or not at the top level.
    #[error("the page does not show the comment the patch follows")]
    NoThread,
    /// The page shows a top-level comment after the one the patch follows.
    #[error("the page shows comments the patch does not expect")]
    NotLast,
    /// No comment of the page gave markup that reproduces another.
    #[error("no comment of the page gave a template that reproduces another")]
    NoTemplate,
    /// The comment heading's count is not found exactly once.
    #[error("the comment count is not found once in the heading")]
    NoCount,
    /// The count is or becomes 1 (or 1 000 or more): its words or digits change shape.
    #[error("the comment count changes its wording")]
    Wording,
    /// A comment's alternating classes are not where WordPress puts them.
    #[error("the comments' alternating classes are not as expected")]
    Classes,
    /// The page shows no list of latest comments.
    #[error("the page shows no list of latest comments")]
    NoList,
    /// A list of latest comments does not show exactly the newest the patch lists.
    #[error("a list of latest comments does not show the newest comments the patch expects")]
    NotNewest,
    /// A list shows as many comments as the patch lists: whether it grows cannot be told.
    #[error("a list of latest comments shows as many comments as the patch lists")]
    Ambiguous,
}

impl Unpatched {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Unpatched::NotText => "not-text",
            Unpatched::NoThread => "no-thread",
            Unpatched::NotLast => "not-last",
            Unpatched::NoTemplate => "no-template",
            Unpatched::NoCount => "no-count",
            Unpatched::Wording => "wording",
            Unpatched::Classes => "classes",
            Unpatched::NoList => "no-list",
            Unpatched::NotNewest => "not-newest",
            Unpatched::Ambiguous => "ambiguous",
        }
    }
}

/// `page` with `patch` applied.
pub fn apply(page: &[u8], patch: &Patch) -> Result<Vec<u8>, Unpatched> {
    patched(page, patch).map(|p| p.body)
}

/// The template key of every `recent` patch: a check's mismatch on one turns all of them
/// off.
pub const RECENT_TEMPLATE: u64 = 0;

/// A patched page and what identifies the markup it was patched with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patched {
    /// The page with the patch applied.
    pub body: Vec<u8>,
    /// The key of the template the new markup was made from ([`Template::key`]): the same
    /// for every page of a theme, whatever post, comment or link it shows.
    pub template: u64,
}

/// `page` with `patch` applied, with the key of the template used.
pub fn patched(page: &[u8], patch: &Patch) -> Result<Patched, Unpatched> {
    let page = std::str::from_utf8(page).map_err(|_| Unpatched::NotText)?;
    match patch {
        Patch::Thread(t) => thread(page, t).map(|(body, template)| Patched {
            body: body.into_bytes(),
            template,
        }),
        // The list's markup is learnt per page as a thread's is; one key stands for it.
        Patch::Recent(r) => recent::patch_page(page, r).map(|body| Patched {
            body: body.into_bytes(),
            template: RECENT_TEMPLATE,
        }),
    }
}

/// One comment element of the page: `<li id="comment-ID" …>` to its `</li>`.
#[derive(Debug, Clone, Copy)]
struct Element {
    id: u64,
    start: usize,
    end: usize,
    /// Whether another comment element holds it.
    nested: bool,
    /// Whether it holds other comment elements.
    parent: bool,
}

const OPEN: &str = "<li id=\"comment-";

/// Every comment element of the page, in page order.
fn elements(page: &str) -> Vec<Element> {
    let mut found: Vec<Element> = Vec::new();
    let mut from = 0;
    while let Some(at) = page[from..].find(OPEN).map(|i| from + i) {
        from = at + OPEN.len();
        let digits = page[from..].bytes().take_while(u8::is_ascii_digit).count();
        let Ok(id) = page[from..from + digits].parse::<u64>() else {
            continue;
        };
        if page.as_bytes().get(from + digits) != Some(&b'"') {
            continue;
        }
        let Some(end) = element_end(page, at) else { continue };
        found.push(Element {
            id,
            start: at,
            end,
            nested: false,
            parent: false,
        });
    }
    for i in 0..found.len() {
        let (s, e) = (found[i].start, found[i].end);
        for j in i + 1..found.len() {
            if found[j].start >= e {
                break;
            }
            if found[j].end <= e && found[j].start > s {
                found[j].nested = true;
                found[i].parent = true;
            }
        }
    }
    found
}

/// The end (after `</li>`) of the `<li` element starting at `start`, counting nested ones.
fn element_end(page: &str, start: usize) -> Option<usize> {
    let b = page.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while let Some(lt) = memchr::memchr(b'<', &b[i..]).map(|k| i + k) {
        let rest = &b[lt..];
        if rest.len() >= 4 && rest[1..3].eq_ignore_ascii_case(b"li") && matches!(rest[3], b' ' | b'>' | b'\t' | b'\n') {
            depth += 1;
        } else if rest.len() >= 5 && rest[..5].eq_ignore_ascii_case(b"</li>") {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(lt + 5);
            }
        }
        i = lt + 1;
    }
    None
}

/// New top-level comments after the last one, and the key of the template they were
/// made from.
fn thread(page: &str, t: &Thread) -> Result<(String, u64), Unpatched> {
    for n in [t.count_before, t.count_after] {
        if n == 1 || n >= 1000 {
            return Err(Unpatched::Wording);
        }
    }
    let all = elements(page);
    let top: Vec<&Element> = all.iter().filter(|e| !e.nested).collect();
    let last = top.iter().position(|e| e.id == t.after).ok_or(Unpatched::NoThread)?;
    if last + 1 != top.len() {
        return Err(Unpatched::NotLast);
    }
    // The thread: the top-level comments before it, joined by the same text.
    let gap = |i: usize| &page[top[i - 1].end..top[i].start];
    if last == 0 {
        return Err(Unpatched::NoTemplate);
    }
    let sep = gap(last);
    let first = (1..=last)
        .rev()
        .take_while(|&i| gap(i) == sep)
        .last()
        .map_or(last, |i| i - 1);
    let (from, to) = (top[first].start, top[last].end);
    let position = |e: &Element| Position {
        alt: all.iter().filter(|o| o.start >= from && o.start < e.start).count(),
        thread: top[first..].iter().filter(|o| o.start < e.start).count(),
    };
    let samples: Vec<(&Shown, &str, Position)> = t
        .samples
        .iter()
        .filter_map(|s| {
            let e = top[first..=last].iter().find(|e| e.id == s.id && !e.parent)?;
            Some((s, &page[e.start..e.end], position(e)))
        })
        .collect();
    let template = Template::proven(&samples, &t.added)?;
    let heading = count_at(page, from, t.count_before)?;
    let mut next = Position {
        alt: all.iter().filter(|o| o.start >= from && o.start < to).count(),
        thread: last + 1 - first,
    };
    let mut out = String::with_capacity(page.len() + t.added.len() * (to - top[last].start + 256));
    out.push_str(&page[..heading.0]);
    out.push_str(&t.count_after.to_string());
    out.push_str(&page[heading.1..to]);
    for c in &t.added {
        out.push_str(sep);
        out.push_str(&template.render(c, next)?);
        next.alt += 1;
        next.thread += 1;
    }
    out.push_str(&page[to..]);
    Ok((out, template.key()))
}

/// Where the comment count `n` is in the heading before the thread starting at `from`: the
/// last heading element before it, `n` found once as a whole number in its text.
fn count_at(page: &str, from: usize, n: u64) -> Result<(usize, usize), Unpatched> {
    let before = &page[..from];
    let open = (0..before.len())
        .rev()
        .find(|&i| {
            let b = before.as_bytes();
            b[i] == b'<'
                && b.get(i + 1).is_some_and(|c| c.eq_ignore_ascii_case(&b'h'))
                && b.get(i + 2).is_some_and(|c| (b'1'..=b'6').contains(c))
        })
        .ok_or(Unpatched::NoCount)?;
    let close = before[open..].find("</h").map(|i| open + i).ok_or(Unpatched::NoCount)?;
    let text_from = before[open..close]
        .find('>')
        .map(|i| open + i + 1)
        .ok_or(Unpatched::NoCount)?;
    let want = n.to_string();
    let mut found = None;
    let mut in_tag = false;
    let b = page.as_bytes();
    let mut i = text_from;
    while i < close {
        match b[i] {
            b'<' => in_tag = true,
            b'>' => in_tag = false,
            c if !in_tag && c.is_ascii_digit() => {
                let len = b[i..close].iter().take_while(|c| c.is_ascii_digit()).count();
                if page[i..i + len] == want {
                    if found.is_some() {
                        return Err(Unpatched::NoCount);
                    }
                    found = Some((i, i + len));
                }
                i += len;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found.ok_or(Unpatched::NoCount)
}

/// A comment's place in the list, as WordPress's walker counts: every comment before it
/// (for `even`/`odd alt`) and the top-level ones (for `thread-even`/`thread-odd thread-alt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    alt: usize,
    thread: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
    Id,
    Classes(Vec<Class>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    Word(String),
    Alt,
    Thread,
}

/// A comment's markup with its fields cut out.
#[derive(Debug, Clone)]
struct Template<'a> {
    parts: Vec<Part>,
    /// The comment it was learnt from.
    sample: &'a Shown,
    /// Fields proven to be fields: another comment with a different value reproduced.
    proven: Vec<&'a str>,
    /// Fields some reproduced comment had markup in: only those may bring markup (a link
    /// around an author's name no comment of the page had proves nothing of its shape).
    marked: Vec<&'a str>,
}

impl<'a> Template<'a> {
    /// A template learnt from one sample that reproduces another, and may fill `added`'s
    /// values (every field whose value differs from the sample's is proven).
    fn proven(samples: &[(&'a Shown, &'a str, Position)], added: &[Shown]) -> Result<Template<'a>, Unpatched> {
        for (s, markup, at) in samples {
            let Some(mut t) = Template::learn(s, markup, *at) else {
                continue;
            };
            for (o, other, pos) in samples {
                if o.id == s.id || t.render(o, *pos).ok().as_deref() != Some(*other) {
                    continue;
                }
                for (name, v) in &o.fields {
                    if s.fields.get(name) != Some(v) && !t.proven.contains(&name.as_str()) {
                        t.proven.push(name);
                    }
                    let marked = v.contains('<') || s.fields.get(name).is_some_and(|sv| sv.contains('<'));
                    if marked && !t.marked.contains(&name.as_str()) {
                        t.marked.push(name);
                    }
                }
                t.proven.push("");
            }
            // Reproducing no other comment proves nothing.
            if !t.proven.contains(&"") {
                continue;
            }
            if added.iter().all(|c| t.fits(c)) {
                return Ok(t);
            }
        }
        Err(Unpatched::NoTemplate)
    }

    /// Cuts `s`'s fields, its id and its alternating classes out of its `markup`.
    fn learn(s: &'a Shown, markup: &str, at: Position) -> Option<Template<'a>> {
        // Spans of the markup taken by a part, in any order.
        let mut taken: Vec<(usize, usize, Part)> = Vec::new();
        let open_end = markup.find('>')?;
        let class_at = markup[..open_end].find(" class=\"")? + " class=\"".len();
        let class_end = class_at + markup[class_at..open_end].find('"')?;
        let classes = classes(&markup[class_at..class_end]);
        if render_classes(&classes, at) != markup[class_at..class_end] {
            return None;
        }
        taken.push((class_at, class_end, Part::Classes(classes)));
        let mut fields: Vec<(&String, &String)> = s.fields.iter().filter(|(_, v)| !v.is_empty()).collect();
        fields.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        // A field printed for an attribute (`*_attr`) is cut only inside tags, and a field
        // with the same value as one of those only outside: the name in a reply link's label
        // and the name (or the link) shown to the reader.
        let attr_values: Vec<&String> = s.fields.iter().filter(|(n, _)| is_attr(n)).map(|(_, v)| v).collect();
        for (name, value) in fields {
            let in_tags = if is_attr(name) {
                Some(true)
            } else if attr_values.contains(&value) {
                Some(false)
            } else {
                None
            };
            let mut from = 0;
            while let Some(i) = markup[from..].find(value.as_str()).map(|i| from + i) {
                let end = i + value.len();
                let context_ok = in_tags.is_none_or(|want| inside_tag(markup, i) == want);
                if context_ok && taken.iter().all(|(a, b, _)| end <= *a || i >= *b) {
                    taken.push((i, end, Part::Field(name.clone())));
                    from = end;
                } else {
                    from = i + 1;
                }
            }
        }
        let id = s.id.to_string();
        let b = markup.as_bytes();
        let mut from = 0;
        while let Some(i) = markup[from..].find(&id).map(|i| from + i) {
            let end = i + id.len();
            from = end;
            let bounded = (i == 0 || !b[i - 1].is_ascii_digit()) && b.get(end).is_none_or(|c| !c.is_ascii_digit());
            if bounded && taken.iter().all(|(a, e, _)| end <= *a || i >= *e) {
                taken.push((i, end, Part::Id));
            }
        }
        taken.sort_by_key(|(a, _, _)| *a);
        let mut parts = Vec::with_capacity(taken.len() * 2 + 1);
        let mut at = 0;
        for (a, e, part) in taken {
            if a > at {
                parts.push(Part::Text(markup[at..a].to_string()));
            }
            parts.push(part);
            at = e;
        }
        if at < markup.len() {
            parts.push(Part::Text(markup[at..].to_string()));
        }
        Some(Template {
            parts,
            sample: s,
            proven: Vec::new(),
            marked: Vec::new(),
        })
    }

    /// Whether `c` may be rendered: it has every field the template fills, and each field not
    /// proven holds the sample's value (a field the template does not fill included: its
    /// value may be in the template's text in a form the sample's fields do not show).
    fn fits(&self, c: &Shown) -> bool {
        let proven_or_same =
            |name: &String, v: &String| self.proven.contains(&name.as_str()) || self.sample.fields.get(name) == Some(v);
        c.fields.iter().all(|(name, v)| proven_or_same(name, v))
            && self.parts.iter().all(|p| match p {
                Part::Field(name) => c.fields.get(name).is_some_and(|v| {
                    (self.proven.contains(&name.as_str()) || self.sample.fields.get(name) == Some(v))
                        && (!v.contains('<') || self.marked.contains(&name.as_str()))
                }),
                _ => true,
            })
            && self
                .sample
                .fields
                .iter()
                // A field whose value equalled another's was cut as the other: it must still
                // (an attribute's field and a text's are told apart by where they are).
                .all(|(name, v)| {
                    self.sample
                        .fields
                        .iter()
                        .filter(|(other, ov)| {
                            *other != name && *ov == v && !v.is_empty() && is_attr(other) == is_attr(name)
                        })
                        .all(|(other, _)| c.fields.get(name) == c.fields.get(other))
                })
    }

    /// What identifies the theme's markup this template holds, the same on every page of a
    /// theme: a hash of its text with each field, the id and the alternating classes as
    /// placeholders, digits left out (post ids, sizes, depths) and every attribute value
    /// that holds a URL (links to the post itself) as one word.
    fn key(&self) -> u64 {
        let mut text = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => text.push_str(t),
                Part::Field(name) => {
                    text.push('{');
                    text.push_str(name);
                    text.push('}');
                }
                Part::Id => text.push_str("{id}"),
                Part::Classes(cl) => {
                    for c in cl {
                        match c {
                            Class::Word(w) => text.push_str(w),
                            Class::Alt => text.push_str("{alt}"),
                            Class::Thread => text.push_str("{thread}"),
                        }
                        text.push(' ');
                    }
                }
            }
        }
        markup_key(&text)
    }

    fn render(&self, c: &Shown, at: Position) -> Result<String, Unpatched> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(name) => out.push_str(c.fields.get(name).ok_or(Unpatched::NoTemplate)?),
                Part::Id => out.push_str(&c.id.to_string()),
                Part::Classes(cl) => out.push_str(&render_classes(cl, at)),
            }
        }
        Ok(out)
    }
}

/// FNV-1a of `markup` without its digits, each quoted attribute value holding `://` counted
/// as the word `URL` (see [`Template::key`]).
fn markup_key(markup: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |s: &str| {
        for &b in s.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let (mut in_tag, mut quote, mut value) = (false, None, String::new());
    let mut one = [0u8; 4];
    for c in markup.chars() {
        if let Some(q) = quote {
            if c == q {
                eat(if value.contains("://") { "URL" } else { &value });
                value.clear();
                quote = None;
            } else if !c.is_ascii_digit() {
                value.push(c);
                continue;
            } else {
                continue;
            }
        } else {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                '"' | '\'' if in_tag => quote = Some(c),
                _ => {}
            }
        }
        if !c.is_ascii_digit() {
            eat(c.encode_utf8(&mut one));
        }
    }
    eat(&value);
    h
}

/// Whether a field is printed for an attribute value.
fn is_attr(name: &str) -> bool {
    name.ends_with("_attr")
}

/// Whether byte `at` of `markup` is inside a tag (after a `<` not yet closed by `>`).
fn inside_tag(markup: &str, at: usize) -> bool {
    let before = &markup.as_bytes()[..at];
    match (memchr::memrchr(b'<', before), memchr::memrchr(b'>', before)) {
        (Some(lt), Some(gt)) => lt > gt,
        (Some(_), None) => true,
        _ => false,
    }
}

/// A class attribute's words, the alternating ones marked.
fn classes(attr: &str) -> Vec<Class> {
    let words: Vec<&str> = attr.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let (class, took) = match (words[i], words.get(i + 1).copied()) {
            ("even", _) => (Class::Alt, 1),
            ("odd", Some("alt")) => (Class::Alt, 2),
            ("thread-even", _) => (Class::Thread, 1),
            ("thread-odd", Some("thread-alt")) => (Class::Thread, 2),
            (w, _) => (Class::Word(w.to_string()), 1),
        };
        out.push(class);
        i += took;
    }
    out
}

fn render_classes(classes: &[Class], at: Position) -> String {
    let words: Vec<&str> = classes
        .iter()
        .map(|c| match c {
            Class::Word(w) => w.as_str(),
            Class::Alt if at.alt % 2 == 1 => "odd alt",
            Class::Alt => "even",
            Class::Thread if at.thread % 2 == 1 => "thread-odd thread-alt",
            Class::Thread => "thread-even",
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests;
