//! The validated webhook payload (CONTRACT §4.1).
//!
//! [`HandoffRequest::from_json`] is the only way in: it checks every field, collects *every*
//! problem with its field path, and never panics. A [`HandoffRequest`] therefore cannot hold an
//! invalid value, and nothing downstream re-checks it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::attributes::is_reserved_key;
use crate::ids::{ConversationId, IdKind, IdRules, OpaqueIds, ParticipantId, QueueId};

/// At most this many `customContext` entries (leaves room for the reserved keys within Genesys'
/// 50-attribute limit).
pub const MAX_CONTEXT_KEYS: usize = 40;
const MAX_CONTEXT_KEY_CHARS: usize = 64;
const MAX_VALUE_CHARS: usize = 256;
const MAX_REASON_CHARS: usize = 128;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// One problem with one field of the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the field, e.g. `guestInfo.email` or `customContext.sentiment_score`.
    pub field: String,
    /// What is wrong, in lower case, e.g. `must be a UUID`.
    pub problem: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

/// Every problem found in one input; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// Wraps the problems found. Returns `None` when there are none.
    pub fn from_vec(errors: Vec<FieldError>) -> Option<Self> {
        (!errors.is_empty()).then_some(Self(errors))
    }

    /// A single problem.
    pub fn single(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self(vec![FieldError::new(field, problem)])
    }

    /// The problems, in input order.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// These problems followed by `other`'s.
    #[must_use]
    pub fn merge(mut self, other: ValidationErrors) -> Self {
        self.0.extend(other.0);
        self
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid payload: ")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{} {}", e.field, e.problem)?;
        }
        Ok(())
    }
}

/// Who the guest is, as the bot knows them. Carried to the agent as participant data; the guest is
/// never re-created in Genesys.
#[derive(Clone, PartialEq, Eq)]
pub struct GuestInfo {
    id: String,
    name: Option<String>,
    email: Option<String>,
}

impl GuestInfo {
    /// Builds a guest from its parts.
    ///
    /// # Errors
    /// Every problem, with paths relative to `guestInfo`.
    pub fn new(id: &str, name: Option<&str>, email: Option<&str>) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        check_text(&mut errors, "guestInfo.id", id, 1, MAX_VALUE_CHARS, false);
        if let Some(name) = name {
            check_text(&mut errors, "guestInfo.name", name, 0, MAX_VALUE_CHARS, false);
        }
        if let Some(email) = email {
            check_email(&mut errors, "guestInfo.email", email);
        }
        match ValidationErrors::from_vec(errors) {
            Some(e) => Err(e),
            None => Ok(Self {
                id: id.to_owned(),
                name: name.filter(|n| !n.is_empty()).map(str::to_owned),
                email: email.map(str::to_owned),
            }),
        }
    }

    /// The bot platform's guest id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The guest's display name, when known.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// The guest's email, when known.
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }
}

