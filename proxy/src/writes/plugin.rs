//! The WordPress plugin's announcement: `X-Strata-Plugin: VERSION; covers=KINDS; key=KEY`
//! on every answer PHP gives while the plugin is loaded and able to send bans. The kinds
//! name the admin changes the plugin reports itself with precise bans; the key
//! ([`strata_wire::auth::plugin_key`]) proves it signs them with this cluster's secret. A
//! write whose own answer carries both needs no guess from the write rules for its kind
//! ([`super::bans_for`]); anything else (no header, no `covers`, another cluster's key, an
//! older plugin) covers nothing, and the rules guess as before.
//!
//! The announcement is read from the very answer to the write, not remembered from earlier
//! pages: it says the plugin ran in the PHP request that made the change, so its hooks saw
//! it. The proxy removes the header from every origin answer before storing or delivering
//! it ([`HEADER`]).

use http::HeaderName;

/// The plugin's response header; never stored or delivered.
pub static HEADER: HeaderName = HeaderName::from_static("x-strata-plugin");

/// A kind of admin change the plugin reports with its own bans (its hooks in
/// `wordpress/strata/includes/hooks.php`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Posts and pages: saved, published, unpublished, trashed, deleted, (un)stuck.
    Posts,
    /// Comments: approved, unapproved, spammed, trashed, deleted, edited, replied to.
    Comments,
    /// Terms of public taxonomies: created, edited, deleted.
    Terms,
    /// Navigation menus: saved, deleted.
    Menus,
    /// Widgets and sidebars.
    Widgets,
    /// The customizer's published changes.
    Customizer,
    /// The active theme.
    Themes,
    /// Core settings pages (general, writing, reading, discussion, media, permalinks,
    /// privacy).
    Options,
    /// Plugin, theme and core installs, updates, (de)activations.
    Updates,
    /// The plugin's own purges ("Purge this page", "Purge everything" in the admin bar):
    /// they send exactly what they purge.
    Purges,
}

impl Change {
    /// Every kind, in the header's order.
    pub const ALL: [Change; 10] = [
        Change::Posts,
        Change::Comments,
        Change::Terms,
        Change::Menus,
        Change::Widgets,
        Change::Customizer,
        Change::Themes,
        Change::Options,
        Change::Updates,
        Change::Purges,
    ];

    /// The kind's name in `covers=`, logs and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Posts => "posts",
            Change::Comments => "comments",
            Change::Terms => "terms",
            Change::Menus => "menus",
            Change::Widgets => "widgets",
            Change::Customizer => "customizer",
            Change::Themes => "themes",
            Change::Options => "options",
            Change::Updates => "updates",
            Change::Purges => "purges",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// The kinds of change an answer's announcement covers (none when it proves nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Covers(u16);

impl Covers {
    /// Covers nothing: the write rules guess.
    pub const NONE: Covers = Covers(0);

    /// Whether the plugin reports changes of this kind.
    pub fn contains(self, c: Change) -> bool {
        self.0 & c.bit() != 0
    }

    /// These kinds and `c`.
    pub fn with(self, c: Change) -> Covers {
        Covers(self.0 | c.bit())
    }

    /// Reads an `X-Strata-Plugin` value: the kinds of `covers=` (unknown names ignored,
    /// so a newer plugin's kinds do not confuse an older node) when its `key=` equals
    /// `key`, this cluster's [`strata_wire::auth::plugin_key`]; else [`Covers::NONE`].
    /// Parameter names are case-insensitive; the version before the first `;` is not
    /// read (the kinds say what the plugin does).
    pub fn announced(value: &[u8], key: &str) -> Covers {
        let Ok(value) = std::str::from_utf8(value) else {
            return Covers::NONE;
        };
        let mut covers = Covers::NONE;
        let mut keyed = false;
        for param in value.split(';').skip(1) {
            let Some((name, v)) = param.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "covers" => {
                    for kind in v.split([',', ' ']).map(str::trim) {
                        if let Some(c) = Change::ALL.iter().find(|c| c.as_str().eq_ignore_ascii_case(kind)) {
                            covers = covers.with(*c);
                        }
                    }
                }
                "key" => keyed = !key.is_empty() && same(v.as_bytes(), key.as_bytes()),
                _ => {}
            }
        }
        if keyed {
            covers
        } else {
            Covers::NONE
        }
    }

    /// The kinds as `covers=` lists them, for logs.
    pub fn names(self) -> Vec<&'static str> {
        Change::ALL
            .iter()
            .filter(|c| self.contains(**c))
            .map(|c| c.as_str())
            .collect()
    }
}

/// Compares two keys in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0f9be4e5213846a9";

    #[test]
    fn covers_only_with_this_clusters_key() {
        let v = format!("1.1.0; covers=comments,terms,options; key={KEY}");
        let c = Covers::announced(v.as_bytes(), KEY);
        assert_eq!(c.names(), ["comments", "terms", "options"]);
        assert!(!c.contains(Change::Posts));
        // Another cluster's key, no key, a key of another length, an empty own key.
        for other in [
            "1.1.0; covers=comments; key=0000000000000000".to_string(),
            "1.1.0; covers=comments".to_string(),
            format!("1.1.0; covers=comments; key={KEY}00"),
        ] {
            assert_eq!(Covers::announced(other.as_bytes(), KEY), Covers::NONE, "{other}");
        }
        assert_eq!(Covers::announced(v.as_bytes(), ""), Covers::NONE);
    }

    #[test]
    fn older_plugins_and_odd_values_cover_nothing() {
        for v in [
            &b"1.0.0"[..],
            b"",
            b";;;",
            b"covers=comments; key=0f9be4e5213846a9",
            b"\xff\xfe; covers=comments; key=0f9be4e5213846a9",
        ] {
            assert_eq!(Covers::announced(v, KEY), Covers::NONE, "{v:?}");
        }
    }

    #[test]
    fn names_are_read_leniently_and_unknown_kinds_ignored() {
        let v = format!("2.0;  COVERS = \"Comments, menus ,telepathy\" ;KEY={KEY}");
        assert_eq!(Covers::announced(v.as_bytes(), KEY).names(), ["comments", "menus"]);
        let all = Change::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
        let v = format!("1.1.0; covers={all}; key={KEY}");
        assert_eq!(Covers::announced(v.as_bytes(), KEY).names().len(), Change::ALL.len());
    }
}
