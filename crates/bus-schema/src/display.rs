//! Showing text that came from the bus on a terminal.
//!
//! Identifiers are checked at the door (printable ASCII, see the input rules), but free text
//! (explanations, reasons, details, descriptions) may hold any Unicode. Wherever it is shown to
//! a person, control characters (ESC, NUL, CR, LF, …) and bidirectional controls (U+202E and
//! friends, which can display a version reversed) are shown escaped, as `\u{202e}`.

use std::borrow::Cow;

/// Unicode's explicit bidirectional formatting characters (and the marks).
pub fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn unsafe_on_terminal(c: char) -> bool {
    c.is_control() || is_bidi(c) || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// `s` with every control and bidi character escaped; borrowed when there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_on_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_on_terminal(c) => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A character named for an error message: `'a'`, or `U+202E` for one that cannot be shown.
pub fn describe(c: char) -> String {
    if c.is_ascii_graphic() { format!("'{c}'") } else { format!("U+{:04X}", u32::from(c)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escape("restart payments-api — ok"), Cow::Borrowed(_)));
        assert_eq!(escape("1.14.2\u{202e}evil"), "1.14.2\\u{202e}evil");
        assert_eq!(escape("a\x1b[31mred\0"), "a\\u{001b}[31mred\\u{0000}");
        assert_eq!(escape("line\r\nforged"), "line\\r\\nforged");
    }
}