/// Personal data stays out of logs, even by accident through `{:?}`.
impl fmt::Debug for GuestInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestInfo")
            .field("id", &self.id)
            .field("name", &self.name.as_ref().map(|_| "<redacted>"))
            .field("email", &self.email.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why the bot handed off: 1–128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandoffReason(String);

impl HandoffReason {
    /// Validates a reason.
    ///
    /// # Errors
    /// The problem, reported on the field `handoffReason`.
    pub fn parse(raw: &str) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        check_text(&mut errors, "handoffReason", raw, 1, MAX_REASON_CHARS, false);
        match ValidationErrors::from_vec(errors) {
            Some(e) => Err(e),
            None => Ok(Self(raw.to_owned())),
        }
    }
    /// The reason text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HandoffReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bot's context: at most 40 string entries, keys `[A-Za-z0-9_.-]{1,64}`, values ≤ 256
/// characters, no reserved key. Sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandoffContext(BTreeMap<String, String>);

impl HandoffContext {
    /// Validates entries that are already strings.
    ///
    /// # Errors
    /// Every problem, with paths `customContext.<key>`.
    pub fn new(entries: impl IntoIterator<Item = (String, String)>) -> Result<Self, ValidationErrors> {
        let map = entries.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<Map<_, _>>();
        let mut errors = Vec::new();
        let ctx = parse_context(&mut errors, &map);
        match ValidationErrors::from_vec(errors) {
            Some(e) => Err(e),
            None => Ok(ctx),
        }
    }
    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// A guest's id as the bot platform knows it (`guestInfo.id`), naming whose personal data to erase:
/// 1–256 characters, no control characters (the rules of `guestInfo.id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuestId(String);

impl GuestId {
    /// Validates a guest id.
    ///
    /// # Errors
    /// The problem, reported on the field `guestId`.
    pub fn parse(raw: &str) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        check_text(&mut errors, "guestId", raw, 1, MAX_VALUE_CHARS, false);
        match ValidationErrors::from_vec(errors) {
            Some(e) => Err(e),
            None => Ok(Self(raw.to_owned())),
        }
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A caller-chosen key that separates handoffs of one conversation (`Idempotency-Key` header):
/// 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key.
    ///
    /// # Errors
    /// The problem, reported on the field `Idempotency-Key`.
    pub fn parse(raw: &str) -> Result<Self, ValidationErrors> {
        let ok = !raw.is_empty() && raw.len() <= MAX_IDEMPOTENCY_KEY_CHARS && raw.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationErrors::single(
                "Idempotency-Key",
                format!("must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"),
            ))
        }
    }
    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated handoff request: built only from validated parts (CONTRACT §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffRequest {
    conversation_id: ConversationId,
    guest: GuestInfo,
    reason: HandoffReason,
    context: HandoffContext,
    queue: Option<QueueId>,
    participant: Option<ParticipantId>,
}

impl HandoffRequest {
    /// Assembles a request from validated parts.
    pub fn new(
        conversation_id: ConversationId,
        guest: GuestInfo,
        reason: HandoffReason,
        context: HandoffContext,
        queue: Option<QueueId>,
        participant: Option<ParticipantId>,
    ) -> Self {
        Self { conversation_id, guest, reason, context, queue, participant }
    }

    /// Parses and validates the webhook payload, its ids with the platform's `ids` rules (which
    /// word the problems, e.g. `conversationId: must be a UUID` for Genesys). Unknown top-level
    /// fields are ignored.
    ///
    /// # Errors
    /// [`ValidationErrors`] listing every problem found, with its field path.
    pub fn from_json(payload: &Value, ids: &dyn IdRules) -> Result<Self, ValidationErrors> {
        let Some(obj) = payload.as_object() else {
            return Err(ValidationErrors::single("$", "must be a JSON object"));
        };
        let mut errors = Vec::new();

        let conversation_id = required_str(&mut errors, obj, "conversationId").and_then(|raw| {
            ConversationId::parse_with(ids, raw)
                .map_err(|e| errors.push(FieldError::new("conversationId", e.problem)))
                .ok()
        });

        let guest = match obj.get("guestInfo") {
            None | Some(Value::Null) => {
                errors.push(FieldError::new("guestInfo", "is required"));
                None
            }
            Some(Value::Object(g)) => {
                let id = required_str_at(&mut errors, g, "id", "guestInfo.id");
                let name = optional_str(&mut errors, g, "name", "guestInfo.name");
                let email = optional_str(&mut errors, g, "email", "guestInfo.email");
                // Content checks run on every field that is a string, so all problems are reported.
                if let Some(id) = id {
                    check_text(&mut errors, "guestInfo.id", id, 1, MAX_VALUE_CHARS, false);
                }
                if let Ok(Some(name)) = name {
                    check_text(&mut errors, "guestInfo.name", name, 0, MAX_VALUE_CHARS, false);
                }
                if let Ok(Some(email)) = email {
                    check_email(&mut errors, "guestInfo.email", email);
                }
                match (id, name, email) {
                    (Some(id), Ok(name), Ok(email)) => Some(GuestInfo {
                        id: id.to_owned(),
                        name: name.filter(|n| !n.is_empty()).map(str::to_owned),
                        email: email.map(str::to_owned),
                    }),
                    _ => None,
                }
            }
            Some(_) => {
                errors.push(FieldError::new("guestInfo", "must be an object"));
                None
            }
        };

        let reason = required_str(&mut errors, obj, "handoffReason")
            .and_then(|raw| HandoffReason::parse(raw).map_err(|e| errors.extend(e.0)).ok());

        let context = match obj.get("customContext") {
            None | Some(Value::Null) => Some(HandoffContext::default()),
            Some(Value::Object(map)) => {
                let before = errors.len();
                let ctx = parse_context(&mut errors, map);
                (errors.len() == before).then_some(ctx)
            }
            Some(_) => {
                errors.push(FieldError::new("customContext", "must be an object of strings"));
                None
            }
        };

        let queue = optional_id(&mut errors, obj, ids, IdKind::Queue).map(|q| q.map(QueueId::from));
        let participant = optional_id(&mut errors, obj, ids, IdKind::Participant).map(|p| p.map(ParticipantId::from));

        match (conversation_id, guest, reason, context, ValidationErrors::from_vec(errors)) {
            (Some(c), Some(g), Some(r), Some(ctx), None) => {
                Ok(Self::new(c, g, r, ctx, queue.flatten(), participant.flatten()))
            }
            (_, _, _, _, Some(errors)) => Err(errors),
            // Unreachable in practice: a missing part always records an error.
            _ => Err(ValidationErrors::single("$", "is not a valid handoff request")),
        }
    }

    /// Reads back a request the ledger stored ([`to_json`](Self::to_json)), its ids with the
    /// domain's generic check only ([`OpaqueIds`]): a stored row is never refused because the
    /// platform's rules got stricter.
    ///
    /// # Errors
    /// [`ValidationErrors`] listing every problem found, with its field path.
    pub fn from_stored_json(payload: &Value) -> Result<Self, ValidationErrors> {
        Self::from_json(payload, &OpaqueIds)
    }

    /// The canonical payload JSON of this request; [`from_json`](Self::from_json) (with the rules
    /// that accepted it) and [`from_stored_json`](Self::from_stored_json) read it back unchanged.
    /// The ledger stores requests in this form.
    pub fn to_json(&self) -> Value {
        let mut guest = Map::new();
        guest.insert("id".into(), self.guest.id.clone().into());
        if let Some(n) = &self.guest.name {
            guest.insert("name".into(), n.clone().into());
        }
        if let Some(e) = &self.guest.email {
            guest.insert("email".into(), e.clone().into());
        }
        let context: Map<String, Value> =
            self.context.0.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let mut obj = Map::new();
        obj.insert("conversationId".into(), self.conversation_id.to_string().into());
        obj.insert("guestInfo".into(), Value::Object(guest));
        obj.insert("handoffReason".into(), self.reason.0.clone().into());
        obj.insert("customContext".into(), Value::Object(context));
        if let Some(q) = self.queue {
            obj.insert("queueId".into(), q.to_string().into());
        }
        if let Some(p) = self.participant {
            obj.insert("participantId".into(), p.to_string().into());
        }
        Value::Object(obj)
    }

    /// This request without personal data: the guest's name and e-mail and the bot's context
    /// removed; the guest's id, the reason, the queue and the participant kept (what the stats,
    /// the read side and erasure need). What retention and erasure leave in the ledger.
    #[must_use]
    pub fn without_personal_data(&self) -> Self {
        Self {
            guest: GuestInfo { id: self.guest.id.clone(), name: None, email: None },
            context: HandoffContext::default(),
            ..self.clone()
        }
    }

    /// Whether it holds personal data: the guest's name or e-mail, or any context entry.
    pub fn has_personal_data(&self) -> bool {
        self.guest.name.is_some() || self.guest.email.is_some() || !self.context.is_empty()
    }

    /// The conversation to hand off.
    pub fn conversation_id(&self) -> ConversationId {
        self.conversation_id
    }
    /// The guest.
    pub fn guest(&self) -> &GuestInfo {
        &self.guest
    }
    /// Why the bot handed off.
    pub fn reason(&self) -> &HandoffReason {
        &self.reason
    }
    /// The bot's context.
    pub fn context(&self) -> &HandoffContext {
        &self.context
    }
    /// The queue the bot asked for, if any (still subject to the allowlist).
    pub fn requested_queue(&self) -> Option<QueueId> {
        self.queue
    }
    /// The participant the bot says holds the conversation, if given.
    pub fn participant(&self) -> Option<ParticipantId> {
        self.participant
    }
}

fn required_str<'a>(errors: &mut Vec<FieldError>, obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    required_str_at(errors, obj, key, key)
}

fn required_str_at<'a>(
    errors: &mut Vec<FieldError>,
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(path, "is required"));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.push(FieldError::new(path, "must be a string"));
            None
        }
    }
}

