//! The participant attribute set written onto the customer participant before the transfer
//! (CONTRACT §5.5), and the Genesys limits it must respect.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::ids::HandoffId;
use crate::request::HandoffRequest;

/// Genesys keeps at most this many participant attributes per bot session.
pub const MAX_ATTRIBUTES: usize = 50;
/// Genesys keeps at most this many characters per attribute value.
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 256;

/// Keys this service writes itself; a payload may not set them.
pub const RESERVED_KEYS: [&str; 6] =
    ["bot_handoff_reason", "bot_handoff_id", "bot_handoff_at", "guest_id", "guest_name", "guest_email"];

/// Whether `key` belongs to this service: one of [`RESERVED_KEYS`], or any `bot_handoff_` key (kept
/// free for future use).
pub(crate) fn is_reserved_key(key: &str) -> bool {
    RESERVED_KEYS.contains(&key) || key.starts_with("bot_handoff_")
}

/// An attribute set would break a Genesys limit. Never expected with a validated request; reported
/// rather than silently cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeLimitError {
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("participant data would have {0} attributes, more than the {MAX_ATTRIBUTES} Genesys keeps")]
    TooMany(usize),
    /// A value longer than [`MAX_ATTRIBUTE_VALUE_CHARS`].
    #[error("participant data value for {0} is longer than {MAX_ATTRIBUTE_VALUE_CHARS} characters")]
    ValueTooLong(String),
}

/// String attributes for one participant, sorted by key, within Genesys limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttributeSet(BTreeMap<String, String>);

impl AttributeSet {
    /// Every context entry of `request` plus the reserved keys (absent guest values left out).
    ///
    /// # Errors
    /// [`AttributeLimitError`] if the set would break a Genesys limit; nothing is ever dropped or
    /// truncated silently.
    pub fn for_handoff(
        request: &HandoffRequest,
        handoff_id: HandoffId,
        at: DateTime<Utc>,
    ) -> Result<Self, AttributeLimitError> {
        let mut map: BTreeMap<String, String> =
            request.context().iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let guest = request.guest();
        let reserved = [
            ("bot_handoff_reason", Some(request.reason().as_str().to_owned())),
            ("bot_handoff_id", Some(handoff_id.to_string())),
            ("bot_handoff_at", Some(at.to_rfc3339_opts(SecondsFormat::Millis, true))),
            ("guest_id", Some(guest.id().to_owned())),
            ("guest_name", guest.name().map(str::to_owned)),
            ("guest_email", guest.email().map(str::to_owned)),
        ];
        for (key, value) in reserved {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        }
        if map.len() > MAX_ATTRIBUTES {
            return Err(AttributeLimitError::TooMany(map.len()));
        }
        if let Some((key, _)) = map.iter().find(|(_, v)| v.chars().count() > MAX_ATTRIBUTE_VALUE_CHARS) {
            return Err(AttributeLimitError::ValueTooLong(key.clone()));
        }
        Ok(Self(map))
    }

    /// The attributes, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
