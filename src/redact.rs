//! Taking credentials out of text before anyone sees it: error messages, log lines,
//! `/health`.
//!
//! Two tools, used together. [`text`] knows the shapes credentials come in: the user
//! info of a URL (`scheme://user:password@host`, or a token as `https://token@host`) and
//! `key=value` pairs whose key names a secret (`password=`, `sslpassword=`, `token=`...),
//! as in libpq DSNs and URL queries (read by the one libpq lexer, `conninfo.rs`).
//! [`Secrets`] knows the values themselves, taken from the configuration, and blots them
//! out wherever they appear, whatever the shape around them: the last line of defence
//! for text the service did not write (a driver's error, a server's message).
//! [`quoted_names_only`] is for a driver's errors, which quote what they refused.
//!
//! All credential masking of the service is here. It imports only `conninfo.rs`, a leaf.

use std::borrow::Cow;
use std::ops::Range;

use percent_encoding::percent_decode_str;

use crate::conninfo::{self, Form, Pair};

/// What a credential is replaced with.
pub const MASK: &str = "***";

/// Values shorter than this are not blotted out by [`Secrets`]: masking every `a` of a
/// one-letter password would garble every message while protecting nothing.
pub const MIN_SECRET_LEN: usize = 4;

/// `text` with credentials masked: the password of every URL's user info
/// (`postgresql://user:***@host`; for any other scheme without a `:` the whole user info,
/// which may be a token: `https://***@host`) and the value of every `key=value` pair whose
/// key names a secret (`password=***`).
pub fn text(text: &str) -> Cow<'_, str> {
    let mut spans = user_infos(text);
    spans.extend(secret_pairs(text).into_iter().map(|pair| pair.value_span));
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_by_key(|span| span.start);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for span in spans {
        if span.start < copied {
            // Inside a span already masked (a `password=` in a URL's user info).
            continue;
        }
        out.push_str(&text[copied..span.start]);
        out.push_str(MASK);
        copied = span.end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Whether a `key=value` key names a secret: `password`, `sslpassword`, `passwd`, `pwd`,
/// `pass`, `secret`, `token`, `api_key` and the like, in any case.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    key == "pass"
        || [
            "password", "passwd", "pwd", "secret", "token", "apikey", "api_key",
        ]
        .iter()
        .any(|suffix| key.ends_with(suffix))
}

/// Characters that end a URL or a bare value in running text.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>')
}

/// The byte ranges of the credentials in the user info of every `scheme://...@host` in
/// `text`: the password after the first `:`, or, without one, the whole user info unless
/// the scheme is PostgreSQL's (where it is the user name). The user info runs to the last
/// `@` before the URL's query or end, so a password holding an unencoded `@` or `/` is
/// covered whole.
fn user_infos(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let scheme_end = from + found;
        let start = scheme_end + 3;
        let token_end = text[start..]
            .find(ends_token)
            .map_or(text.len(), |n| start + n);
        let token = &text[start..token_end];
        let searched = token.find(['?', '#']).map_or(token, |q| &token[..q]);
        if let Some(at) = searched.rfind('@') {
            match searched[..at].find(':') {
                Some(colon) => spans.push(start + colon + 1..start + at),
                None if !is_postgres_scheme(&text[..scheme_end]) => spans.push(start..start + at),
                None => {}
            }
        }
        from = token_end;
    }
    spans
}

/// Whether the text before `://` ends in a PostgreSQL scheme (`postgresql`, `postgres`,
/// `postgresql+asyncpg`...).
fn is_postgres_scheme(before: &str) -> bool {
    let scheme_start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    before[scheme_start..]
        .to_ascii_lowercase()
        .starts_with("postgres")
}