/// `Ok(None)` when absent or null, `Err(())` (already reported) when not a string.
fn optional_str<'a>(
    errors: &mut Vec<FieldError>,
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ()> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => {
            errors.push(FieldError::new(path, "must be a string"));
            Err(())
        }
    }
}

/// An optional id field: `Some(None)` when absent or null, `None` (already reported) when invalid.
fn optional_id(
    errors: &mut Vec<FieldError>,
    obj: &Map<String, Value>,
    ids: &dyn IdRules,
    kind: IdKind,
) -> Option<Option<crate::ids::OpaqueId>> {
    let key = kind.field();
    match obj.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => match ids.parse(kind, s) {
            Ok(v) => Some(Some(v)),
            Err(problem) => {
                errors.push(FieldError::new(key, problem));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(key, ids.not_a_string(kind)));
            None
        }
    }
}

fn check_text(errors: &mut Vec<FieldError>, path: &str, value: &str, min: usize, max: usize, allow_control: bool) {
    let chars = value.chars().count();
    if chars < min {
        errors.push(FieldError::new(path, "must not be empty"));
    } else if chars > max {
        errors.push(FieldError::new(path, format!("must be at most {max} characters (got {chars})")));
    }
    if !allow_control && value.chars().any(char::is_control) {
        errors.push(FieldError::new(path, "must not contain control characters"));
    }
}

fn check_email(errors: &mut Vec<FieldError>, path: &str, email: &str) {
    let before = errors.len();
    check_text(errors, path, email, 1, MAX_VALUE_CHARS, false);
    if errors.len() > before {
        return;
    }
    if !is_plausible_email(email) {
        errors.push(FieldError::new(path, "must be an email address like name@example.com"));
    }
}

