//! Parser for FXCM "ratesjson" bodies.
//!
//! The format is JSONP around almost-JSON:
//! `null({"Rates":[{"Symbol":"EURUSD","Bid":"1.09107","Ask":"1.0913",},]});`
//! — a callback wrapper, trailing commas inside objects and arrays, prices as strings.
//!
//! Why a small hand-written tokenizer instead of "strip trailing commas, then serde_json":
//! the stripping pass would already have to be a full string-aware scanner (quotes,
//! escapes), it would copy the whole body once more, and we would still need a second
//! pass to find the wrapper and a tolerant number-or-string field type. One linear pass
//! over the borrowed bytes does all of it: every byte is looked at a bounded number of
//! times (no backtracking, so never quadratic), strings are borrowed slices of the body
//! (only a string that contains escapes and is actually needed gets decoded into a
//! small `String`), nesting is bounded by [`MAX_DEPTH`], and unknown symbols and fields
//! are skipped without being built into any value tree.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::asset::Asset;
use crate::feed::{FeedError, Fetched, Quote};

/// Deepest nesting of objects and arrays accepted (the outer object counts as 1);
/// the real format needs 3.
/// Bounds the recursion of the parser, so hostile bodies cannot exhaust the stack.
pub const MAX_DEPTH: usize = 32;

/// Parses a ratesjson body and keeps the quotes of `assets` (matched by `Asset::name`
/// against each entry's `Symbol`).
///
/// Accepts the JSONP wrapper (any callback name, optional `;`) or plain JSON, trailing
/// commas, and prices as strings or numbers. The value of a quote is `(Bid + Ask) / 2`.
/// An entry of a wanted symbol that is unusable (missing or non-numeric Bid/Ask, not
/// finite, not positive, wrong type) is skipped and counted in `rejected`; entries of
/// other symbols are ignored. If a symbol appears more than once, its first usable
/// entry wins. Quotes come out in the order of `assets`.
///
/// A body that is not valid UTF-8, is empty, truncated, nested deeper than
/// [`MAX_DEPTH`], syntactically broken, or has no `Rates` array is a
/// [`FeedError::Parse`].
pub fn parse(body: &[u8], assets: &[Asset]) -> Result<Fetched, FeedError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        FeedError::Parse(format!(
            "body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;

    let mut wanted: HashMap<&str, Slot> = assets
        .iter()
        .map(|a| (a.name.as_str(), Slot::default()))
        .collect();
    let mut rejected = 0u32;

    let mut cursor = Cursor::new(text);
    cursor
        .document(&mut |entry| match wanted.get_mut(entry.symbol.as_ref()) {
            None => {}
            Some(slot) if slot.value.is_some() => {}
            Some(slot) => match entry.value {
                Some(value) => slot.value = Some(value),
                None => rejected = rejected.saturating_add(1),
            },
        })
        .map_err(|e| FeedError::Parse(e.to_string()))?;

    let quotes = assets
        .iter()
        .filter_map(|a| {
            let value = wanted.get(a.name.as_str())?.value?;
            Some(Quote {
                asset_id: a.id,
                value,
            })
        })
        .collect();
    Ok(Fetched { quotes, rejected })
}

/// What has been found for one wanted symbol so far.
#[derive(Default)]
struct Slot {
    value: Option<f64>,
}

/// One entry of the `Rates` array whose `Symbol` could be read.
struct Entry<'a> {
    symbol: Cow<'a, str>,
    /// `(Bid + Ask) / 2` if the entry is usable.
    value: Option<f64>,
}

/// A syntax problem, with the byte offset where it was noticed.
#[derive(Debug)]
struct SyntaxError {
    what: &'static str,
    at: usize,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

type Parsed<T> = Result<T, SyntaxError>;

/// A string token: the raw text between the quotes, decoded only on demand.
#[derive(Clone, Copy)]
struct RawStr<'a> {
    raw: &'a str,
    has_escapes: bool,
}

