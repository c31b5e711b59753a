//! Validated identifiers.
//!
//! The platform's ids (conversation, queue, participant) are [`OpaqueId`]s: 1 to
//! [`MAX_ID_BYTES`] bytes of RFC 3986 unreserved characters, so they are safe in a URL path
//! segment and in the ledger key `{conversationId}#{key}` without escaping. The domain checks
//! nothing more; each platform's adapter declares its own format through [`IdRules`] (a UUID for
//! Genesys), which the request parser, the HTTP read side and the configuration parser apply to
//! every id before anything is stored or called. Stored rows are re-read with the generic check
//! only ([`OpaqueIds`]), so a row is never refused because a platform's rules got stricter.
//!
//! [`HandoffId`] is ours, not the platform's, and stays a UUID.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// At most this many bytes in a platform id.
pub const MAX_ID_BYTES: usize = 64;

/// The problem text of the domain's generic check ([`OpaqueId::parse`], [`OpaqueIds`]).
pub const OPAQUE_ID_PROBLEM: &str = "must be 1-64 characters of A-Z a-z 0-9 - . _ ~";

/// A string that is not a valid id where one was required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {problem}")]
pub struct InvalidId {
    /// Which identifier failed (`conversation id`, `queue id`, ...).
    pub kind: &'static str,
    /// What is wrong, in the words of the rules that refused it (e.g. `must be a UUID`).
    pub problem: &'static str,
}

/// A platform id: 1..=64 bytes of RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
///
/// Inline and `Copy` (no allocation), like the UUIDs it replaced: ids travel by value on the hot
/// path. The bytes past `len` are always zero, so the derived equality and hash are those of the
/// text; ordering is the text's byte order (for lower-case UUIDs, the order of the UUIDs).
#[derive(Clone, Copy)]
pub struct OpaqueId {
    /// Number of bytes used, `1..=MAX_ID_BYTES`.
    len: u8,
    /// The text, ASCII, zero-padded.
    bytes: [u8; MAX_ID_BYTES],
}

impl OpaqueId {
    /// The domain's own check: 1 to [`MAX_ID_BYTES`] bytes, each an RFC 3986 unreserved character.
    /// Nothing is trimmed or case-folded.
    ///
    /// # Errors
    /// [`InvalidId`] (kind `id`, problem [`OPAQUE_ID_PROBLEM`]) when `raw` breaks either rule.
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let text = raw.as_bytes();
        if text.is_empty() || text.len() > MAX_ID_BYTES || !text.iter().all(|&b| is_unreserved(b)) {
            return Err(InvalidId { kind: "id", problem: OPAQUE_ID_PROBLEM });
        }
        let mut bytes = [0; MAX_ID_BYTES];
        bytes[..text.len()].copy_from_slice(text);
        // `text.len() <= MAX_ID_BYTES = 64` fits a u8.
        Ok(Self { len: text.len() as u8, bytes })
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored (see `parse`), so this never fails.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// `A-Z a-z 0-9 - . _ ~` (RFC 3986 §2.3).
const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

impl PartialEq for OpaqueId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for OpaqueId {}

impl Hash for OpaqueId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for OpaqueId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OpaqueId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for OpaqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for OpaqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpaqueId({})", self.as_str())
    }
}

/// Which platform id a string is meant to be (the webhook's fields, the read API's parameters,
/// the configured queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// `conversationId`.
    Conversation,
    /// `queueId`: a routing target (a Genesys queue, a Zendesk group).
    Queue,
    /// `participantId`: the webhook's optional hint of who holds the conversation.
    Participant,
}

impl IdKind {
    /// The id's name in prose: `conversation id`, `queue id`, `participant id`.
    pub const fn noun(self) -> &'static str {
        match self {
            Self::Conversation => "conversation id",
            Self::Queue => "queue id",
            Self::Participant => "participant id",
        }
    }

    /// The id's field in the webhook payload and the read API: `conversationId`, ….
    pub const fn field(self) -> &'static str {
        match self {
            Self::Conversation => "conversationId",
            Self::Queue => "queueId",
            Self::Participant => "participantId",
        }
    }
}

/// The platform's id formats. Provided by the adapter; used by the request parser, the HTTP read
/// side and the configuration parser, so every id is checked before anything is stored or called.
pub trait IdRules: Send + Sync + fmt::Debug {
    /// The canonical id, or the problem as the 400 `details[].problem` text, e.g. `must be a UUID`.
    ///
    /// # Errors
    /// The problem, lower case, without the field's name.
    fn parse(&self, kind: IdKind, raw: &str) -> Result<OpaqueId, &'static str>;

