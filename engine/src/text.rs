//! Bounds on text that echoes untrusted input: a decoder's message about received bytes, a key or an address
//! quoted from a config file or a command line. Such text is cut to a fixed size with a marker saying how much
//! was left out, so one bad input never makes an error, a log line or an answer to a client megabytes long.
//! It never parses anything.

use std::fmt::Display;

/// Bytes of an input quoted in an error (a key, an address, a CLI argument): enough to recognise it.
pub const ECHO_BYTES_MAX: usize = 96;
/// Bytes of an error message about untrusted input (e.g. a decoder's trace of where the bytes went wrong).
pub const REASON_BYTES_MAX: usize = 512;

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` quoted (as `{:?}` quotes it) for an error message, cut to [`ECHO_BYTES_MAX`] bytes of the input with
/// a marker `…(N more bytes)` when it is longer.
pub fn quote(text: &str) -> String {
    let kept = prefix(text, ECHO_BYTES_MAX);
    match text.len() - kept.len() {
        0 => format!("{kept:?}"),
        more => format!("{kept:?}…({more} more bytes)"),
    }
}

/// `text` cut to `max` bytes, with a marker `…(N more bytes)` when it is longer (the marker comes on top of
/// `max`, so a bounded text is at most `max` plus a few bytes).
pub fn bounded(text: &str, max: usize) -> String {
    let kept = prefix(text, max);
    match text.len() - kept.len() {
        0 => kept.to_string(),
        more => format!("{kept}…({more} more bytes)"),
    }
}

/// An error's message cut to [`REASON_BYTES_MAX`]: for errors about untrusted bytes, whose text may quote them.
pub fn reason(error: &impl Display) -> String {
    bounded(&error.to_string(), REASON_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(reason(&"no such key"), "no such key");
    }

    #[test]
    fn long_text_is_cut_with_a_marker() {
        let key = "a".repeat(1 << 20);
        let quoted = quote(&key);
        assert!(quoted.len() < ECHO_BYTES_MAX + 40, "{} bytes", quoted.len());
        assert!(quoted.ends_with(&format!("…({} more bytes)", (1 << 20) - ECHO_BYTES_MAX)));
        let cut = reason(&key);
        assert!(cut.starts_with(&"a".repeat(REASON_BYTES_MAX)));
        assert!(cut.len() < REASON_BYTES_MAX + 40);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let text = "é".repeat(100); // 2 bytes each
        let cut = bounded(&text, 5);
        assert_eq!(cut, format!("éé…({} more bytes)", 200 - 4));
    }
}