impl<'a> RawStr<'a> {
    /// The string's value; `None` if an escape is not a valid Unicode scalar
    /// (a lone surrogate).
    fn decode(self) -> Option<Cow<'a, str>> {
        if !self.has_escapes {
            return Some(Cow::Borrowed(self.raw));
        }
        let mut out = String::with_capacity(self.raw.len());
        let mut chars = self.raw.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            // The tokenizer already checked every escape's shape.
            match chars.next()? {
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hi = hex4(&mut chars)?;
                    let code = if (0xD800..0xDC00).contains(&hi) {
                        if chars.next()? != '\\' || chars.next()? != 'u' {
                            return None;
                        }
                        let lo = hex4(&mut chars)?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return None;
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        hi
                    };
                    out.push(char::from_u32(code)?);
                }
                other => out.push(other), // '"', '\\', '/'
            }
        }
        Some(Cow::Owned(out))
    }
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut v = 0;
    for _ in 0..4 {
        v = v * 16 + chars.next()?.to_digit(16)?;
    }
    Some(v)
}

/// A scalar field value as written in the body; containers are skipped, not kept.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Str(RawStr<'a>),
    /// The raw text of a number token, not yet validated.
    Num(&'a str),
    /// `true`, `false`, `null`, an object or an array.
    Other,
}

/// A price field: a positive finite number, written as a JSON number or a string
/// holding one. Anything else is `None`.
fn price(v: Option<Scalar<'_>>) -> Option<f64> {
    let text = match v? {
        Scalar::Num(n) => Cow::Borrowed(n),
        Scalar::Str(s) => s.decode()?,
        Scalar::Other => return None,
    };
    if !is_json_number(&text) {
        return None;
    }
    let x: f64 = text.parse().ok()?;
    (x.is_finite() && x > 0.0).then_some(x)
}

