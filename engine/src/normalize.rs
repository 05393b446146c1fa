//! Sign-in name normalisation: one account, one counter.
//!
//! A name is trimmed, put in Unicode NFKC and lower-cased, as the directory matches it, so that
//! ` ALICE@Contoso.com`, its fullwidth form and `alice@contoso.com` are one account. Invariant:
//! `normalize(normalize(x)) == normalize(x)`, and the result is never empty (an empty result is an
//! error). A name made only of invisible characters (default-ignorable code points such as
//! U+200B, U+2060, U+FE0F) and domain separators (`@`, `\`, `/`) names no account and is
//! refused like an empty one. Pure ASCII names, the common case, take a fast path with no
//! Unicode tables.

use crate::error::{Error, Result};
use unicode_normalization::UnicodeNormalization;

/// The longest normalised name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Normalises `name` into `out` (cleared first), so callers can reuse one buffer.
pub fn normalize_into(name: &str, out: &mut String) -> Result<()> {
    out.clear();
    if name.len() > MAX_NAME_BYTES * 4 {
        return Err(too_long());
    }
    if name.is_ascii() {
        let t = name.trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control());
        // One copy, then lower-case in place: no per-character UTF-8 encoding.
        out.push_str(t);
        out.make_ascii_lowercase();
        // The ASCII form of the "names an account" test below: a printable non-separator.
        if !t
            .bytes()
            .any(|b| b > b' ' && b != 0x7f && !matches!(b, b'@' | b'\\' | b'/'))
        {
            return Err(empty_name());
        }
    } else {
        // NFKC first: it turns ideographic and no-break spaces into plain ones, then trim them.
        let nfkc: String = name.nfkc().collect();
        let lower = nfkc.trim_matches(is_trimmed).to_lowercase();
        // Lower-casing can leave a string that is not NFKC again (rare); normalise once more.
        out.extend(lower.nfkc());
        let trimmed_len = out.trim_end_matches(is_trimmed).len();
        out.truncate(trimmed_len);
        let lead = out.len() - out.trim_start_matches(is_trimmed).len();
        out.drain(..lead);
        // `any` stops at the first real character, almost always the first one.
        if !out
            .chars()
            .any(|c| !is_trimmed(c) && !is_ignorable(c) && !is_separator(c))
        {
            return Err(empty_name());
        }
    }
    if out.len() > MAX_NAME_BYTES {
        return Err(too_long());
    }
    Ok(())
}

/// Normalises `name` into a new string.
///
/// # Examples
/// ```
/// use portcullis_engine::normalize::normalize;
/// assert_eq!(normalize(" ALICE@Contoso.com").unwrap(), "alice@contoso.com");
/// assert_eq!(normalize("ａｌｉｃｅ@contoso.com").unwrap(), "alice@contoso.com");
/// ```
pub fn normalize(name: &str) -> Result<String> {
    let mut out = String::with_capacity(name.len());
    normalize_into(name, &mut out)?;
    Ok(out)
}

fn is_trimmed(c: char) -> bool {
    c.is_whitespace() || c.is_control() || c == '\u{200b}' || c == '\u{feff}'
}

/// Unicode default-ignorable code points (DerivedCoreProperties.txt): rendered as nothing.
fn is_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}' | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e0fff}')
}

/// The separators of `user@domain`, `DOMAIN\user` and `domain/user`.
fn is_separator(c: char) -> bool {
    matches!(c, '@' | '\\' | '/')
}

fn empty_name() -> Error {
    Error::InvalidInput {
        field: "user",
        reason: "the name is empty after trimming and normalisation".into(),
    }
}

fn too_long() -> Error {
    Error::InvalidInput {
        field: "user",
        reason: format!("longer than {MAX_NAME_BYTES} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_of_one_name_are_one_account() {
        let want = "kayla.dalcott@contoso.com";
        for v in [
            "kayla.dalcott@contoso.com",
            " KAYLA.DALCOTT@CONTOSO.COM ",
            "\tKayla.Dalcott@contoso.com",
            "\u{a0}kayla.dalcott@contoso.com\u{3000}",
            "ｋａｙｌａ.ｄａｌｃｏｔｔ@contoso.com",
            "\u{212a}ayla.dalcott@contoso.com",
            "kayla.dalcott@contoſo.com",
            "𝐤𝐚𝐲𝐥𝐚.dalcott@contoso.com",
        ] {
            assert_eq!(normalize(v).unwrap(), want, "variant {v:?}");
        }
        assert_eq!(normalize("ﬁona@x.org").unwrap(), "fiona@x.org");
    }

    #[test]
    fn refuses_names_that_normalise_to_nothing() {
        for v in [
            "",
            "   ",
            "\t\u{3000}\u{a0}",
            "\u{200b}",
            "\0\0",
            "\u{2060}\u{fe0f}\u{ad}",
            "@",
            " \\ ",
            "\u{200b}@\u{200d}",
            "\u{202e}/\u{e0041}",
        ] {
            assert!(normalize(v).is_err(), "{v:?} should be refused");
        }
    }

    #[test]
    fn keeps_names_with_one_visible_character_among_invisible_ones() {
        assert_eq!(normalize("\u{2060}A@").unwrap(), "\u{2060}a@");
        assert_eq!(normalize("@x").unwrap(), "@x");
        assert_eq!(
            normalize("\u{202e}\u{5d0}\u{301}").unwrap(),
            "\u{202e}\u{5d0}\u{301}"
        );
        assert_eq!(normalize("😀").unwrap(), "😀");
    }

    #[test]
    fn refuses_overlong_names() {
        assert!(normalize(&"a".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert!(normalize(&"é".repeat(1 << 20)).is_err());
        assert!(normalize(&"a".repeat(MAX_NAME_BYTES)).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn normalisation_is_idempotent(s in "\\PC{0,40}") {
            if let Ok(once) = normalize(&s) {
                proptest::prop_assert_eq!(normalize(&once).unwrap(), once);
            }
        }

        #[test]
        fn the_ascii_path_refuses_exactly_the_names_the_general_rule_refuses(
            s in "[\\x00-\\x7f]{0,12}"
        ) {
            let names_one = s
                .chars()
                .any(|c| !is_trimmed(c) && !is_ignorable(c) && !is_separator(c));
            proptest::prop_assert_eq!(normalize(&s).is_ok(), names_one, "{:?}", s);
        }
    }
}
