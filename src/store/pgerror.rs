//! PostgreSQL errors: one line of text with every cause, and the call between "the
//! database is away, retry later" and "retrying will not help".
//!
//! The one home of driver-error handling; the store, the migrations and the DSN parser
//! use it, and it uses none of them.

use std::error::Error;

use postgres::error::SqlState;
use rustls::CertificateError;

use super::StoreError;
use crate::redact;

/// An error and its causes on one line (`postgres::Error`'s own text omits the cause),
/// with any credential in it masked (see [`redact::text`]).
pub fn error_text(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    redact::text(&text).into_owned()
}

/// Maps a driver error: lost or refused connections and server states that pass
/// (shutdown, overload, deadlock) become `Unavailable`; everything else is `Query`.
pub fn classify(error: &postgres::Error) -> StoreError {
    let mut text = error_text(error);
    if let Some(hint) = certificate_hint(error) {
        text.push_str(" (");
        text.push_str(hint);
        text.push(')');
    }
    if is_unavailable(error) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Query(text)
    }
}

fn is_unavailable(error: &postgres::Error) -> bool {
    if let Some(state) = error.code() {
        return is_transient_state(state);
    }
    if error.is_closed() {
        return true;
    }
    // The driver's error kinds are private; its text is the stable way to tell
    // connect, I/O and timeout failures from protocol or type errors.
    let head = error.to_string();
    if head.starts_with("error performing TLS handshake") {
        // A connection broken under the handshake is worth retrying; a refusal by rustls
        // (a certificate that fails the check) or by the server (no TLS) is not.
        return io_cause(error).is_some_and(|io| {
            io.get_ref()
                .is_none_or(|inner| !inner.is::<rustls::Error>())
        });
    }
    [
        "error connecting to server",
        "error communicating with the server",
        "timeout waiting for server",
        "connection closed",
    ]
    .iter()
    .any(|prefix| head.starts_with(prefix))
}

/// The first `std::io::Error` among the causes of `error`.
fn io_cause(error: &postgres::Error) -> Option<&std::io::Error> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = cause.source();
    }
    None
}

/// The rustls error behind a failed handshake (carried in an `io::Error`).
fn rustls_cause(error: &postgres::Error) -> Option<&rustls::Error> {
    io_cause(error)?.get_ref()?.downcast_ref::<rustls::Error>()
}

/// What to do about a server certificate that failed the check `sslmode` asks for.
fn certificate_hint(error: &postgres::Error) -> Option<&'static str> {
    let rustls::Error::InvalidCertificate(problem) = rustls_cause(error)? else {
        return None;
    };
    Some(match problem {
        CertificateError::UnknownIssuer => {
            "the server's certificate is not signed by a trusted root: name its CA with sslrootcert=PATH"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate does not carry the host name connected to: \
             connect by a name it carries, or use sslmode=verify-ca"
        }
        _ => "the server's certificate failed the check that sslmode asks for",
    })
}

/// SQLSTATEs worth retrying: connection exceptions (08), insufficient resources (53),
/// server shutting down or starting (57P01-03), statement timeout or cancel (57014),
/// serialization failure and deadlock.
fn is_transient_state(state: &SqlState) -> bool {
    let code = state.code();
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01"
        )
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    #[test]
    fn transient_states_are_retryable_and_others_are_not() {
        for state in [
            SqlState::CONNECTION_FAILURE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::QUERY_CANCELED,
        ] {
            assert!(is_transient_state(&state), "{}", state.code());
        }
        for state in [
            SqlState::UNDEFINED_TABLE,
            SqlState::INVALID_PASSWORD,
            SqlState::UNIQUE_VIOLATION,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::SYNTAX_ERROR,
        ] {
            assert!(!is_transient_state(&state), "{}", state.code());
        }
    }

    #[test]
    fn error_text_includes_the_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_text(&e), "outer: inner");
    }
}
