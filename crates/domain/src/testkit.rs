//! Test-only helpers shared by the unit tests of several modules: proptest strategies for valid
//! (and invalid) webhook payloads and requests, and small fixtures.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::attributes::is_reserved_key;
use crate::ids::{IdKind, IdRules, OpaqueId};
use crate::request::{HandoffRequest, MAX_CONTEXT_KEYS};

/// A platform whose ids are UUIDs, as Genesys' are (the real rules live in its adapter): any case,
/// canonical lower case, `must be a UUID`. Lets the domain's tests show that the parser uses the
/// platform's rules and words.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UuidIds;

impl IdRules for UuidIds {
    fn parse(&self, _kind: IdKind, raw: &str) -> Result<OpaqueId, &'static str> {
        const PROBLEM: &str = "must be a UUID";
        if raw.len() != 36 {
            return Err(PROBLEM);
        }
        let uuid = uuid::Uuid::try_parse(raw).map_err(|_| PROBLEM)?;
        OpaqueId::parse(&uuid.hyphenated().to_string()).map_err(|_| PROBLEM)
    }

    fn not_a_string(&self, _kind: IdKind) -> &'static str {
        "must be a UUID string"
    }
}

/// The payload of the tutorial this project started from (CONTRACT §4.1).
pub(crate) fn sample_payload() -> Value {
    json!({
        "conversationId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "guestInfo": { "id": "guest-8842-xyz", "name": "Jane Doe", "email": "jane.doe@example.com" },
        "handoffReason": "complex_billing_dispute",
        "customContext": { "attempted_resolution": "refund_policy_explained", "sentiment_score": "0.32" }
    })
}

pub(crate) fn uuid_text() -> impl Strategy<Value = String> {
    (any::<u128>(), any::<bool>()).prop_map(|(bits, upper)| {
        let text = uuid::Uuid::from_u128(bits).hyphenated().to_string();
        if upper {
            text.to_uppercase()
        } else {
            text
        }
    })
}

pub(crate) fn visible_text(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>().prop_filter("no control characters", |c| !c.is_control()), min..=max)
        .prop_map(|chars| chars.into_iter().collect())
}

pub(crate) fn context_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}".prop_filter("not reserved", |k| !is_reserved_key(k))
}

/// A context value as the bot may send it, and the string it must become.
pub(crate) fn context_value() -> impl Strategy<Value = (Value, String)> {
    prop_oneof![
        4 => prop::collection::vec(any::<char>(), 0..=256)
            .prop_map(|c| c.into_iter().collect::<String>())
            .prop_map(|s| (Value::String(s.clone()), s)),
        1 => any::<i64>().prop_map(|n| (json!(n), n.to_string())),
        1 => any::<u64>().prop_map(|n| (json!(n), n.to_string())),
        1 => (-1.0e9f64..1.0e9).prop_map(|f| {
            let v = json!(f);
            let text = v.to_string();
            (v, text)
        }),
        1 => any::<bool>().prop_map(|b| (json!(b), b.to_string())),
    ]
}

prop_compose! {
    pub(crate) fn email()(local in "[a-z0-9._%+-]{1,32}", domain in "[a-z0-9-]{1,32}", tld in "[a-z]{2,6}") -> String {
        format!("{local}@{domain}.{tld}")
    }
}

prop_compose! {
    pub(crate) fn guest_json()(
        id in visible_text(1, 256),
        name in prop::option::of(visible_text(0, 256)),
        email in prop::option::of(email()),
    ) -> Value {
        let mut guest = Map::new();
        guest.insert("id".into(), id.into());
        if let Some(name) = name { guest.insert("name".into(), name.into()); }
        if let Some(email) = email { guest.insert("email".into(), email.into()); }
        Value::Object(guest)
    }
}