/// Every `key=value` of running text (spaces allowed around `=`) whose key names a
/// secret and whose value is not empty, read in [`Form::RunningText`]: a value in single
/// or double quotes runs to the closing quote, a bare one to a space, `&`, `;` or `,`; a
/// backslash escapes the next character.
fn secret_pairs(text: &str) -> Vec<Pair<'_>> {
    let mut found = Vec::new();
    let mut search = 0;
    while let Some(offset) = text[search..].find('=') {
        let eq = search + offset;
        search = eq + 1;
        let pair = conninfo::pair_at(text, eq, Form::RunningText);
        if is_secret_key(pair.key) && !pair.value_span.is_empty() {
            search = pair.value_span.end;
            found.push(pair);
        }
    }
    found
}

/// `text` with every part quoted in backticks that is not a plain name (letters, digits,
/// `_`) replaced by `(not shown)`. The PostgreSQL driver quotes the option it refuses
/// (``unknown option `...` ``); in a DSN that is not quite a URL
/// (`postgresql:/u:secret@h/db?x=1`) that "option" carries the password. Found by the
/// dsn fuzz target.
pub fn quoted_names_only(text: &str) -> String {
    let mut parts = text.split('`');
    let mut out = String::from(parts.next().unwrap_or_default());
    for (i, part) in parts.enumerate() {
        out.push('`');
        let quoted = i % 2 == 0;
        if quoted && !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str("(not shown)");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The secret values of a configuration, to blot out of any text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Longest first, so that a secret containing another is masked whole.
    values: Vec<String>,
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Adds `value` and its percent-decoded form, unless shorter than [`MIN_SECRET_LEN`].
    pub fn add(&mut self, value: &str) {
        let decoded = percent_decode_str(value).decode_utf8_lossy().into_owned();
        for candidate in [value.to_string(), decoded] {
            if candidate.chars().count() >= MIN_SECRET_LEN && !self.values.contains(&candidate) {
                self.values.push(candidate);
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// Adds the credentials found in `text` (a DSN, a URL): the password of a URL's user
    /// info (the whole user info when it has no `:`, as a token), and the values of
    /// `key=value` pairs whose key names a secret, read both as running text (a URL's
    /// query) and as a libpq connection string (where `&`, `;` and `,` belong to the
    /// value), each as written and as meant (quotes and escapes resolved).
    pub fn add_found_in(&mut self, text: &str) {
        for span in user_infos(text) {
            self.add(&text[span]);
        }
        let in_connection_string = conninfo::pairs(text)
            .into_iter()
            .filter(|pair| is_secret_key(pair.key));
        for pair in secret_pairs(text).into_iter().chain(in_connection_string) {
            let written = &text[pair.value_span];
            let unquoted = written
                .strip_prefix(['\'', '"'])
                .map_or(written, |v| v.strip_suffix(['\'', '"']).unwrap_or(v));
            self.add(unquoted);
            self.add(&pair.value);
        }
    }

    /// Whether there is nothing to blot out.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced by [`MASK`], and credentials masked by
    /// shape as [`text`] does.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = self::text(text);
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), MASK));
            }
        }
        out
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

/// A writer that scrubs what goes through it, for the log's output: each write is
/// expected to be whole lines (as the log queue writes them).
pub struct ScrubbingWriter<W> {
    inner: W,
    secrets: Secrets,
}

impl<W: std::io::Write> ScrubbingWriter<W> {
    /// Wraps `inner`, blotting out `secrets` (and credentials by shape).
    pub fn new(inner: W, secrets: Secrets) -> ScrubbingWriter<W> {
        ScrubbingWriter { inner, secrets }
    }
}

