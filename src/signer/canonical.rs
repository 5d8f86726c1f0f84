//! The encoding rules of SDK-HMAC-SHA256 (SPEC §2.6): `unquote`, `quote`,
//! the canonical URI, the canonical query string and header-value trimming,
//! each written to match Python's `urllib.parse` as the official SDK calls it.

use std::borrow::Cow;

/// Bytes `quote(s, safe='~')` leaves as they are: `A-Z a-z 0-9 _ . - ~`.
/// With `SLASH`, `/` is kept too: quoting a whole path that way is the same
/// as splitting it on `/`, quoting each segment and joining them again.
const fn unreserved_table(slash: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'_' | b'.' | b'-' | b'~')
            || (slash && c == b'/');
        b += 1;
    }
    table
}

const UNRESERVED: [bool; 256] = unreserved_table(false);
const UNRESERVED_OR_SLASH: [bool; 256] = unreserved_table(true);

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// `urllib.parse.quote(s, safe='~')`: UTF-8, every byte but the unreserved
/// ones as `%XX` with upper-case hex. Appends to `out`.
pub fn quote_into(s: &str, out: &mut String) {
    quote_with(s, out, &UNRESERVED);
}

fn quote_with(s: &str, out: &mut String, keep: &[bool; 256]) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !keep[b as usize] {
            // A non-empty run of kept (ASCII) bytes starts on a char
            // boundary; an empty one may sit inside a multi-byte character.
            if start < i {
                out.push_str(&s[start..i]);
            }
            out.push('%');
            out.push(HEX_UPPER[(b >> 4) as usize] as char);
            out.push(HEX_UPPER[(b & 0xf) as usize] as char);
            start = i + 1;
        }
    }
    if start < bytes.len() {
        out.push_str(&s[start..]);
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `urllib.parse.unquote_to_bytes` on an ASCII run: `%XX` (either case) is
/// decoded; a malformed escape (`%zz`, a `%` at the end) is kept as written.
fn percent_decode_ascii(run: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < run.len() {
        if run[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                run.get(i + 1).copied().and_then(hex_value),
                run.get(i + 2).copied().and_then(hex_value),
            )
        {
            {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(run[i]);
        i += 1;
    }
}

/// `urllib.parse.unquote(s)` (UTF-8, `errors='replace'`): maximal ASCII runs
/// are percent-decoded and read as UTF-8 with U+FFFD for invalid sequences;
/// non-ASCII characters pass through. `+` is **not** a space.
pub fn unquote(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut buf = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if bytes[i].is_ascii() {
            while i < bytes.len() && bytes[i].is_ascii() {
                i += 1;
            }
            buf.clear();
            percent_decode_ascii(&bytes[start..i], &mut buf);
            out.push_str(&String::from_utf8_lossy(&buf));
        } else {
            while i < bytes.len() && !bytes[i].is_ascii() {
                i += 1;
            }
            // Both ends sit next to ASCII bytes (or the ends of `s`), so they
            // are char boundaries.
            out.push_str(&s[start..i]);
        }
    }
    Cow::Owned(out)
}

/// CanonicalURI (SPEC §2.6, quirks 1 and 2): decode the whole path once,
/// split on `/` (so `%2F` becomes a separator), quote each segment, and end
/// with `/`. No dot-segment removal, no merging of `//`.
pub fn canonical_uri_into(path: &str, out: &mut String) {
    let start = out.len();
    let decoded = unquote(path);
    quote_with(&decoded, out, &UNRESERVED_OR_SLASH);
    if out.len() == start || !out.ends_with('/') {
        out.push('/');
    }
}

/// Parses a raw query with the apig_sdk rule (SPEC §2.6): split on `&`, split
/// each part on the first `=`, `unquote` both sides (no `+` → space), a part
/// without `=` gets the value `""`, parts with an empty key are dropped.
pub fn parse_query(raw: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    // Byte scans rather than `str::split`: queries are short, and `&` and `=`
    // are ASCII, so every cut is on a char boundary.
    let position = |s: &str, byte: u8| s.bytes().position(|b| b == byte);
    let mut pairs = Vec::with_capacity(raw.bytes().filter(|&b| b == b'&').count() + 1);
    let mut rest = raw;
    loop {
        let (part, next) = match position(rest, b'&') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (k, v) = match position(part, b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, ""),
        };
        if !k.is_empty() {
            pairs.push((unquote(k), unquote(v)));
        }
        match next {
            Some(n) => rest = n,
            None => return pairs,
        }
    }
}

/// CanonicalQueryString (SPEC §2.6, quirks 3–5): pairs sorted on the decoded
/// key, then the decoded value, by code point (Rust's `str` order is the same
/// as Python's); every pair written as `quote(k)=quote(v)`, joined with `&`.
pub fn canonical_query_into(raw: &str, out: &mut String) {
    let mut pairs = parse_query(raw);
    pairs.sort_unstable();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        quote_into(k, out);
        out.push('=');
        quote_into(v, out);
    }
}