    /// The problem when an optional id field (`queueId`, `participantId`) holds a JSON value that
    /// is not a string. `must be a string` unless the platform says more.
    fn not_a_string(&self, kind: IdKind) -> &'static str {
        let _ = kind;
        "must be a string"
    }
}

/// The domain's generic rules: any [`OpaqueId`]. What stored rows are re-read with, and what tests
/// use when the platform does not matter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpaqueIds;

impl IdRules for OpaqueIds {
    fn parse(&self, _kind: IdKind, raw: &str) -> Result<OpaqueId, &'static str> {
        OpaqueId::parse(raw).map_err(|e| e.problem)
    }
}

macro_rules! platform_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(OpaqueId);

        impl $name {
            /// Which id this is.
            pub const KIND: IdKind = $kind;

            /// Parses with the domain's generic check ([`OpaqueId::parse`]) only. Input from
            /// outside goes through the platform's rules instead ([`Self::parse_with`]).
            ///
            /// # Errors
            /// [`InvalidId`] when `raw` is not an [`OpaqueId`].
            pub fn parse(raw: &str) -> Result<Self, InvalidId> {
                Self::parse_with(&OpaqueIds, raw)
            }

            /// Parses with the platform's `rules`, which may also canonicalise it (Genesys: lower
            /// case).
            ///
            /// # Errors
            /// [`InvalidId`] with the rules' problem text.
            pub fn parse_with(rules: &dyn IdRules, raw: &str) -> Result<Self, InvalidId> {
                rules
                    .parse(Self::KIND, raw)
                    .map(Self)
                    .map_err(|problem| InvalidId { kind: Self::KIND.noun(), problem })
            }

            /// Wraps an id already checked.
            pub const fn from_opaque(id: OpaqueId) -> Self {
                Self(id)
            }

            /// The id inside.
            pub const fn as_opaque(&self) -> &OpaqueId {
                &self.0
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl From<OpaqueId> for $name {
            fn from(id: OpaqueId) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.as_str().to_owned()
            }
        }
    };
}

platform_id!(
    /// The platform's conversation id (a Genesys conversation, a Sunshine conversation).
    ConversationId,
    IdKind::Conversation
);
platform_id!(
    /// A routing target: a Genesys queue, a Zendesk group.
    QueueId,
    IdKind::Queue
);
platform_id!(
    /// The webhook's optional `participantId` hint, and the participants a handoff record keeps.
    ParticipantId,
    IdKind::Participant
);

/// Our id for one handoff (one ledger record): a UUID, whatever the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HandoffId(Uuid);

