//! libpq's `key = value` form (`host=db port = 5432 password='a b\'c'`): the one lexer for
//! it, for the two places that read it.
//!
//! The DSN parser reads a whole connection string with it ([`pairs`]), as libpq does: keys
//! run to white space or `=`, spaces may stand around `=`, a value is bare (to the next
//! white space) or in single quotes, and a backslash takes the next character as it is.
//! Redaction reads the pair around any `=` of running text with it ([`pair_at`] in the
//! [`Form::RunningText`] form), where the same values also come in double quotes and end
//! at the `&`, `;` or `,` that separate pairs in URL queries and messages.
//!
//! A leaf: it imports nothing from the crate.

use std::ops::Range;

/// Where a `key=value` pair is read from; the two differ only in what quotes a value, what
/// ends a bare one, and what a key is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A connection string, as libpq reads it: `'` quotes, white space ends a bare value,
    /// and a key is anything up to white space or `=`.
    ConnectionString,
    /// Running text (a log line, an error message, a URL query): `'` or `"` quotes, a bare
    /// value also ends at `&`, `;` or `,`, and a key is letters, digits, `_`, `-` and `.`.
    RunningText,
}

impl Form {
    fn quotes_with(self, c: char) -> bool {
        match self {
            Form::ConnectionString => c == '\'',
            Form::RunningText => matches!(c, '\'' | '"'),
        }
    }

    fn ends_bare_value(self, c: char) -> bool {
        c.is_whitespace() || (self == Form::RunningText && matches!(c, '&' | ';' | ','))
    }

    fn in_key(self, c: char) -> bool {
        match self {
            Form::ConnectionString => !c.is_whitespace() && c != '=',
            Form::RunningText => c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'),
        }
    }
}

/// One `key = value` pair, as found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair<'a> {
    /// The key as written (possibly empty).
    pub key: &'a str,
    /// The value, its quotes and backslash escapes resolved.
    pub value: String,
    /// Where the value is written, its quotes included; empty for an empty bare value.
    pub value_span: Range<usize>,
    /// Where the whole pair is written, from the key's first byte to the value's last.
    pub span: Range<usize>,
    /// False for a quoted value whose closing quote is missing (it runs to the end).
    pub closed: bool,
}

/// The pair around the `=` at byte `eq` of `text`, read in `form`: the key is the run of
/// key characters before it (spaces between them and `=` allowed), the value starts after
/// any spaces that follow it.
pub fn pair_at(text: &str, eq: usize, form: Form) -> Pair<'_> {
    pair_after(text, 0, eq, form)
}

/// [`pair_at`], with the key starting at byte `from` at the earliest.
fn pair_after(text: &str, from: usize, eq: usize, form: Form) -> Pair<'_> {
    let before = text[..eq].trim_end();
    let key_start = before[from.min(before.len())..]
        .char_indices()
        .rev()
        .find(|&(_, c)| !form.in_key(c))
        .map_or(from.min(before.len()), |(i, c)| from + i + c.len_utf8());
    let after = &text[eq + 1..];
    let value_start = eq + 1 + (after.len() - after.trim_start().len());
    let (value, end, closed) = value_at(text, value_start, form);
    Pair {
        key: &before[key_start..],
        value,
        value_span: value_start..end,
        span: key_start..end,
        closed,
    }
}

/// The value written from byte `start`: what it says, where it ends, and whether a quoted
/// value was closed.
fn value_at(text: &str, start: usize, form: Form) -> (String, usize, bool) {
    let mut chars = text[start..].char_indices().map(|(i, c)| (start + i, c));
    let quote = text[start..]
        .chars()
        .next()
        .filter(|&c| form.quotes_with(c));
    if quote.is_some() {
        chars.next();
    }
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            if let Some((_, escaped)) = chars.next() {
                value.push(escaped);
            }
        } else if Some(c) == quote {
            return (value, i + c.len_utf8(), true);
        } else if quote.is_none() && form.ends_bare_value(c) {
            return (value, i, true);
        } else {
            value.push(c);
        }
    }
    (value, text.len(), quote.is_none())
}