/// The JSON number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
/// Rust's float parser alone would also take `inf`, `NaN`, `+1` and `.5`.
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// Single forward pass over the body.
struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Cursor {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
        }
    }

    fn err<T>(&self, what: &'static str) -> Parsed<T> {
        Err(SyntaxError { what, at: self.pos })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Consumes `want` (after whitespace) or fails with `what`.
    fn expect(&mut self, want: u8, what: &'static str) -> Parsed<()> {
        self.skip_ws();
        match self.peek() {
            Some(c) if c == want => {
                self.pos += 1;
                Ok(())
            }
            None => self.err("unexpected end of body"),
            Some(_) => self.err(what),
        }
    }

    /// The whole body: `callback( {...} );` or `{...}`, whitespace around.
    fn document(&mut self, on_entry: &mut dyn FnMut(Entry<'a>)) -> Parsed<()> {
        self.skip_ws();
        let wrapped = match self.peek() {
            None => return self.err("empty body"),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.'))
                {
                    self.pos += 1;
                }
                self.expect(b'(', "expected '(' after the JSONP callback name")?;
                true
            }
            Some(_) => false,
        };
        self.root(on_entry)?;
        if wrapped {
            self.expect(b')', "expected ')' closing the JSONP wrapper")?;
            self.skip_ws();
            if self.peek() == Some(b';') {
                self.pos += 1;
            }
        }
        self.skip_ws();
        if self.pos != self.bytes.len() {
            return self.err("unexpected data after the rates object");
        }
        Ok(())
    }

    /// The top object; its `Rates` member is read, everything else skipped.
    fn root(&mut self, on_entry: &mut dyn FnMut(Entry<'a>)) -> Parsed<()> {
        self.expect(b'{', "expected '{' starting the rates object")?;
        self.enter()?;
        let start = self.pos;
        let mut seen_rates = false;
        self.members(|cur, key| {
            if key.raw != "Rates" {
                return cur.skip_value();
            }
            if seen_rates {
                return cur.err("duplicate \"Rates\" member");
            }
            seen_rates = true;
            cur.skip_ws();
            if cur.peek() != Some(b'[') {
                return cur.err("\"Rates\" is not an array");
            }
            cur.pos += 1;
            cur.rates(on_entry)
        })?;
        self.leave();
        if !seen_rates {
            return Err(SyntaxError {
                what: "no \"Rates\" array in the rates object",
                at: start,
            });
        }
        Ok(())
    }

    /// The elements of `Rates` (after its `[`). Non-object elements are skipped.
    fn rates(&mut self, on_entry: &mut dyn FnMut(Entry<'a>)) -> Parsed<()> {
        self.enter()?;
        self.elements(b']', |cur| {
            cur.skip_ws();
            if cur.peek() != Some(b'{') {
                return cur.skip_value();
            }
            cur.pos += 1;
            if let Some(entry) = cur.entry()? {
                on_entry(entry);
            }
            Ok(())
        })?;
        self.leave();
        Ok(())
    }

    /// One rate object (after its `{`). `None` if it has no readable `Symbol`:
    /// such an entry cannot be attributed to any asset.
    fn entry(&mut self) -> Parsed<Option<Entry<'a>>> {
        self.enter()?;
        let (mut symbol, mut bid, mut ask) = (None, None, None);
        let mut duplicate = false;
        self.members(|cur, key| {
            let slot = match key.raw {
                "Symbol" => &mut symbol,
                "Bid" => &mut bid,
                "Ask" => &mut ask,
                _ => return cur.skip_value(),
            };
            let value = cur.scalar()?;
            if slot.is_some() {
                duplicate = true;
            } else {
                *slot = Some(value);
            }
            Ok(())
        })?;
        self.leave();

        let Some(Scalar::Str(raw)) = symbol else {
            return Ok(None);
        };
        let Some(symbol) = raw.decode() else {
            return Ok(None);
        };
        let value = match (duplicate, price(bid), price(ask)) {
            (false, Some(bid), Some(ask)) => Some((bid + ask) / 2.0).filter(|v| v.is_finite()),
            _ => None,
        };
        Ok(Some(Entry { symbol, value }))
    }

    /// Object members (after the `{`, up to and including the `}`), trailing comma
    /// allowed. `member` is called positioned after the key's `:` and must consume
    /// the value.
    fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, RawStr<'a>) -> Parsed<()>,
    ) -> Parsed<()> {
        self.elements(b'}', |cur| {
            cur.skip_ws();
            if cur.peek() != Some(b'"') {
                return if cur.peek().is_none() {
                    cur.err("unexpected end of body")
                } else {
                    cur.err("expected a quoted member name")
                };
            }
            let key = cur.string()?;
            cur.expect(b':', "expected ':' after a member name")?;
            member(cur, key)
        })
    }

    /// A comma-separated sequence ending in `close`, trailing comma allowed; the
    /// opening bracket is already consumed. `item` must consume exactly one item.
    fn elements(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Parsed<()>) -> Parsed<()> {
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        return Ok(());
                    }
                }
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return self.err("unexpected end of body"),
                Some(_) if close == b'}' => return self.err("expected ',' or '}'"),
                Some(_) => return self.err("expected ',' or ']'"),
            }
        }
    }

    fn enter(&mut self) -> Parsed<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Any value, kept only if it is a scalar (containers are skipped).
    fn scalar(&mut self) -> Parsed<Scalar<'a>> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') => Ok(Scalar::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => Ok(Scalar::Num(self.number())),
            _ => {
                self.skip_value()?;
                Ok(Scalar::Other)
            }
        }
    }

    /// Consumes one value of any kind without keeping it.
    fn skip_value(&mut self) -> Parsed<()> {
        self.skip_ws();
        match self.peek() {
            None => self.err("unexpected end of body"),
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => {
                self.number();
                Ok(())
            }
            Some(open @ (b'{' | b'[')) => {
                self.pos += 1;
                self.enter()?;
                if open == b'{' {
                    self.members(|cur, _| cur.skip_value())?;
                } else {
                    self.elements(b']', |cur| cur.skip_value())?;
                }
                self.leave();
                Ok(())
            }
            Some(_) => {
                for word in ["true", "false", "null"] {
                    if self.text[self.pos..].starts_with(word) {
                        self.pos += word.len();
                        return Ok(());
                    }
                }
                self.err("unexpected character")
            }
        }
    }

    /// A number token: the longest run of characters a JSON number can contain.
    /// Its grammar is checked only if the value is needed ([`price`]), so a
    /// malformed number spoils its entry, not the whole body.
    fn number(&mut self) -> &'a str {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// A string token (positioned on its opening quote): checks escapes and rejects
    /// raw control characters, returns the text between the quotes.
    fn string(&mut self) -> Parsed<RawStr<'a>> {
        self.pos += 1;
        let start = self.pos;
        let mut has_escapes = false;
        loop {
            match self.peek() {
                None => return self.err("unexpected end of body inside a string"),
                Some(b'"') => break,
                Some(b'\\') => {
                    has_escapes = true;
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            let hex = self.bytes.get(self.pos..self.pos + 4);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return self.err("invalid \\u escape in string");
                            }
                            self.pos += 4;
                        }
                        None => return self.err("unexpected end of body inside a string"),
                        Some(_) => return self.err("invalid escape in string"),
                    }
                }
                Some(0..=0x1f) => return self.err("control character in string"),
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.text[start..self.pos];
        self.pos += 1;
        Ok(RawStr { raw, has_escapes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets() -> Vec<Asset> {
        ["EURUSD", "USDJPY", "GBPUSD", "AUDUSD", "USDCAD"]
            .iter()
            .zip(1..)
            .map(|(name, id)| Asset {
                id,
                name: (*name).to_string(),
            })
            .collect()
    }

    fn ok(body: &str) -> Fetched {
        match parse(body.as_bytes(), &assets()) {
            Ok(f) => f,
            Err(e) => panic!("parse failed: {e}\nbody: {body}"),
        }
    }

    fn parse_err(body: &[u8]) -> String {
        match parse(body, &assets()) {
            Err(FeedError::Parse(msg)) => msg,
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    fn value_of(f: &Fetched, asset_id: i32) -> Option<f64> {
        f.quotes
            .iter()
            .find(|q| q.asset_id == asset_id)
            .map(|q| q.value)
    }

    const REAL: &str = r#"null({"Rates":[{"Symbol":"EURUSD","Bid":"1.09107","Ask":"1.0913","Spread":"2.30","ProductType":"1",},{"Symbol":"USDJPY","Bid":"151.842","Ask":"151.861","Spread":"1.90","ProductType":"1",},{"Symbol":"GBPUSD","Bid":"1.26331","Ask":"1.26358","Spread":"2.70","ProductType":"1",},{"Symbol":"XAUUSD","Bid":"2330.1","Ask":"2330.6","Spread":"50","ProductType":"4",},{"Symbol":"AUDUSD","Bid":"0.65471","Ask":"0.65489","Spread":"1.80","ProductType":"1",},{"Symbol":"USDCAD","Bid":"1.36312","Ask":"1.36336","Spread":"2.40","ProductType":"1",},]});"#;

    #[test]
    fn real_body_gives_mid_prices_in_asset_order() {
        let f = ok(REAL);
        assert_eq!(f.rejected, 0);
        let ids: Vec<i32> = f.quotes.iter().map(|q| q.asset_id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(value_of(&f, 1), Some((1.09107 + 1.0913) / 2.0));
        assert_eq!(value_of(&f, 2), Some((151.842 + 151.861) / 2.0));
        assert_eq!(value_of(&f, 5), Some((1.36312 + 1.36336) / 2.0));
    }

    #[test]
    fn plain_json_without_wrapper() {
        let f = ok(r#"{"Rates":[{"Symbol":"EURUSD","Bid":"1.5","Ask":"2.5"}]}"#);
        assert_eq!(value_of(&f, 1), Some(2.0));
        assert_eq!(f.quotes.len(), 1);
    }

    #[test]
    fn wrapper_variants() {
        let inner = r#"{"Rates":[{"Symbol":"USDJPY","Bid":"150","Ask":"152"}]}"#;
        for body in [
            format!("null({inner});"),
            format!("null({inner})"),
            format!("  \r\n\tcb_1$.x ( \n{inner}\n )  ;  \n"),
            format!("jQuery123({inner});\n"),
            format!("\u{feff}null({inner});"),
        ] {
            assert_eq!(value_of(&ok(&body), 2), Some(151.0), "body: {body}");
        }
    }

    #[test]
    fn trailing_commas_everywhere() {
        let f = ok(
            r#"null({"Other":[1,2,],"Rates":[{"Symbol":"EURUSD","Bid":"1","Ask":"3",},{"Symbol":"GBPUSD","Bid":2,"Ask":4, } , ],});"#,
        );
        assert_eq!(value_of(&f, 1), Some(2.0));
        assert_eq!(value_of(&f, 3), Some(3.0));
    }

    #[test]
    fn numbers_as_json_numbers_and_exponents() {
        let f = ok(
            r#"{"Rates":[{"Symbol":"EURUSD","Bid":1.25,"Ask":1.75},{"Symbol":"USDJPY","Bid":"1.5e2","Ask":1.52E+2}]}"#,
        );
        assert_eq!(value_of(&f, 1), Some(1.5));
        assert_eq!(value_of(&f, 2), Some(151.0));
        assert_eq!(f.rejected, 0);
    }

    #[test]
    fn missing_symbol_means_no_quote_and_is_not_rejected() {
        let f = ok(r#"null({"Rates":[{"Symbol":"EURUSD","Bid":"1","Ask":"1"}]});"#);
        assert_eq!(f.quotes.len(), 1);
        assert_eq!(value_of(&f, 2), None);
        assert_eq!(f.rejected, 0);
        let empty = ok(r#"null({"Rates":[]});"#);
        assert!(empty.quotes.is_empty());
        assert_eq!(empty.rejected, 0);
    }

    #[test]
    fn malformed_wanted_entries_are_rejected_one_by_one() {
        let body = r#"null({"Rates":[
            {"Symbol":"EURUSD","Ask":"1.1"},
            {"Symbol":"USDJPY","Bid":"abc","Ask":"150"},
            {"Symbol":"GBPUSD","Bid":"0","Ask":"1.2"},
            {"Symbol":"AUDUSD","Bid":"-0.6","Ask":"0.6"},
            {"Symbol":"USDCAD","Bid":true,"Ask":"1.3"},
            {"Symbol":"XAUUSD","Bid":"junk"},
        ]});"#;
        let f = ok(body);
        assert!(f.quotes.is_empty());
        assert_eq!(f.rejected, 5, "XAUUSD is not wanted so not counted");
    }

    #[test]
    fn more_malformed_values() {
        for (bid, ask) in [
            (r#""1e400""#, r#""1""#),
            ("1e400", "1"),
            (r#""inf""#, "1"),
            (r#""NaN""#, "1"),
            (r#""+1""#, "1"),
            (r#"".5""#, "1"),
            (r#"" 1""#, "1"),
            (r#""""#, "1"),
            ("1.2.3", "1"),
            ("null", "1"),
            ("[1]", "1"),
            (r#"{"v":1}"#, "1"),
            ("-0", "1"),
            ("1e308", "1e308"),
        ] {
            let body = format!(
                r#"{{"Rates":[{{"Symbol":"EURUSD","Bid":{bid},"Ask":{ask}}},{{"Symbol":"USDJPY","Bid":"2","Ask":"4"}}]}}"#
            );
            let f = ok(&body);
            assert_eq!(f.rejected, 1, "bid {bid} ask {ask}");
            assert_eq!(value_of(&f, 1), None, "bid {bid} ask {ask}");
            assert_eq!(value_of(&f, 2), Some(3.0), "good entry survives: {body}");
        }
    }

    #[test]
    fn entry_without_symbol_or_non_string_symbol_is_ignored() {
        let f = ok(
            r#"{"Rates":[{"Bid":"1","Ask":"2"},{"Symbol":1,"Bid":"1","Ask":"2"},null,7,"x",[],{"Symbol":"EURUSD","Bid":"1","Ask":"2"}]}"#,
        );
        assert_eq!(f.rejected, 0);
        assert_eq!(value_of(&f, 1), Some(1.5));
    }

    #[test]
    fn duplicate_symbol_first_usable_entry_wins() {
        let f = ok(
            r#"{"Rates":[{"Symbol":"EURUSD","Bid":"x","Ask":"2"},{"Symbol":"EURUSD","Bid":"1","Ask":"2"},{"Symbol":"EURUSD","Bid":"5","Ask":"7"}]}"#,
        );
        assert_eq!(f.rejected, 1);
        assert_eq!(f.quotes.len(), 1);
        assert_eq!(value_of(&f, 1), Some(1.5));
    }

    #[test]
    fn duplicate_price_keys_make_the_entry_unusable() {
        let f = ok(r#"{"Rates":[{"Symbol":"EURUSD","Bid":"1","Bid":"9","Ask":"2"}]}"#);
        assert_eq!(f.rejected, 1);
        assert!(f.quotes.is_empty());
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let f = ok(
            r#"{"Rates":[{"Symbol":"EUR\u0055SD","Bid":"\u0031","Ask":"3","Note":"a\"b\\c\/\n\ud83d\ude00"}]}"#,
        );
        assert_eq!(value_of(&f, 1), Some(2.0));
        // A lone surrogate in the symbol makes the entry unattributable, not fatal.
        let f = ok(r#"{"Rates":[{"Symbol":"EURUSD\ud800","Bid":"1","Ask":"3"}]}"#);
        assert!(f.quotes.is_empty());
        assert_eq!(f.rejected, 0);
    }

    #[test]
    fn other_members_and_nested_values_are_skipped() {
        let f = ok(
            r#"{"Meta":{"a":[true,false,null,{"b":[]}],"c":-1.5e-3},"Rates":[{"Extra":{"x":[1,{"y":"z"}]},"Symbol":"EURUSD","Bid":"1","Ask":"2"}],"After":"x"}"#,
        );
        assert_eq!(value_of(&f, 1), Some(1.5));
    }

    #[test]
    fn no_assets_wanted_gives_nothing() {
        let f = parse(REAL.as_bytes(), &[]).unwrap();
        assert_eq!(f, Fetched::default());
    }

    #[test]
    fn empty_and_whitespace_bodies() {
        assert!(parse_err(b"").contains("empty body"));
        assert!(parse_err(b"  \n ").contains("empty body"));
    }

    #[test]
    fn truncated_bodies_fail_cleanly_at_every_length() {
        // Every proper prefix of a valid body is an error, never a panic.
        for cut in 0..REAL.len() - 1 {
            let r = parse(&REAL.as_bytes()[..cut], &assets());
            assert!(
                matches!(r, Err(FeedError::Parse(_))),
                "prefix of {cut} bytes: {r:?}"
            );
        }
        // Without the trailing ';' the body is still complete.
        assert!(parse(&REAL.as_bytes()[..REAL.len() - 1], &assets()).is_ok());
        assert!(
            parse_err(br#"null({"Rates":[{"Symbol":"EURUSD","Bid":"1"#).contains("end of body")
        );
    }

    #[test]
    fn invalid_utf8_is_a_parse_error() {
        let mut body = br#"null({"Rates":[{"Symbol":"EURUSD","Bid":"1","Ask":"2"}]});"#.to_vec();
        body[20] = 0xff;
        let msg = parse_err(&body);
        assert!(msg.contains("UTF-8") && msg.contains("20"), "{msg}");
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflowing_the_stack() {
        let depth = 100_000;
        let body = format!(
            r#"{{"X":{}{},"Rates":[]}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert!(parse_err(body.as_bytes()).contains("nesting too deep"));
        let body = format!(
            r#"{{"Rates":[{{"Symbol":"EURUSD","Deep":{}}}]}}"#,
            "{\"a\":".repeat(depth)
        );
        assert!(parse_err(body.as_bytes()).contains("nesting too deep"));
        // Nesting within the bound is fine.
        let ok_depth = MAX_DEPTH - 3;
        let body = format!(
            r#"{{"Rates":[{{"Symbol":"EURUSD","Bid":"1","Ask":"2","Deep":{}{}}}]}}"#,
            "[".repeat(ok_depth),
            "]".repeat(ok_depth)
        );
        assert_eq!(value_of(&ok(&body), 1), Some(1.5));
        // One level more is over the bound.
        let body = format!(
            r#"{{"Rates":[{{"Symbol":"EURUSD","Bid":"1","Ask":"2","Deep":{}{}}}]}}"#,
            "[".repeat(ok_depth + 1),
            "]".repeat(ok_depth + 1)
        );
        assert!(parse_err(body.as_bytes()).contains("nesting too deep"));
    }

    #[test]
    fn huge_numbers_are_rejected_not_fatal() {
        let digits = "9".repeat(100_000);
        let body = format!(
            r#"{{"Rates":[{{"Symbol":"EURUSD","Bid":{digits},"Ask":"1"}},{{"Symbol":"USDJPY","Bid":"1","Ask":"1"}}]}}"#
        );
        let f = ok(&body);
        assert_eq!(f.rejected, 1);
        assert_eq!(value_of(&f, 2), Some(1.0));
    }

    #[test]
    fn large_bodies_parse_in_one_pass() {
        // Many unwanted entries plus the wanted one at the end; a quadratic parser
        // would take minutes here.
        let mut body = String::from("null({\"Rates\":[");
        for i in 0..50_000 {
            body.push_str(&format!(
                "{{\"Symbol\":\"SYM{i}\",\"Bid\":\"1.0\",\"Ask\":\"1.1\",\"Spread\":\"2\",}},"
            ));
        }
        body.push_str("{\"Symbol\":\"EURUSD\",\"Bid\":\"1\",\"Ask\":\"2\"},]});");
        assert_eq!(value_of(&ok(&body), 1), Some(1.5));
    }

    #[test]
    fn syntax_errors_are_parse_errors() {
        for body in [
            "garbage",
            "<html><body>502 Bad Gateway</body></html>",
            "null(",
            "null({\"Rates\":[]}",
            "null({\"Rates\":[]}));",
            "null({\"Rates\":[]}) x",
            "{\"Rates\":[]} {}",
            "{\"Rates\":[,]}",
            "{\"Rates\":[{},,{}]}",
            "{\"Rates\":[{\"Symbol\":\"EURUSD\" \"Bid\":\"1\"}]}",
            "{\"Rates\":[{Symbol:\"EURUSD\"}]}",
            "{\"Rates\":[{\"Symbol\":\"EUR\\xUSD\"}]}",
            "{\"Rates\":[{\"Symbol\":\"EUR\\u12G4\"}]}",
            "{\"Rates\":[{\"Symbol\":\"EUR\nUSD\"}]}",
            "{\"Rates\":[tru]}",
            "{\"Rates\":{}}",
            "{\"Rates\":\"x\"}",
            "{\"Other\":[]}",
            "{\"Rates\":[],\"Rates\":[]}",
            "[]",
            "42",
        ] {
            let r = parse(body.as_bytes(), &assets());
            assert!(matches!(r, Err(FeedError::Parse(_))), "{body:?} gave {r:?}");
        }
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let msg = parse_err(b"null({\"Rates\":[]} x");
        assert_eq!(msg, "expected ')' closing the JSONP wrapper at byte 18");
        let msg = parse_err(b"{\"Other\":1}");
        assert!(msg.contains("no \"Rates\" array"), "{msg}");
    }

    #[test]
    fn json_number_grammar() {
        for good in ["0", "-0", "1", "12.5", "0.001", "1e5", "1E-5", "-2.5e+10"] {
            assert!(is_json_number(good), "{good}");
        }
        for bad in [
            "", "-", "01", "1.", ".1", "1e", "1e+", "+1", "1.2.3", "inf", "NaN", "1 ",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }
}
