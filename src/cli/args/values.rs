//! How the command line reads a text value: a leading hyphen taken as written unless the value looks like a
//! flag ([`text`]), and the escapes a shell makes hard to type ([`unescape`]).

/// A text value (a prompt, a stop, a separator, a replay): one that begins with a hyphen is taken as written
/// (`--stop "- - -"`, `--replay "- item"`, the prompt `"- - -"`), unless it looks like a flag (`--json`,
/// `-n`: a hyphen or two, then a word): that is refused, so a flag left without its value, or a mistyped
/// flag, is never taken as text. `\-` writes a leading hyphen that would look like a flag (`\-x`).
pub fn text(s: &str) -> Result<String, String> {
    let word = s.strip_prefix("--").or_else(|| s.strip_prefix('-'));
    if let Some(word) = word
        && word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{s:?} looks like a flag, not a value; give the value after the flag that takes it \
             (write \\{s} for this text itself)"
        ));
    }
    Ok(s.to_string())
}

/// Interprets the escapes a shell makes hard to type: \n, \t, \r, \\, and \- for a hyphen (anything else
/// is kept as written).
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('-') => out.push('-'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_interpreted() {
        assert_eq!(unescape(r"\nuser:"), "\nuser:");
        assert_eq!(unescape(r"a\tb\\n\q"), "a\tb\\n\\q");
        assert_eq!(unescape(r"\-x"), "-x");
    }

    #[test]
    fn text_values_may_begin_with_a_hyphen_but_not_look_like_a_flag() {
        for ok in [
            "- - -", "- item", "-", "---", "-1", "--", "-> x", r"\-x", "user:",
        ] {
            assert_eq!(text(ok).as_deref(), Ok(ok), "{ok:?}");
        }
        for flag in ["--json", "-n", "--max-tokens", "--jsn", "-abc"] {
            assert!(
                text(flag).unwrap_err().contains("looks like a flag"),
                "{flag:?}"
            );
        }
    }
}