impl HandoffId {
    /// Parses a UUID in any case, with hyphens (`8-4-4-4-12`), and nothing else: no braces, no
    /// `urn:` prefix, no surrounding whitespace.
    ///
    /// # Errors
    /// [`InvalidId`] when `raw` is not such a UUID.
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        const INVALID: InvalidId = InvalidId { kind: "handoff id", problem: "must be a UUID" };
        if raw.len() != 36 {
            return Err(INVALID);
        }
        Uuid::try_parse(raw).map(Self).map_err(|_| INVALID)
    }

    /// A fresh random handoff id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for HandoffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for HandoffId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for HandoffId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<HandoffId> for String {
    fn from(id: HandoffId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const UNRESERVED: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

    fn opaque_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[A-Za-z0-9._~-]{1,64}").expect("valid regex")
    }

    #[test]
    fn platform_ids_keep_their_text_exactly() {
        // Arrange
        let raw = "A1B2C3D4-E5F6-7890-ABCD-EF1234567890";

        // Act
        let id = ConversationId::parse(raw).unwrap();

        // Assert: the generic check folds no case; the platform's rules may.
        assert_eq!(id.to_string(), raw);
        assert_eq!(id.as_str(), raw);
    }

    #[test]
    fn platform_ids_reject_what_is_not_url_safe_or_too_long() {
        for raw in ["", "../../admin", "a b", "a/b", "a%2Fb", "ü", "a#b", "a?b", " a", &"a".repeat(65)] {
            let err = QueueId::parse(raw).unwrap_err();
            assert_eq!(err, InvalidId { kind: "queue id", problem: OPAQUE_ID_PROBLEM }, "{raw:?}");
        }
        assert!(QueueId::parse(&"a".repeat(64)).is_ok());
        assert!(QueueId::parse(UNRESERVED).is_err(), "66 characters is over the bound");
        assert!(QueueId::parse(&UNRESERVED[..64]).is_ok());
    }

    #[test]
    fn invalid_ids_name_the_id_and_the_problem() {
        let err = ParticipantId::parse("a b").unwrap_err();
        assert_eq!(err.to_string(), format!("participant id {OPAQUE_ID_PROBLEM}"));
    }

    #[test]
    fn ids_print_debug_like_the_uuids_they_replaced() {
        let id = ConversationId::parse("a1b2c3d4-e5f6-7890-abcd-ef1234567890").unwrap();
        assert_eq!(format!("{id:?}"), "ConversationId(a1b2c3d4-e5f6-7890-abcd-ef1234567890)");
        assert_eq!(format!("{:?}", Some(id.as_opaque())), "Some(OpaqueId(a1b2c3d4-e5f6-7890-abcd-ef1234567890))");
    }

    #[test]
    fn ids_are_serialized_as_strings_and_checked_when_read() {
        let id = QueueId::parse("0123456789abcdef01234567").unwrap();
        let json = serde_json::to_value(id).unwrap();
        assert_eq!(json, serde_json::json!("0123456789abcdef01234567"));
        assert_eq!(serde_json::from_value::<QueueId>(json).unwrap(), id);
        assert!(serde_json::from_value::<QueueId>(serde_json::json!("no/slash")).is_err());
        assert!(serde_json::from_value::<QueueId>(serde_json::json!(42)).is_err());
    }

    #[test]
    fn parse_with_uses_the_platform_rules_and_their_words() {
        #[derive(Debug)]
        struct DigitsOnly;
        impl IdRules for DigitsOnly {
            fn parse(&self, _: IdKind, raw: &str) -> Result<OpaqueId, &'static str> {
                if raw.bytes().all(|b| b.is_ascii_digit()) {
                    OpaqueId::parse(raw).map_err(|_| "must be digits")
                } else {
                    Err("must be digits")
                }
            }
        }
        assert_eq!(QueueId::parse_with(&DigitsOnly, "123").unwrap().as_str(), "123");
        let err = QueueId::parse_with(&DigitsOnly, "abc").unwrap_err();
        assert_eq!(err, InvalidId { kind: "queue id", problem: "must be digits" });
        assert_eq!(DigitsOnly.not_a_string(IdKind::Queue), "must be a string");
    }

    #[test]
    fn handoff_ids_parse_any_case_and_print_lower_case() {
        let id = HandoffId::parse("A1B2C3D4-E5F6-7890-ABCD-EF1234567890").unwrap();
        assert_eq!(id.to_string(), "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
    }

    #[test]
    fn handoff_ids_reject_anything_that_is_not_a_hyphenated_uuid() {
        for raw in [
            "",
            "a1b2c3d4e5f67890abcdef1234567890",
            "{a1b2c3d4-e5f6-7890-abcd-ef1234567890}",
            "../../admin",
            "a1b2c3d4-e5f6-7890-abcd-ef123456789g",
            " a1b2c3d4-e5f6-7890-abcd-ef123456789",
        ] {
            let err = HandoffId::parse(raw).unwrap_err();
            assert_eq!(err.to_string(), "handoff id must be a UUID", "{raw:?}");
        }
    }

    proptest! {
        #[test]
        fn opaque_ids_round_trip_through_text_and_serde(raw in opaque_text()) {
            let id = ConversationId::parse(&raw).unwrap();
            prop_assert_eq!(id.as_str(), raw.as_str());
            prop_assert_eq!(id.to_string().parse::<ConversationId>().unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<ConversationId>(&json).unwrap(), id);
        }

        #[test]
        fn opaque_ids_are_bounded(raw in "[A-Za-z0-9._~-]{65,200}") {
            prop_assert!(OpaqueId::parse(&raw).is_err());
        }

        #[test]
        fn opaque_ids_accept_exactly_the_unreserved_characters(raw in any::<String>()) {
            let allowed = !raw.is_empty() && raw.len() <= MAX_ID_BYTES && raw.chars().all(|c| UNRESERVED.contains(c));
            prop_assert_eq!(OpaqueId::parse(&raw).is_ok(), allowed);
        }

        #[test]
        fn one_bad_character_spoils_an_id(
            prefix in "[A-Za-z0-9._~-]{0,30}",
            bad in any::<char>().prop_filter("not unreserved", |c| !UNRESERVED.contains(*c)),
            suffix in "[A-Za-z0-9._~-]{0,30}",
        ) {
            let raw = format!("{prefix}{bad}{suffix}");
            prop_assert!(OpaqueId::parse(&raw).is_err());
        }

        #[test]
        fn opaque_ids_order_equal_and_hash_like_their_text(a in opaque_text(), b in opaque_text()) {
            use std::collections::hash_map::DefaultHasher;
            let (x, y) = (OpaqueId::parse(&a).unwrap(), OpaqueId::parse(&b).unwrap());
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            let hash = |id: &OpaqueId| { let mut h = DefaultHasher::new(); id.hash(&mut h); h.finish() };
            if a == b {
                prop_assert_eq!(hash(&x), hash(&y));
            }
        }
    }
}