/// True for what Python's `str.strip()` removes: Unicode white space, which is
/// Rust's `char::is_whitespace` plus the separators U+001C..U+001F.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A header value as the canonical request holds it (SPEC quirk 10): trimmed
/// at both ends with Python's `str.strip()`, inner white space and case kept.
pub fn trim_header_value(value: &str) -> &str {
    value.trim_matches(is_python_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(p: &str) -> String {
        let mut s = String::new();
        canonical_uri_into(p, &mut s);
        s
    }

    fn query(q: &str) -> String {
        let mut s = String::new();
        canonical_query_into(q, &mut s);
        s
    }

    /// Every row of the table in SPEC §2.6 "CanonicalURI".
    #[test]
    fn canonical_uri_matches_the_spec_table() {
        let table = [
            ("/", "/"),
            ("/a", "/a/"),
            ("/a/", "/a/"),
            ("/a%2Fb", "/a/b/"),
            ("/a%2F", "/a/"),
            ("//a//", "//a//"),
            ("/a/./b/../c", "/a/./b/../c/"),
            ("/a+b", "/a%2Bb/"),
            ("/100%25", "/100%25/"),
            ("/%7Euser", "/~user/"),
            ("/%e4%b8%ad", "/%E4%B8%AD/"),
            ("/对象", "/%E5%AF%B9%E8%B1%A1/"),
            ("/a:b@c!$'()*,;=", "/a%3Ab%40c%21%24%27%28%29%2A%2C%3B%3D/"),
        ];
        for (input, want) in table {
            assert_eq!(uri(input), want, "path {input:?}");
        }
    }

    #[test]
    fn unquote_keeps_malformed_escapes_and_replaces_invalid_utf8() {
        assert_eq!(unquote("%zz"), "%zz");
        assert_eq!(unquote("a%"), "a%");
        assert_eq!(unquote("a%4"), "a%4");
        assert_eq!(unquote("%FF"), "\u{fffd}");
        assert_eq!(unquote("%41%62"), "Ab");
        assert_eq!(unquote("a+b"), "a+b");
        assert_eq!(uri("/%zz"), "/%25zz/");
        assert_eq!(uri("/%FF"), "/%EF%BF%BD/");
    }

    #[test]
    fn unquote_decodes_ascii_runs_around_literal_unicode() {
        assert_eq!(unquote("对%20象"), "对 象");
        assert_eq!(uri("/对%2F象"), "/%E5%AF%B9/%E8%B1%A1/");
    }

    #[test]
    fn empty_path_is_the_root() {
        assert_eq!(uri(""), "/");
    }

    #[test]
    fn query_rules_from_the_spec() {
        assert_eq!(query("q=a+b"), "q=a%2Bb");
        assert_eq!(query("q=a%20b"), "q=a%20b");
        assert_eq!(query("flag"), "flag=");
        assert_eq!(query("q=a=b"), "q=a%3Db");
        assert_eq!(query("=x&&a=1"), "a=1");
        assert_eq!(query(""), "");
        assert_eq!(query("k=&j"), "j=&k=");
    }

    #[test]
    fn query_sorts_on_decoded_keys_then_values() {
        // `%2F` (0x25) sorts before `-` encoded, but `/` (0x2F) after `-` (0x2D).
        assert_eq!(query("a%2Fb=1&a-b=2"), "a-b=2&a%2Fb=1");
        // A key sorts before longer keys it prefixes; upper case first.
        assert_eq!(query("a%3D=1&a-=2&a=3&B=4"), "B=4&a=3&a-=2&a%3D=1");
        // Values compare as strings; duplicates are kept.
        assert_eq!(query("n=2&n=10&n=2"), "n=10&n=2&n=2");
    }

    #[test]
    fn query_encodes_reserved_characters_in_values() {
        assert_eq!(
            query("v=%2B%3D%26%2A%2F~%20%E4%B8%AD"),
            "v=%2B%3D%26%2A%2F~%20%E4%B8%AD"
        );
        assert_eq!(query("v=*/!'()"), "v=%2A%2F%21%27%28%29");
    }

    #[test]
    fn header_values_trim_like_python_strip() {
        assert_eq!(trim_header_value("  a  b \t"), "a  b");
        assert_eq!(trim_header_value("\u{a0}x\u{3000}"), "x");
        assert_eq!(trim_header_value("\u{1c}\u{1f}x\u{85}"), "x");
        assert_eq!(trim_header_value("\u{200b}x"), "\u{200b}x");
        assert_eq!(trim_header_value("MiXeD"), "MiXeD");
    }
}