/// The pairs of a connection string in libpq's keyword form, in order. Reading stops at
/// the first text that is not a pair (a word without `=`, an unclosed quote): what follows
/// is for the driver to parse and to report.
pub fn pairs(text: &str) -> Vec<Pair<'_>> {
    let mut pairs = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find('=') {
        let eq = from + found;
        if text[from..eq].split_whitespace().nth(1).is_some() {
            return pairs;
        }
        // The key starts after the previous value, even where that ends in a quote.
        let pair = pair_after(text, from, eq, Form::ConnectionString);
        if !pair.closed {
            return pairs;
        }
        from = pair.span.end;
        pairs.push(pair);
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<(&str, String)> {
        pairs(text)
            .into_iter()
            .map(|pair| (pair.key, pair.value))
            .collect()
    }

    fn owned(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|&(k, v)| (k, v.to_string())).collect()
    }

    #[test]
    fn a_connection_string_is_read_as_libpq_reads_it() {
        assert_eq!(
            read(r"host=h  port = 5432 password='a b\'c' user=\ u sslrootcert=/p\ q"),
            owned(&[
                ("host", "h"),
                ("port", "5432"),
                ("password", "a b'c"),
                ("user", " u"),
                ("sslrootcert", "/p q"),
            ])
        );
        // Only single quotes quote; `&`, `;` and `,` are part of a value.
        assert_eq!(
            read(r#"password="a;b,c&d" x=1"#),
            owned(&[("password", "\"a;b,c&d\""), ("x", "1")])
        );
        // An empty value at the end, and a value that is the next word after a space.
        assert_eq!(read("a= b=c d="), owned(&[("a", "b=c"), ("d", "")]));
        assert_eq!(read("  "), owned(&[]));
    }

    #[test]
    fn reading_stops_at_the_first_thing_that_is_not_a_pair() {
        assert_eq!(read("host=h junk sslmode=require"), owned(&[("host", "h")]));
        assert_eq!(read("host=h password='open"), owned(&[("host", "h")]));
        assert_eq!(read("host=h trailing"), owned(&[("host", "h")]));
        assert_eq!(read("=v"), owned(&[("", "v")]));
        assert_eq!(read("a='x'=b"), owned(&[("a", "x"), ("", "b")]));
    }

    #[test]
    fn spans_cover_the_pair_as_written() {
        let text = "a=1 password = 'x y' b=2";
        let found = pairs(text);
        assert_eq!(&text[found[1].span.clone()], "password = 'x y'");
        assert_eq!(&text[found[1].value_span.clone()], "'x y'");
        assert_eq!(&text[found[2].span.clone()], "b=2");
    }

    #[test]
    fn running_text_quotes_with_both_and_ends_bare_values_at_separators() {
        let at = |text: &'static str| {
            let pair = pair_at(text, text.find('=').unwrap(), Form::RunningText);
            (
                pair.key,
                pair.value,
                &text[pair.value_span.clone()],
                pair.closed,
            )
        };
        assert_eq!(
            at("url?PASSWORD=a;b"),
            ("PASSWORD", "a".to_string(), "a", true)
        );
        assert_eq!(
            at("(token=\"t t\", more"),
            ("token", "t t".to_string(), "\"t t\"", true)
        );
        assert_eq!(
            at("said: api_key = 'k\\'ey' ok"),
            ("api_key", "k'ey".to_string(), "'k\\'ey'", true)
        );
        assert_eq!(
            at("secret='never closed"),
            ("secret", "never closed".to_string(), "'never closed", false)
        );
        assert_eq!(at("password="), ("password", String::new(), "", true));
        assert_eq!(
            at("pwd=hun\\ ter2 next"),
            ("pwd", "hun ter2".to_string(), "hun\\ ter2", true)
        );
    }

    #[test]
    fn multibyte_text_is_cut_at_character_boundaries() {
        let text = "clé=välue naïve password='pässwörd'";
        let eq = text.rfind('=').unwrap();
        let pair = pair_at(text, eq, Form::RunningText);
        assert_eq!(pair.key, "password");
        assert_eq!(pair.value, "pässwörd");
        assert_eq!(read("clé=välue mot='pässe'").len(), 2);
    }
}
