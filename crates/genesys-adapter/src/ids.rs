//! [`GenesysIds`]: Genesys Cloud's id format, the [`IdRules`] of this platform.
//!
//! Genesys identifies conversations, participants and queues by UUID (`conversationId`,
//! `participantId`, `queueId` are `format: uuid` strings in the Platform API). The check is the one
//! the domain applied before ids became opaque (ADR 0004 §1), moved here unchanged: 36 characters,
//! hyphenated `8-4-4-4-12`, any case, printed in canonical lower case; the problem text is
//! `must be a UUID` (and `must be a UUID string` for a JSON value that is not a string), so every
//! 400 body the bot sees stays byte-identical.

use handoff_domain::{ConversationId, IdKind, IdRules, OpaqueId, ParticipantId, QueueId};
use uuid::Uuid;

/// The problem text for an id that is not a UUID.
pub const NOT_A_UUID: &str = "must be a UUID";

/// Genesys Cloud's ids: hyphenated UUIDs in any case, canonicalised to lower case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenesysIds;

impl GenesysIds {
    /// The UUID's canonical id (hyphenated lower case), for ids Genesys hands out as UUIDs.
    pub fn from_uuid(uuid: Uuid) -> OpaqueId {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid.hyphenated().encode_lower(&mut text);
        // A hyphenated UUID is 36 bytes of `0-9 a-f -`: always an opaque id.
        OpaqueId::parse(text).unwrap_or_else(|_| unreachable!("a hyphenated UUID is a valid opaque id"))
    }

    /// A conversation id from its UUID.
    pub fn conversation(uuid: Uuid) -> ConversationId {
        Self::from_uuid(uuid).into()
    }

    /// A queue id from its UUID.
    pub fn queue(uuid: Uuid) -> QueueId {
        Self::from_uuid(uuid).into()
    }

    /// A participant id from its UUID.
    pub fn participant(uuid: Uuid) -> ParticipantId {
        Self::from_uuid(uuid).into()
    }

    /// The UUID of an id these rules accepted (`None` for an id that is not a UUID, e.g. one read
    /// back from a row written under other rules).
    pub fn uuid_of(id: &OpaqueId) -> Option<Uuid> {
        Uuid::try_parse(id.as_str()).ok()
    }
}

impl IdRules for GenesysIds {
    fn parse(&self, _kind: IdKind, raw: &str) -> Result<OpaqueId, &'static str> {
        // `Uuid::try_parse` also takes the simple, braced and URN forms; only the hyphenated one
        // (36 characters) is a Genesys id.
        if raw.len() != uuid::fmt::Hyphenated::LENGTH {
            return Err(NOT_A_UUID);
        }
        Uuid::try_parse(raw).map(Self::from_uuid).map_err(|_| NOT_A_UUID)
    }

    fn not_a_string(&self, _kind: IdKind) -> &'static str {
        "must be a UUID string"
    }
}

#[cfg(test)]
mod tests {
    use handoff_domain::{FieldError, HandoffRequest};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    fn payload() -> Value {
        json!({
            "conversationId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "guestInfo": { "id": "guest-8842-xyz" },
            "handoffReason": "complex_billing_dispute",
        })
    }

    fn problems(payload: &Value) -> Vec<FieldError> {
        HandoffRequest::from_json(payload, &GenesysIds).map(|_| Vec::new()).unwrap_or_else(|e| e.errors().to_vec())
    }

    #[test]
    fn ids_parse_any_case_and_print_lower_case() {
        let id = ConversationId::parse_with(&GenesysIds, "A1B2C3D4-E5F6-7890-ABCD-EF1234567890").unwrap();
        assert_eq!(id.to_string(), "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
    }

    #[test]
    fn ids_reject_anything_that_is_not_a_hyphenated_uuid() {
        for raw in [
            "",
            "a1b2c3d4e5f67890abcdef1234567890",
            "{a1b2c3d4-e5f6-7890-abcd-ef1234567890}",
            "urn:uuid:a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "../../admin",
            "a1b2c3d4-e5f6-7890-abcd-ef123456789g",
            " a1b2c3d4-e5f6-7890-abcd-ef123456789",
            "0123456789abcdef01234567",
        ] {
            let err = QueueId::parse_with(&GenesysIds, raw).unwrap_err();
            assert_eq!(err.to_string(), "queue id must be a UUID", "{raw:?}");
        }
    }

    #[test]
    fn the_webhook_400_details_are_the_ones_the_bot_always_got() {
        // Arrange
        let mut bad = payload();
        bad["conversationId"] = json!("not-a-uuid");
        bad["queueId"] = json!("support");
        bad["participantId"] = json!(5);
        let mut not_string = payload();
        not_string["conversationId"] = json!(12);
        not_string["queueId"] = json!({});

        // Act + Assert
        assert_eq!(
            problems(&bad),
            [
                FieldError::new("conversationId", "must be a UUID"),
                FieldError::new("queueId", "must be a UUID"),
                FieldError::new("participantId", "must be a UUID string"),
            ]
        );
        assert_eq!(
            problems(&not_string),
            [
                FieldError::new("conversationId", "must be a string"),
                FieldError::new("queueId", "must be a UUID string"),
            ]
        );
    }

    #[test]
    fn upper_case_ids_in_a_payload_are_stored_in_lower_case() {
        let mut upper = payload();
        upper["conversationId"] = json!("A1B2C3D4-E5F6-7890-ABCD-EF1234567890");
        upper["queueId"] = json!("0A0B0C0D-0000-4000-8000-00000000000F");
        let request = HandoffRequest::from_json(&upper, &GenesysIds).unwrap();
        assert_eq!(request.conversation_id().as_str(), "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
        assert_eq!(request.requested_queue().unwrap().as_str(), "0a0b0c0d-0000-4000-8000-00000000000f");
        assert_eq!(request.to_json()["conversationId"], "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
    }

    #[test]
    fn routes_refuse_a_queue_that_is_not_a_uuid_in_the_words_they_always_used() {
        let errors = handoff_domain::RoutingPolicy::parse_routes("billing=nope", &GenesysIds).unwrap_err();
        assert_eq!(errors[0].to_string(), "route \"billing=nope\": the queue id must be a UUID");
    }

    proptest! {
        #[test]
        fn any_uuid_in_any_case_is_its_canonical_lower_case_id(bits in any::<u128>(), upper in any::<bool>()) {
            let uuid = Uuid::from_u128(bits);
            let text = uuid.hyphenated().to_string();
            let raw = if upper { text.to_uppercase() } else { text.clone() };
            let id = GenesysIds.parse(IdKind::Conversation, &raw).unwrap();
            prop_assert_eq!(id.as_str(), text.as_str());
            prop_assert_eq!(id, GenesysIds::from_uuid(uuid));
            prop_assert_eq!(GenesysIds::uuid_of(&id), Some(uuid));
        }

        #[test]
        fn whatever_genesys_accepts_the_domain_reads_back(raw in "[0-9a-fA-F-]{30,40}") {
            if let Ok(id) = GenesysIds.parse(IdKind::Queue, &raw) {
                prop_assert_eq!(*QueueId::parse(id.as_str()).unwrap().as_opaque(), id);
            }
        }
    }
}