/// `local@domain.tld`: one `@`, no whitespace, a non-empty local part, and a domain of non-empty
/// dot-separated labels with at least one dot. Deliberately not RFC 5322: it only has to catch
/// mistakes, not prove deliverability.
fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace)
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

fn context_key_path(key: &str) -> String {
    if is_valid_context_key(key) {
        format!("customContext.{key}")
    } else {
        let shown: String = key.chars().take(MAX_CONTEXT_KEY_CHARS).collect();
        let quoted = serde_json::to_string(&shown).unwrap_or_else(|_| "\"?\"".to_owned());
        format!("customContext[{quoted}]")
    }
}

fn is_valid_context_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_CONTEXT_KEY_CHARS
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn parse_context(errors: &mut Vec<FieldError>, map: &Map<String, Value>) -> HandoffContext {
    if map.len() > MAX_CONTEXT_KEYS {
        errors.push(FieldError::new(
            "customContext",
            format!("must have at most {MAX_CONTEXT_KEYS} entries (got {})", map.len()),
        ));
    }
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let path = context_key_path(key);
        if !is_valid_context_key(key) {
            errors.push(FieldError::new(
                &path,
                format!("key must be 1-{MAX_CONTEXT_KEY_CHARS} characters of A-Z a-z 0-9 _ . -"),
            ));
            continue;
        }
        if is_reserved_key(key) {
            errors.push(FieldError::new(&path, "is reserved by the handoff service"));
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => {
                errors.push(FieldError::new(&path, "must be a string, number or boolean, not null"));
                continue;
            }
            Value::Array(_) | Value::Object(_) => {
                errors.push(FieldError::new(&path, "must be a string, number or boolean"));
                continue;
            }
        };
        let before = errors.len();
        check_text(errors, &path, &text, 0, MAX_VALUE_CHARS, true);
        if errors.len() == before {
            out.insert(key.clone(), text);
        }
    }
    HandoffContext(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::AttributeSet;
    use crate::ids::HandoffId;
    use crate::testkit::{any_json, mutated_payload, sample_payload as sample, valid_payload, UuidIds};
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    /// `sample()` with `pointer` (a JSON pointer) replaced by `value`.
    fn with(pointer: &str, value: Value) -> Value {
        let mut payload = sample();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer has a slash");
        let target = payload.pointer_mut(parent).and_then(Value::as_object_mut).expect("parent is an object");
        target.insert(key.to_owned(), value);
        payload
    }

    /// `sample()` without the field at `pointer`.
    fn without(pointer: &str) -> Value {
        let mut payload = sample();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer has a slash");
        payload.pointer_mut(parent).and_then(Value::as_object_mut).expect("parent is an object").remove(key);
        payload
    }

    fn rejected(payload: &Value) -> Vec<FieldError> {
        match HandoffRequest::from_json(payload, &UuidIds) {
            Ok(request) => panic!("payload was accepted: {request:?}"),
            Err(errors) => errors.errors().to_vec(),
        }
    }

    /// Asserts the payload is rejected with exactly one problem, on `field`, mentioning `needle`.
    fn assert_single_error(payload: &Value, field: &str, needle: &str) {
        let errors = rejected(payload);
        assert_eq!(errors.len(), 1, "expected one error on {field}, got {errors:?}");
        assert_eq!(errors[0].field, field, "{errors:?}");
        assert!(errors[0].problem.contains(needle), "problem {:?} does not mention {needle:?}", errors[0].problem);
    }

    fn context_of(entries: usize) -> Value {
        Value::Object((0..entries).map(|i| (format!("key_{i}"), Value::String(format!("value {i}")))).collect())
    }

    #[test]
    fn the_tutorial_sample_payload_is_accepted() {
        // Arrange
        let payload = sample();

        // Act
        let request = HandoffRequest::from_json(&payload, &UuidIds).expect("the sample is valid");

        // Assert
        assert_eq!(request.conversation_id().to_string(), "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
        assert_eq!(request.guest().id(), "guest-8842-xyz");
        assert_eq!(request.guest().name(), Some("Jane Doe"));
        assert_eq!(request.guest().email(), Some("jane.doe@example.com"));
        assert_eq!(request.reason().as_str(), "complex_billing_dispute");
        assert_eq!(request.context().len(), 2);
        assert_eq!(request.context().get("sentiment_score"), Some("0.32"));
        assert_eq!(request.requested_queue(), None);
        assert_eq!(request.participant(), None);
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_rejected_at_the_root() {
        for payload in [json!(null), json!([]), json!("text"), json!(42), json!(true)] {
            // Act
            let errors = rejected(&payload);

            // Assert
            assert_eq!(errors, vec![FieldError::new("$", "must be a JSON object")], "{payload}");
        }
    }

    #[test]
    fn unknown_top_level_fields_are_ignored() {
        // Arrange
        let payload = with("/botPlatform", json!({ "name": "anything", "nested": [1, 2, 3] }));

        // Act
        let request = HandoffRequest::from_json(&payload, &UuidIds);

        // Assert
        assert_eq!(request, HandoffRequest::from_json(&sample(), &UuidIds));
    }

    #[test]
    fn a_missing_conversation_id_is_reported_as_required() {
        assert_single_error(&without("/conversationId"), "conversationId", "required");
        assert_single_error(&with("/conversationId", Value::Null), "conversationId", "required");
    }

    #[test]
    fn a_conversation_id_that_is_not_a_uuid_is_rejected() {
        for bad in [
            "",
            "not-a-uuid",
            "../../admin",
            "a1b2c3d4e5f67890abcdef1234567890",
            "{a1b2c3d4-e5f6-7890-abcd-ef1234567890}",
        ] {
            assert_single_error(&with("/conversationId", json!(bad)), "conversationId", "UUID");
        }
        assert_single_error(&with("/conversationId", json!(12)), "conversationId", "string");
    }

    #[test]
    fn a_conversation_id_in_upper_case_is_accepted_and_normalised() {
        // Arrange
        let payload = with("/conversationId", json!("A1B2C3D4-E5F6-7890-ABCD-EF1234567890"));

        // Act
        let request = HandoffRequest::from_json(&payload, &UuidIds).expect("upper case UUIDs are valid");

        // Assert
        assert_eq!(request.conversation_id().to_string(), "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
    }

    #[test]
    fn ids_are_checked_and_worded_by_the_platform_rules() {
        // Arrange: ids a UUID platform refuses, but the domain's generic check accepts.
        let payload = json!({
            "conversationId": "0123456789abcdef01234567",
            "guestInfo": { "id": "guest-1" },
            "handoffReason": "billing",
            "queueId": "360001234567",
            "participantId": "bot.integration~1",
        });

        // Act
        let strict = HandoffRequest::from_json(&payload, &UuidIds).unwrap_err();
        let generic = HandoffRequest::from_json(&payload, &OpaqueIds).expect("opaque ids are valid");

        // Assert
        assert_eq!(
            strict.errors(),
            [
                FieldError::new("conversationId", "must be a UUID"),
                FieldError::new("queueId", "must be a UUID"),
                FieldError::new("participantId", "must be a UUID"),
            ]
        );
        assert_eq!(generic.conversation_id().as_str(), "0123456789abcdef01234567");
        assert_eq!(generic.requested_queue().map(|q| q.to_string()).as_deref(), Some("360001234567"));
        assert_eq!(generic.participant().map(|p| p.to_string()).as_deref(), Some("bot.integration~1"));
    }

    #[test]
    fn the_generic_rules_refuse_ids_that_are_not_url_safe_or_too_long() {
        for bad in ["", "../../admin", "a b", "a#b", "ü", &"c".repeat(65)] {
            let errors = HandoffRequest::from_json(&with("/conversationId", json!(bad)), &OpaqueIds).unwrap_err();
            assert_eq!(errors.errors(), [FieldError::new("conversationId", crate::ids::OPAQUE_ID_PROBLEM)], "{bad:?}");
        }
        let errors = HandoffRequest::from_json(&with("/queueId", json!(7)), &OpaqueIds).unwrap_err();
        assert_eq!(errors.errors(), [FieldError::new("queueId", "must be a string")]);
    }

    #[test]
    fn a_stored_request_is_read_back_with_the_generic_check_only() {
        // Arrange: stored under rules that accepted a non-UUID id.
        let stored =
            HandoffRequest::from_json(&with("/conversationId", json!("conv-42")), &OpaqueIds).expect("valid").to_json();

        // Act
        let read = HandoffRequest::from_stored_json(&stored);

        // Assert
        assert_eq!(
            read.expect("a stored row is never refused by stricter rules").conversation_id().as_str(),
            "conv-42"
        );
        assert!(HandoffRequest::from_json(&stored, &UuidIds).is_err());
    }

    #[test]
    fn guest_info_that_is_not_an_object_is_rejected() {
        for bad in [json!("guest-8842-xyz"), json!([]), json!(7)] {
            assert_single_error(&with("/guestInfo", bad), "guestInfo", "object");
        }
        assert_single_error(&without("/guestInfo"), "guestInfo", "required");
    }

    #[test]
    fn a_missing_or_empty_or_too_long_guest_id_is_rejected() {
        assert_single_error(&without("/guestInfo/id"), "guestInfo.id", "required");
        assert_single_error(&with("/guestInfo/id", json!("")), "guestInfo.id", "empty");
        assert_single_error(&with("/guestInfo/id", json!("g".repeat(257))), "guestInfo.id", "at most 256");
        assert_single_error(&with("/guestInfo/id", json!(8842)), "guestInfo.id", "string");
    }

    #[test]
    fn a_guest_id_of_exactly_256_characters_is_accepted() {
        // Arrange: 256 characters, more bytes than that.
        let payload = with("/guestInfo/id", json!("é".repeat(256)));

        // Act
        let request = HandoffRequest::from_json(&payload, &UuidIds);

        // Assert
        assert!(request.is_ok(), "{request:?}");
    }

    #[test]
    fn a_guest_name_over_256_characters_is_rejected() {
        assert_single_error(&with("/guestInfo/name", json!("n".repeat(257))), "guestInfo.name", "at most 256");
    }

    #[test]
    fn guest_name_and_email_are_optional() {
        // Arrange
        let mut payload = without("/guestInfo/name");
        payload["guestInfo"].as_object_mut().expect("object").remove("email");

        // Act
        let request = HandoffRequest::from_json(&payload, &UuidIds).expect("name and email are optional");

        // Assert
        assert_eq!(request.guest().name(), None);
        assert_eq!(request.guest().email(), None);
    }

    #[test]
    fn an_implausible_email_is_rejected() {
        for bad in
            ["jane", "jane@", "@example.com", "jane@example", "jane doe@example.com", "a@b@c.com", "jane@example..com"]
        {
            assert_single_error(&with("/guestInfo/email", json!(bad)), "guestInfo.email", "email");
        }
        assert_single_error(
            &with("/guestInfo/email", json!(format!("{}@example.com", "j".repeat(250)))),
            "guestInfo.email",
            "at most 256",
        );
    }

    #[test]
    fn guest_debug_output_never_shows_name_or_email() {
        // Arrange
        let request = HandoffRequest::from_json(&sample(), &UuidIds).expect("valid");

        // Act
        let debug = format!("{request:?}");

        // Assert
        assert!(!debug.contains("Jane Doe"), "{debug}");
        assert!(!debug.contains("jane.doe@example.com"), "{debug}");
    }

    #[test]
    fn an_empty_or_too_long_or_control_character_reason_is_rejected() {
        assert_single_error(&without("/handoffReason"), "handoffReason", "required");
        assert_single_error(&with("/handoffReason", json!("")), "handoffReason", "empty");
        assert_single_error(&with("/handoffReason", json!("r".repeat(129))), "handoffReason", "at most 128");
        assert_single_error(&with("/handoffReason", json!("billing\ndispute")), "handoffReason", "control");
        assert_single_error(&with("/handoffReason", json!("billing\u{7}")), "handoffReason", "control");
    }

    #[test]
    fn a_reason_of_exactly_128_characters_is_accepted() {
        assert!(HandoffRequest::from_json(&with("/handoffReason", json!("r".repeat(128))), &UuidIds).is_ok());
    }

    #[test]
    fn custom_context_that_is_not_an_object_is_rejected() {
        for bad in [json!("text"), json!(["a", "b"]), json!(3)] {
            assert_single_error(&with("/customContext", bad), "customContext", "object");
        }
    }

    #[test]
    fn a_missing_or_null_or_empty_custom_context_is_an_empty_context() {
        for payload in
            [without("/customContext"), with("/customContext", Value::Null), with("/customContext", json!({}))]
        {
            // Act
            let request = HandoffRequest::from_json(&payload, &UuidIds).expect("context is optional");

            // Assert
            assert!(request.context().is_empty(), "{payload}");
        }
    }

    #[test]
    fn custom_context_with_more_than_40_keys_is_rejected() {
        // Arrange
        let payload = with("/customContext", context_of(41));

        // Act + Assert
        assert_single_error(&payload, "customContext", "at most 40");
    }

    #[test]
    fn custom_context_with_exactly_40_keys_is_accepted() {
        // Act
        let request =
            HandoffRequest::from_json(&with("/customContext", context_of(40)), &UuidIds).expect("40 keys are allowed");

        // Assert
        assert_eq!(request.context().len(), MAX_CONTEXT_KEYS);
    }

    #[test]
    fn context_keys_with_characters_outside_the_allowed_set_are_rejected_with_a_quoted_path() {
        for (key, path) in [
            ("has space", r#"customContext["has space"]"#),
            ("slash/key", r#"customContext["slash/key"]"#),
            ("", r#"customContext[""]"#),
            ("quote\"key", r#"customContext["quote\"key"]"#),
            ("ünïcode", r#"customContext["ünïcode"]"#),
        ] {
            // Arrange
            let payload = with("/customContext", json!({ key: "value" }));

            // Act + Assert
            assert_single_error(&payload, path, "key must be");
        }
    }

    #[test]
    fn a_context_key_longer_than_64_characters_is_rejected() {
        // Arrange
        let long = "k".repeat(65);
        let payload = with("/customContext", json!({ long.clone(): "value" }));

        // Act
        let errors = rejected(&payload);

        // Assert: the path shows at most 64 characters of the key.
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, format!("customContext[\"{}\"]", &long[..64]));
        assert!(errors[0].problem.contains("1-64"), "{errors:?}");
    }

    #[test]
    fn a_context_key_of_exactly_64_allowed_characters_is_accepted() {
        let key = format!("{}.A-9_", "k".repeat(59));
        assert!(HandoffRequest::from_json(&with("/customContext", json!({ key: "v" })), &UuidIds).is_ok());
    }

    #[test]
    fn a_context_value_over_256_characters_is_rejected() {
        assert_single_error(
            &with("/customContext", json!({ "notes": "v".repeat(257) })),
            "customContext.notes",
            "at most 256",
        );
    }

    #[test]
    fn reserved_context_keys_are_rejected_not_overwritten() {
        for key in ["guest_name", "guest_id", "guest_email", "bot_handoff_reason", "bot_handoff_at", "bot_handoff_x"] {
            // Arrange
            let payload = with("/customContext", json!({ key: "sneaky" }));

            // Act + Assert
            assert_single_error(&payload, &format!("customContext.{key}"), "reserved");
        }
    }

    #[test]
    fn null_array_and_object_context_values_are_rejected() {
        assert_single_error(&with("/customContext", json!({ "a": null })), "customContext.a", "not null");
        assert_single_error(
            &with("/customContext", json!({ "a": [1] })),
            "customContext.a",
            "string, number or boolean",
        );
        assert_single_error(
            &with("/customContext", json!({ "a": {"b": 1} })),
            "customContext.a",
            "string, number or boolean",
        );
    }

    #[test]
    fn numbers_and_booleans_in_the_context_are_turned_into_strings() {
        // Arrange
        let payload =
            with("/customContext", json!({ "score": 0.32, "count": 3, "negative": -7, "vip": true, "churn": false }));

        // Act
        let request = HandoffRequest::from_json(&payload, &UuidIds).expect("numbers and booleans are accepted");

        // Assert
        let ctx = request.context();
        assert_eq!(ctx.get("score"), Some("0.32"));
        assert_eq!(ctx.get("count"), Some("3"));
        assert_eq!(ctx.get("negative"), Some("-7"));
        assert_eq!(ctx.get("vip"), Some("true"));
        assert_eq!(ctx.get("churn"), Some("false"));
    }

    #[test]
    fn queue_id_and_participant_id_must_be_uuids() {
        assert_single_error(&with("/queueId", json!("support")), "queueId", "UUID");
        assert_single_error(&with("/queueId", json!(5)), "queueId", "UUID");
        assert_single_error(&with("/participantId", json!("bot-1")), "participantId", "UUID");
        assert_single_error(&with("/participantId", json!({})), "participantId", "UUID");
    }

    #[test]
    fn valid_queue_id_and_participant_id_are_kept() {
        // Arrange
        let mut payload = with("/queueId", json!("11111111-2222-3333-4444-555555555555"));
        payload["participantId"] = json!("66666666-7777-8888-9999-AAAAAAAAAAAA");

        // Act
        let request = HandoffRequest::from_json(&payload, &UuidIds).expect("valid");

        // Assert
        assert_eq!(
            request.requested_queue().map(|q| q.to_string()).as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(
            request.participant().map(|p| p.to_string()).as_deref(),
            Some("66666666-7777-8888-9999-aaaaaaaaaaaa")
        );
    }

    #[test]
    fn every_problem_of_a_bad_payload_is_reported_at_once() {
        // Arrange
        let payload = json!({
            "conversationId": "nope",
            "guestInfo": { "id": "", "name": "n".repeat(300), "email": "not-an-email" },
            "handoffReason": "",
            "customContext": { "bad key": "x", "guest_name": "y", "ok": null, "long": "v".repeat(300) },
            "queueId": "q",
            "participantId": 9
        });

        // Act
        let errors = rejected(&payload);

        // Assert
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for expected in [
            "conversationId",
            "guestInfo.id",
            "guestInfo.name",
            "guestInfo.email",
            "handoffReason",
            r#"customContext["bad key"]"#,
            "customContext.guest_name",
            "customContext.ok",
            "customContext.long",
            "queueId",
            "participantId",
        ] {
            assert!(fields.contains(&expected), "{expected} missing from {fields:?}");
        }
        assert_eq!(errors.len(), 11, "{errors:?}");
    }

    #[test]
    fn a_payload_missing_every_required_field_reports_each_one() {
        // Act
        let errors = rejected(&json!({}));

        // Assert
        assert_eq!(
            errors,
            vec![
                FieldError::new("conversationId", "is required"),
                FieldError::new("guestInfo", "is required"),
                FieldError::new("handoffReason", "is required"),
            ]
        );
    }

    #[test]
    fn validation_errors_display_lists_every_problem() {
        // Arrange
        let errors = ValidationErrors::from_vec(vec![FieldError::new("a", "is bad"), FieldError::new("b", "is worse")])
            .expect("not empty");

        // Act
        let text = errors.to_string();

        // Assert
        assert_eq!(text, "invalid payload: a is bad; b is worse");
        assert_eq!(ValidationErrors::from_vec(Vec::new()), None);
    }

    #[test]
    fn idempotency_keys_are_1_to_128_visible_ascii_characters() {
        assert!(IdempotencyKey::parse("delivery-42").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        for bad in [String::new(), "k".repeat(129), "has space".to_owned(), "tab\tkey".to_owned(), "ключ".to_owned()]
        {
            let err = IdempotencyKey::parse(&bad).expect_err("invalid key accepted");
            assert_eq!(err.errors()[0].field, "Idempotency-Key");
        }
    }

    #[test]
    fn the_part_constructors_apply_the_same_rules_as_the_parser() {
        assert!(GuestInfo::new("guest", Some("Jane"), Some("jane@example.com")).is_ok());
        assert_eq!(GuestInfo::new("", None, Some("nope")).expect_err("invalid").errors().len(), 2);
        assert!(HandoffReason::parse("billing").is_ok());
        assert!(HandoffReason::parse("").is_err());
        assert!(HandoffContext::new([("a".to_owned(), "b".to_owned())]).is_ok());
        let err = HandoffContext::new([("guest_id".to_owned(), "x".to_owned())]).expect_err("reserved");
        assert_eq!(err.errors()[0].field, "customContext.guest_id");
    }

    // ---- property tests (strategies in `crate::testkit`) -----------------------------------

    proptest! {
        #[test]
        fn any_valid_payload_is_accepted_round_trips_and_reaches_the_attributes_unchanged(
            (payload, expected_context) in valid_payload(),
            millis in 0i64..4_102_444_800_000,
        ) {
            // Act
            let request = HandoffRequest::from_json(&payload, &UuidIds);

            // Assert: accepted
            let request = match request {
                Ok(r) => r,
                Err(e) => return Err(TestCaseError::fail(format!("valid payload rejected: {e}"))),
            };
            let context: BTreeMap<String, String> =
                request.context().iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            prop_assert_eq!(&context, &expected_context);

            // Assert: round trip
            let again = HandoffRequest::from_json(&request.to_json(), &UuidIds);
            prop_assert_eq!(again.as_ref(), Ok(&request));

            // Assert: every context entry reaches the attribute set unchanged, within the limits
            let at = Utc.timestamp_millis_opt(millis).single().expect("in range");
            let attributes = AttributeSet::for_handoff(&request, HandoffId::random(), at);
            let attributes = match attributes {
                Ok(a) => a,
                Err(e) => return Err(TestCaseError::fail(format!("attribute limits broken: {e}"))),
            };
            for (key, value) in &expected_context {
                prop_assert_eq!(attributes.get(key), Some(value.as_str()));
            }
            prop_assert!(attributes.len() <= crate::attributes::MAX_ATTRIBUTES);
            prop_assert!(attributes.iter().all(|(_, v)| v.chars().count() <= crate::attributes::MAX_ATTRIBUTE_VALUE_CHARS));
        }

        #[test]
        fn arbitrary_json_never_panics_and_every_rejection_names_a_field_and_a_problem(
            payload in prop_oneof![any_json(), mutated_payload()],
        ) {
            // Act
            let result = HandoffRequest::from_json(&payload, &UuidIds);

            // Assert
            if let Err(errors) = result {
                prop_assert!(!errors.errors().is_empty());
                for e in errors.errors() {
                    prop_assert!(!e.field.is_empty(), "empty field in {:?}", errors);
                    prop_assert!(!e.problem.is_empty(), "empty problem in {:?}", errors);
                }
            }
        }

        // The in-suite twins of fuzz/fuzz_targets/payload.rs (docs/fuzzing.md).

        #[test]
        fn any_accepted_payload_reads_back_unchanged_from_its_canonical_json_bytes(
            payload in prop_oneof![mutated_payload(), any_json()],
        ) {
            // Arrange
            let Ok(request) = HandoffRequest::from_json(&payload, &UuidIds) else { return Ok(()) };

            // Act
            let bytes = serde_json::to_vec(&request.to_json()).expect("a JSON value serialises");
            let again = serde_json::from_slice::<Value>(&bytes).map(|v| HandoffRequest::from_json(&v, &UuidIds));

            // Assert
            prop_assert_eq!(again.ok(), Some(Ok(request)));
        }

        #[test]
        fn an_idempotency_key_is_accepted_exactly_when_it_is_1_to_128_visible_ascii_characters(
            raw in prop_oneof![".{0,140}", "[!-~]{0,140}", "[ -~]{1,8}"],
        ) {
            // Act
            let key = IdempotencyKey::parse(&raw);

            // Assert
            let expected =
                (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
            prop_assert_eq!(key.as_ref().map(IdempotencyKey::as_str).ok(), expected.then_some(raw.as_str()));
        }
    }
}
