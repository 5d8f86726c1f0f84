//! The `Secret` type: a credential that cannot be printed by accident.
//!
//! `Debug` and `Display` print `** redacted **`. The only way to the bytes is
//! [`Secret::expose`], which is called where a credential goes on the wire or
//! into an HMAC key, and nowhere else.

use std::fmt;

/// A secret string (secret key, password, token, app code).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a value read from config, the environment or a file.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().into_boxed_str())
    }

    /// The secret itself. Call only where it is put on the wire or used as a key.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "** redacted **");
        assert_eq!(format!("{s}"), "** redacted **");
        assert_eq!(format!("{:?}", Some(&s)), "Some(** redacted **)");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }
}
