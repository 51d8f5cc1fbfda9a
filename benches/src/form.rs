//! The comment form as a browser posts it, shared by the comment load generators.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// `application/x-www-form-urlencoded` of `fields`, in order.
pub fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}
