//! Validated identifiers. Genesys identifies conversations, participants and queues by UUID; so do
//! we for handoffs. Parsing accepts any case and always prints the canonical lower-case form, which
//! is also what keeps ids safe to put into URL paths.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A string that is not a UUID where one was required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be a UUID")]
pub struct InvalidId {
    /// Which identifier failed (`conversation id`, `queue id`, ...).
    pub kind: &'static str,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Uuid);

        impl $name {
            /// Parses a UUID in any case, with hyphens (`8-4-4-4-12`), and nothing else: no braces,
            /// no `urn:` prefix, no surrounding whitespace.
            ///
            /// # Errors
            /// [`InvalidId`] when `raw` is not such a UUID.
            pub fn parse(raw: &str) -> Result<Self, InvalidId> {
                if raw.len() != 36 {
                    return Err(InvalidId { kind: $kind });
                }
                Uuid::try_parse(raw).map(Self).map_err(|_| InvalidId { kind: $kind })
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

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
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
                id.to_string()
            }
        }
    };
}

uuid_id!(
    /// A Genesys conversation id.
    ConversationId,
    "conversation id"
);
uuid_id!(
    /// A Genesys routing queue id.
    QueueId,
    "queue id"
);
uuid_id!(
    /// A Genesys conversation participant id.
    ParticipantId,
    "participant id"
);
uuid_id!(
    /// Our id for one handoff (one ledger record).
    HandoffId,
    "handoff id"
);

impl HandoffId {
    /// A fresh random handoff id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_any_case_and_print_lower_case() {
        let id = ConversationId::parse("A1B2C3D4-E5F6-7890-ABCD-EF1234567890").unwrap();
        assert_eq!(id.to_string(), "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
    }

    #[test]
    fn ids_reject_anything_that_is_not_a_hyphenated_uuid() {
        for raw in [
            "",
            "a1b2c3d4e5f67890abcdef1234567890",
            "{a1b2c3d4-e5f6-7890-abcd-ef1234567890}",
            "../../admin",
            "a1b2c3d4-e5f6-7890-abcd-ef123456789g",
            " a1b2c3d4-e5f6-7890-abcd-ef123456789",
        ] {
            assert!(QueueId::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }
}
