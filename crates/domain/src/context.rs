//! The context handed to the agent with the conversation (CONTRACT §5.5): every `customContext`
//! entry plus the keys this service writes itself, and the check against the limits the platform
//! declares ([`ContextLimits`]).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

use crate::ids::HandoffId;
use crate::platform::{ContextLimits, TotalMeasure};
use crate::request::{HandoffRequest, ValidationErrors};

/// Keys this service writes itself; a payload may not set them.
pub const RESERVED_KEYS: [&str; 6] =
    ["bot_handoff_reason", "bot_handoff_id", "bot_handoff_at", "guest_id", "guest_name", "guest_email"];

/// Whether `key` belongs to this service: one of [`RESERVED_KEYS`], or any `bot_handoff_` key (kept
/// free for future use).
pub(crate) fn is_reserved_key(key: &str) -> bool {
    RESERVED_KEYS.contains(&key) || key.starts_with("bot_handoff_")
}

/// A context set would break a limit the platform declared. Reported rather than silently cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextLimitError {
    /// More keys than the platform keeps.
    #[error("the context would have {count} keys, more than the {max} the platform keeps")]
    TooMany {
        /// Keys in the set.
        count: usize,
        /// The platform's limit.
        max: usize,
    },
    /// A value longer than the platform keeps.
    #[error("the context value for {key} is longer than {max} characters")]
    ValueTooLong {
        /// The key of the value.
        key: String,
        /// The platform's limit.
        max: usize,
    },
    /// More bytes in total than the platform keeps.
    #[error("the context would take {bytes} bytes, more than the {max} the platform keeps")]
    TooLarge {
        /// The size of the set, measured as the platform measures it.
        bytes: usize,
        /// The platform's limit.
        max: usize,
    },
}

impl ContextLimitError {
    /// The 400 `customContext` problem text: what the request's context must fit.
    pub fn problem(&self) -> String {
        match self {
            ContextLimitError::TooMany { max, .. } => format!("must fit the platform's context limit: {max} keys"),
            ContextLimitError::ValueTooLong { max, .. } => {
                format!("must fit the platform's context limit: {max} characters per value")
            }
            ContextLimitError::TooLarge { max, .. } => format!("must fit the platform's context limit: {max} bytes"),
        }
    }
}

/// The context for the agent, sorted by key, within the platform's limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContextSet(BTreeMap<String, String>);

impl ContextSet {
    /// Every context entry of `request` plus the reserved keys (absent guest values left out).
    ///
    /// # Errors
    /// [`ContextLimitError`] if the set would break one of `limits`; nothing is ever dropped or
    /// truncated silently.
    pub fn for_handoff(
        request: &HandoffRequest,
        handoff_id: HandoffId,
        at: DateTime<Utc>,
        limits: &ContextLimits,
    ) -> Result<Self, ContextLimitError> {
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
        let set = Self(map);
        set.check(limits)?;
        Ok(set)
    }

    /// Whether `request`'s context fits `limits` once the reserved keys are added, at their
    /// largest (a UUID handoff id, a 24-character timestamp, the guest fields as sent): the
    /// request parser's check, before anything is recorded or called.
    ///
    /// # Errors
    /// [`ValidationErrors`] naming `customContext` when it cannot fit.
    pub fn check_request(request: &HandoffRequest, limits: &ContextLimits) -> Result<(), ValidationErrors> {
        // A handoff id is always 36 characters and a millisecond UTC timestamp 24, so these stand
        // in for any real ones.
        let at = Utc.timestamp_millis_opt(0).single().unwrap_or_default();
        match Self::for_handoff(request, HandoffId::from_uuid(uuid::Uuid::nil()), at, limits) {
            Ok(_) => Ok(()),
            Err(e) => Err(ValidationErrors::single("customContext", e.problem())),
        }
    }

    fn check(&self, limits: &ContextLimits) -> Result<(), ContextLimitError> {
        if let Some(max) = limits.max_keys.filter(|max| self.0.len() > *max) {
            return Err(ContextLimitError::TooMany { count: self.0.len(), max });
        }
        if let Some(max) = limits.max_value_chars {
            if let Some((key, _)) = self.0.iter().find(|(_, v)| v.chars().count() > max) {
                return Err(ContextLimitError::ValueTooLong { key: key.clone(), max });
            }
        }
        if let Some(max) = limits.max_total_bytes {
            let bytes = self.size(limits.total_measure);
            if bytes > max {
                return Err(ContextLimitError::TooLarge { bytes, max });
            }
        }
        Ok(())
    }

    /// The size of the set as `measure` counts it.
    pub fn size(&self, measure: TotalMeasure) -> usize {
        match measure {
            // A map of strings always serializes.
            TotalMeasure::SerializedJson => serde_json::to_vec(&self.0).map(|v| v.len()).unwrap_or(usize::MAX),
            TotalMeasure::ValueBytes => self.0.values().map(String::len).sum(),
        }
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    /// How many entries there are.
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

    /// Fifty keys of at most 256 characters each.
    fn limits() -> ContextLimits {
        ContextLimits { max_keys: Some(50), max_value_chars: Some(256), ..ContextLimits::NONE }
    }

    fn handoff_id() -> HandoffId {
        HandoffId::parse("0f0e0d0c-0b0a-4908-8706-050403020100").expect("valid id")
    }

    #[test]
    fn the_set_holds_every_context_entry_plus_the_reserved_keys() {
        // Arrange
        let request = HandoffRequest::from_json(&sample_payload(), &crate::ids::OpaqueIds).expect("valid");

        // Act
        let attributes = ContextSet::for_handoff(&request, handoff_id(), at(), &limits()).expect("within limits");

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
        let attributes = ContextSet::for_handoff(&request, handoff_id(), at(), &limits()).expect("within limits");

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
        fn the_context_set_of_any_valid_request_stays_within_fifty_keys_of_256_characters(
            request in prop_oneof![valid_request(), largest_request()],
            millis in 0i64..4_102_444_800_000,
        ) {
            // Arrange
            let at = Utc.timestamp_millis_opt(millis).single().expect("in range");

            // Act
            let attributes = ContextSet::for_handoff(&request, HandoffId::random(), at, &limits());

            // Assert
            let attributes = match attributes {
                Ok(a) => a,
                Err(e) => return Err(TestCaseError::fail(format!("limit broken: {e}"))),
            };
            prop_assert!(attributes.len() <= 50, "{} attributes", attributes.len());
            for (key, value) in attributes.iter() {
                prop_assert!(value.chars().count() <= 256, "{key} is too long");
            }
            prop_assert_eq!(attributes.len(), request.context().len() + 4
                + usize::from(request.guest().name().is_some()) + usize::from(request.guest().email().is_some()));
        }
    }
}