prop_compose! {
    /// A valid payload, and the context strings it must produce.
    pub(crate) fn valid_payload_with(max_context: usize)(
        conversation in uuid_text(),
        guest in guest_json(),
        reason in visible_text(1, 128),
        context in prop::collection::btree_map(context_key(), context_value(), 0..=max_context),
        queue in prop::option::of(uuid_text()),
        participant in prop::option::of(uuid_text()),
    ) -> (Value, BTreeMap<String, String>) {
        let mut obj = Map::new();
        obj.insert("conversationId".into(), conversation.into());
        obj.insert("guestInfo".into(), guest);
        obj.insert("handoffReason".into(), reason.into());
        obj.insert(
            "customContext".into(),
            Value::Object(context.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect()),
        );
        if let Some(q) = queue { obj.insert("queueId".into(), q.into()); }
        if let Some(p) = participant { obj.insert("participantId".into(), p.into()); }
        let expected = context.into_iter().map(|(k, (_, text))| (k, text)).collect();
        (Value::Object(obj), expected)
    }
}

/// Any JSON value, nested a few levels.
pub(crate) fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,300}".prop_map(Value::String),
        uuid_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("conversationId".to_owned()),
                    Just("guestInfo".to_owned()),
                    Just("id".to_owned()),
                    Just("name".to_owned()),
                    Just("email".to_owned()),
                    Just("handoffReason".to_owned()),
                    Just("customContext".to_owned()),
                    Just("queueId".to_owned()),
                    Just("participantId".to_owned()),
                    ".{0,70}",
                ],
                inner,
                0..8,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid payload with one field replaced by an arbitrary value (or removed).
pub(crate) fn mutated_payload() -> impl Strategy<Value = Value> {
    (
        valid_payload(),
        prop::sample::select(vec![
            "/conversationId",
            "/guestInfo",
            "/guestInfo/id",
            "/guestInfo/name",
            "/guestInfo/email",
            "/handoffReason",
            "/customContext",
            "/customContext/extra",
            "/queueId",
            "/participantId",
        ]),
        prop::option::of(any_json()),
    )
        .prop_map(|((mut payload, _), pointer, replacement)| {
            let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
            if let Some(target) = payload.pointer_mut(parent).and_then(Value::as_object_mut) {
                match replacement {
                    Some(value) => target.insert(key.to_owned(), value),
                    None => target.remove(key),
                };
            }
            payload
        })
}

/// A valid payload with up to [`MAX_CONTEXT_KEYS`] context entries, and the context strings it
/// must produce.
pub(crate) fn valid_payload() -> impl Strategy<Value = (Value, BTreeMap<String, String>)> {
    valid_payload_with(MAX_CONTEXT_KEYS)
}

prop_compose! {
    /// A valid request with up to `max_context` context entries.
    pub(crate) fn valid_request_with(max_context: usize)((payload, _) in valid_payload_with(max_context)) -> HandoffRequest {
        HandoffRequest::from_json(&payload, &UuidIds).expect("valid_payload_with() only builds valid payloads")
    }
}

/// A valid request.
pub(crate) fn valid_request() -> impl Strategy<Value = HandoffRequest> {
    valid_request_with(MAX_CONTEXT_KEYS)
}

prop_compose! {
    /// A valid request at the limits: 40 context entries of 256 characters, and a guest name and
    /// email of (up to) 256 characters.
    pub(crate) fn largest_request()(
        conversation in uuid_text(),
        id in visible_text(256, 256),
        name in visible_text(256, 256),
        reason in visible_text(128, 128),
        keys in prop::collection::btree_set(context_key(), MAX_CONTEXT_KEYS),
        value in visible_text(256, 256),
    ) -> HandoffRequest {
        let email = format!("{}@example.com", "e".repeat(256 - "@example.com".len()));
        let context: Map<String, Value> = keys.into_iter().map(|k| (k, Value::String(value.clone()))).collect();
        let payload = json!({
            "conversationId": conversation,
            "guestInfo": { "id": id, "name": name, "email": email },
            "handoffReason": reason,
            "customContext": context,
        });
        HandoffRequest::from_json(&payload, &UuidIds).expect("the largest payload is still valid")
    }
}
