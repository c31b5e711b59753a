//! [`SunshineIds`]: Sunshine's id formats (api-notes §7). Conversation and switchboard-integration
//! ids are 24 lower-case hexadecimal characters in every spec example; Zendesk group ids are
//! integers. `SUNSHINE_ID_FORMAT=opaque` relaxes the 24-hex rule to the domain's generic bound.

use handoff_domain::ids::{IdKind, IdRules, OpaqueId};

/// How strictly Sunshine ids are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdFormat {
    /// 24 characters of `[0-9a-f]`, no case folding (the default).
    #[default]
    Hex24,
    /// The domain's generic bound: 1–64 RFC 3986 unreserved characters.
    Opaque,
}

impl IdFormat {
    /// Parses `SUNSHINE_ID_FORMAT` (`hex24` | `opaque`).
    ///
    /// # Errors
    /// The problem text when it is neither.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        match raw.trim() {
            "" | "hex24" => Ok(Self::Hex24),
            "opaque" => Ok(Self::Opaque),
            _ => Err("must be hex24 or opaque"),
        }
    }
}

/// The problem text for a conversation or participant id that is not 24 hex characters.
pub const HEX24_PROBLEM: &str = "must be a 24-character hexadecimal id";
/// The problem text for a queue id that is not a Zendesk group id.
pub const GROUP_PROBLEM: &str = "must be a Zendesk group id (digits)";
/// The problem text for an id outside the generic bound.
pub const OPAQUE_PROBLEM: &str = "must be 1 to 64 characters of A-Z a-z 0-9 - . _ ~";

/// Sunshine's id rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SunshineIds {
    format: IdFormat,
}

impl SunshineIds {
    /// The rules for `format`.
    pub const fn new(format: IdFormat) -> Self {
        Self { format }
    }

    /// The canonical id (Sunshine ids are used as given: no case folding), or the problem for the
    /// 400 `details[].problem` text.
    ///
    /// # Errors
    /// The problem text.
    pub fn check<'a>(&self, kind: IdKind, raw: &'a str) -> Result<&'a str, &'static str> {
        match kind {
            IdKind::Queue => {
                let digits = !raw.is_empty() && raw.len() <= 20 && raw.bytes().all(|b| b.is_ascii_digit());
                digits.then_some(raw).ok_or(GROUP_PROBLEM)
            }
            IdKind::Conversation | IdKind::Participant => match self.format {
                IdFormat::Hex24 => is_hex24(raw).then_some(raw).ok_or(HEX24_PROBLEM),
                IdFormat::Opaque => is_opaque(raw).then_some(raw).ok_or(OPAQUE_PROBLEM),
            },
        }
    }
}

impl IdRules for SunshineIds {
    fn parse(&self, kind: IdKind, raw: &str) -> Result<OpaqueId, &'static str> {
        let checked = self.check(kind, raw)?;
        OpaqueId::parse(checked).map_err(|e| e.problem)
    }
}

/// 24 characters of `[0-9a-f]`.
pub fn is_hex24(raw: &str) -> bool {
    raw.len() == 24 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 1–64 RFC 3986 unreserved characters.
pub fn is_opaque(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_are_24_lower_case_hex_unless_opaque() {
        // Arrange
        let strict = SunshineIds::new(IdFormat::Hex24);
        let relaxed = SunshineIds::new(IdFormat::Opaque);

        // Act / Assert
        assert_eq!(strict.check(IdKind::Conversation, "029c31f25a21b47effd7be90"), Ok("029c31f25a21b47effd7be90"));
        assert_eq!(strict.check(IdKind::Conversation, "029C31F25A21B47EFFD7BE90"), Err(HEX24_PROBLEM));
        assert_eq!(strict.check(IdKind::Participant, "029c31f25a21b47effd7be9"), Err(HEX24_PROBLEM));
        assert_eq!(strict.check(IdKind::Conversation, "029c31f25a21b47effd7be90a"), Err(HEX24_PROBLEM));
        assert_eq!(strict.check(IdKind::Conversation, "8a3f4a1e-0c4d-4c3b-9d4e-0a1b2c3d4e5f"), Err(HEX24_PROBLEM));
        assert_eq!(relaxed.check(IdKind::Conversation, "conv_ABC-1.2~x"), Ok("conv_ABC-1.2~x"));
        assert_eq!(relaxed.check(IdKind::Conversation, "a/b"), Err(OPAQUE_PROBLEM));
        assert_eq!(relaxed.check(IdKind::Conversation, &"a".repeat(65)), Err(OPAQUE_PROBLEM));
    }

    #[test]
    fn queue_ids_are_zendesk_group_ids() {
        let ids = SunshineIds::default();
        assert_eq!(ids.check(IdKind::Queue, "360001"), Ok("360001"));
        assert_eq!(ids.check(IdKind::Queue, ""), Err(GROUP_PROBLEM));
        assert_eq!(ids.check(IdKind::Queue, "36x"), Err(GROUP_PROBLEM));
        assert_eq!(ids.check(IdKind::Queue, &"1".repeat(21)), Err(GROUP_PROBLEM));
    }

    #[test]
    fn the_rules_give_the_domain_an_opaque_id() {
        let rules: &dyn IdRules = &SunshineIds::default();
        assert_eq!(
            rules.parse(IdKind::Conversation, "029c31f25a21b47effd7be90").map(|id| id.as_str().to_owned()),
            Ok("029c31f25a21b47effd7be90".to_owned())
        );
        assert_eq!(rules.parse(IdKind::Queue, "abc"), Err(GROUP_PROBLEM));
    }

    #[test]
    fn the_id_format_setting_has_two_values() {
        assert_eq!(IdFormat::parse("opaque"), Ok(IdFormat::Opaque));
        assert_eq!(IdFormat::parse(""), Ok(IdFormat::Hex24));
        assert!(IdFormat::parse("uuid").is_err());
    }
}
