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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{largest_request, sample_payload, valid_request};
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::Value;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).single().expect("valid time") + chrono::Duration::milliseconds(89)
    }

    fn handoff_id() -> HandoffId {
        HandoffId::parse("0f0e0d0c-0b0a-4908-8706-050403020100").expect("valid id")
    }

    #[test]
    fn the_set_holds_every_context_entry_plus_the_reserved_keys() {
        // Arrange
        let request = HandoffRequest::from_json(&sample_payload(), &crate::ids::OpaqueIds).expect("valid");

        // Act
        let attributes = AttributeSet::for_handoff(&request, handoff_id(), at()).expect("within limits");

        // Assert
        let all: Vec<(&str, &str)> = attributes.iter().collect();
        assert_eq!(
            all,
            vec![
                ("attempted_resolution", "refund_policy_explained"),
                ("bot_handoff_at", "2025-03-04T05:06:07.089Z"),
                ("bot_handoff_id", "0f0e0d0c-0b0a-4908-8706-050403020100"),
                ("bot_handoff_reason", "complex_billing_dispute"),
                ("guest_email", "jane.doe@example.com"),
                ("guest_id", "guest-8842-xyz"),
                ("guest_name", "Jane Doe"),
                ("sentiment_score", "0.32"),
            ]
        );
    }

    #[test]
    fn absent_guest_name_and_email_are_left_out() {
        // Arrange
        let mut payload = sample_payload();
        payload["guestInfo"] = serde_json::json!({ "id": "guest-1", "name": "" });
        payload["customContext"] = Value::Null;
        let request = HandoffRequest::from_json(&payload, &crate::ids::OpaqueIds).expect("valid");

        // Act
        let attributes = AttributeSet::for_handoff(&request, handoff_id(), at()).expect("within limits");

        // Assert
        assert_eq!(attributes.len(), 4);
        assert_eq!(attributes.get("guest_name"), None);
        assert_eq!(attributes.get("guest_email"), None);
        assert_eq!(attributes.get("guest_id"), Some("guest-1"));
        assert!(!attributes.is_empty());
    }

    #[test]
    fn every_reserved_key_is_reserved_and_so_is_any_bot_handoff_key() {
        for key in RESERVED_KEYS {
            assert!(is_reserved_key(key), "{key}");
        }
        assert!(is_reserved_key("bot_handoff_future"));
        assert!(!is_reserved_key("guest"));
        assert!(!is_reserved_key("bot_handoff"));
        assert!(!is_reserved_key("my_guest_name"));
    }

    proptest! {
        #[test]
        fn the_attribute_set_of_any_valid_request_stays_within_genesys_limits(
            request in prop_oneof![valid_request(), largest_request()],
            millis in 0i64..4_102_444_800_000,
        ) {
            // Arrange
            let at = Utc.timestamp_millis_opt(millis).single().expect("in range");

            // Act
            let attributes = AttributeSet::for_handoff(&request, HandoffId::random(), at);

            // Assert
            let attributes = match attributes {
                Ok(a) => a,
                Err(e) => return Err(TestCaseError::fail(format!("limit broken: {e}"))),
            };
            prop_assert!(attributes.len() <= MAX_ATTRIBUTES, "{} attributes", attributes.len());
            for (key, value) in attributes.iter() {
                prop_assert!(value.chars().count() <= MAX_ATTRIBUTE_VALUE_CHARS, "{key} is too long");
            }
            prop_assert_eq!(attributes.len(), request.context().len() + 4
                + usize::from(request.guest().name().is_some()) + usize::from(request.guest().email().is_some()));
        }
    }
}
