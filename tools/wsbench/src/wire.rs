//! How the load's clients speak to the server, as plain data: the flags set it, every
//! run of a comparison carries its own, and client processes are handed it on their
//! command line. One field per way of connecting; a new one (TLS, say) goes beside
//! `deflate` and is read where the socket is opened (`net.rs`) or the upgrade written
//! (`handshake.rs`).

use serde::{Deserialize, Serialize};

/// What a run's clients do beyond plain WebSocket over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Wire {
    /// Offer permessage-deflate (RFC 7692) in the upgrade and, where the server accepts
    /// it, read its compressed messages.
    pub deflate: bool,
}

impl Wire {
    /// How the report names these clients: "plain" or "permessage-deflate".
    pub fn name(&self) -> &'static str {
        if self.deflate {
            "permessage-deflate"
        } else {
            "plain"
        }
    }

    /// The form a client process receives on its command line (one JSON word).
    pub fn to_arg(self) -> String {
        // Serialising a struct of booleans cannot fail.
        serde_json::to_string(&self).unwrap_or_default()
    }

    /// Reads [`Wire::to_arg`]'s form back.
    pub fn from_arg(arg: &str) -> Result<Wire, String> {
        serde_json::from_str(arg).map_err(|e| format!("clients' wire {arg:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_client_process_command_line() {
        for wire in [Wire::default(), Wire { deflate: true }] {
            let arg = wire.to_arg();
            assert!(!arg.contains(char::is_whitespace), "{arg}");
            assert_eq!(Wire::from_arg(&arg), Ok(wire));
        }
        assert!(Wire::from_arg("deflate").is_err());
        assert_eq!(Wire::default().name(), "plain");
    }
}