impl<W: std::io::Write> std::io::Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let scrubbed = self.secrets.scrub(&text);
        self.inner.write_all(scrubbed.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_and_tokens_whole() {
        for (raw, want) in [
            (
                "cannot fetch ftp://u:hunter2@h/x now",
                "cannot fetch ftp://u:***@h/x now",
            ),
            (
                "postgresql://u:hun@ter2@h:5/db",
                "postgresql://u:***@h:5/db",
            ),
            ("at postgresql://user@h:5/db", "at postgresql://user@h:5/db"),
            (
                "(POSTGRES+asyncpg://u:pw@h/db)",
                "(POSTGRES+asyncpg://u:***@h/db)",
            ),
            ("http://u:hun/ter2@h/p?x=y@z", "http://u:***@h/p?x=y@z"),
            ("https://TOKEN@h", "https://***@h"),
            (
                "\"http://a:b@h\" and 'ws://c:d@i'",
                "\"http://a:***@h\" and 'ws://c:***@i'",
            ),
            ("http://h/p no credentials", "http://h/p no credentials"),
            ("trailing ://", "trailing ://"),
        ] {
            assert_eq!(text(raw), want, "{raw}");
        }
        assert!(matches!(text("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn secret_key_values_are_masked_in_dsns_and_queries() {
        for (raw, want) in [
            (
                "host=h password=hunter2 port=5",
                "host=h password=*** port=5",
            ),
            (
                "host=h password = 'hun ter\\'2' dbname=d",
                "host=h password = *** dbname=d",
            ),
            (
                "postgresql://h/db?sslpassword=hunter2&sslmode=require",
                "postgresql://h/db?sslpassword=***&sslmode=require",
            ),
            ("x?PASSWORD=a;b", "x?PASSWORD=***;b"),
            ("api_key=abc, token=\"t t\"", "api_key=***, token=***"),
            ("user=u dbname=password", "user=u dbname=password"),
            ("password=", "password="),
        ] {
            assert_eq!(text(raw), want, "{raw}");
        }
    }

    #[test]
    fn both_kinds_in_one_text() {
        assert_eq!(
            text("postgresql://u:pw1@h/db?password=pw2 and more"),
            "postgresql://u:***@h/db?password=*** and more"
        );
    }

    #[test]
    fn secrets_are_found_in_dsns_and_urls_and_blotted_out_anywhere() {
        let mut secrets = Secrets::new();
        secrets.add_found_in("postgresql://u:hun%40ter2@h/db?sslpassword=s3cr3t-ssl");
        secrets.add_found_in("host=h password='kv secret' user=u");
        secrets.add_found_in("https://tok3n-only@feed/x");
        secrets.add_found_in("http://u:abc@short/x");
        secrets.add_found_in("postgresql://username-only@h/db");
        let scrubbed = secrets.scrub(
            "server said: hun@ter2 / hun%40ter2 / s3cr3t-ssl / kv secret / tok3n-only / abc \
             / username-only",
        );
        assert_eq!(
            scrubbed, "server said: *** / *** / *** / *** / *** / abc / username-only",
            "values under {MIN_SECRET_LEN} characters are left"
        );
        assert!(Secrets::new().is_empty());
        assert!(!format!("{secrets:?}").contains("ter2"));
    }

    #[test]
    fn a_connection_string_password_is_known_whole_whatever_it_holds() {
        // In a key=value DSN, `;`, `,` and `&` belong to the value; running text would
        // end it there and leave the rest of the password to be shown.
        let mut secrets = Secrets::new();
        secrets.add_found_in("host=h password=p4ss;w0rd,x&y user=u");
        secrets.add_found_in(r"host=h sslpassword=ssl\ pa55 user=u");
        assert_eq!(
            secrets.scrub("echoed: p4ss;w0rd,x&y / ssl pa55"),
            "echoed: *** / ***"
        );
        // By shape, an escaped space does not end the value either.
        assert_eq!(
            text(r"host=h password=hun\ ter2 port=5"),
            "host=h password=*** port=5"
        );
    }

    #[test]
    fn only_plain_names_stay_quoted() {
        assert_eq!(
            quoted_names_only("unknown option `frobnicate` near `u:hunter2@h/db?x`"),
            "unknown option `frobnicate` near `(not shown)`"
        );
        assert_eq!(quoted_names_only("no quotes"), "no quotes");
    }

    #[test]
    fn the_scrubbing_writer_masks_each_line() {
        use std::io::Write;
        let mut secrets = Secrets::new();
        secrets.add("hunter2");
        let mut out = Vec::new();
        {
            let mut writer = ScrubbingWriter::new(&mut out, secrets);
            writer
                .write_all(b"[WARN] refused: hunter2 at ftp://u:x@h/\n")
                .unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[WARN] refused: *** at ftp://u:***@h/\n"
        );
    }
}
