//! Terminal-safe text: strings that come from files (blob provenance, tensor names, checkpoint
//! keys) and error messages that quote them are printed with control characters, escape
//! sequences and invisible direction overrides shown as visible escapes (`\x1b`, `\n`,
//! `\u{202e}`), so that no input can clear the screen, move the cursor or forge output lines.
//! Also the text of an error chain, each cause said once.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal raw: C0/C1 controls (ESC, CR, LF, BS, ...) and the
/// Unicode format characters that reorder or hide text (bidi embeddings, overrides, isolates).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` with every unsafe character replaced by a visible escape; borrowed when nothing changes.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// `escape`, but line breaks stay: for multi-line messages whose parts that come from files
/// were escaped with `escape` already (a checkpoint's mismatch report).
pub fn escape_keep_lines(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

fn escape_with(s: &str, keep_lines: bool) -> Cow<'_, str> {
    let bad = |c: char| unsafe_char(c) && !(keep_lines && c == '\n');
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' if keep_lines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An error and its causes (`source()` chain) joined by ": ", leaving out a cause whose text the
/// message before it already quotes (an error type that both prints and chains its source would
/// repeat it). What the CLI and the Python package show for an error, before escaping.
pub fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("field x is zero")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("invalid model config: {0}")]
        Config(#[from] Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load model m.blob")]
    struct Load(#[source] Outer);

    #[test]
    fn a_cause_is_said_once() {
        let e = Load(Outer::from(Inner));
        assert_eq!(
            chain_text(&e),
            "cannot load model m.blob: invalid model config: field x is zero"
        );
    }

    #[test]
    fn control_characters_become_visible() {
        assert!(matches!(escape("plain text, ünïcode"), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("line\nforged: ok\r"), "line\\nforged: ok\\r");
        assert_eq!(
            escape("\u{202e}txt.exe\u{7f}\u{85}"),
            "\\u{202e}txt.exe\\x7f\\x85"
        );
        assert!(!escape("\x07\x08\t\0").chars().any(|c| c.is_control()));
        assert_eq!(escape_keep_lines("a\nb\x1bc"), "a\nb\\x1bc");
    }
}
