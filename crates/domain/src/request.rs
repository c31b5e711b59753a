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
use crate::ids::{ConversationId, ParticipantId, QueueId};

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

    /// Parses and validates the webhook payload. Unknown top-level fields are ignored.
    ///
    /// # Errors
    /// [`ValidationErrors`] listing every problem found, with its field path.
    pub fn from_json(payload: &Value) -> Result<Self, ValidationErrors> {
        let Some(obj) = payload.as_object() else {
            return Err(ValidationErrors::single("$", "must be a JSON object"));
        };
        let mut errors = Vec::new();

        let conversation_id = required_str(&mut errors, obj, "conversationId").and_then(|raw| {
            ConversationId::parse(raw)
                .map_err(|_| errors.push(FieldError::new("conversationId", "must be a UUID")))
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

        let queue = optional_uuid(&mut errors, obj, "queueId", QueueId::parse);
        let participant = optional_uuid(&mut errors, obj, "participantId", ParticipantId::parse);

        match (conversation_id, guest, reason, context, ValidationErrors::from_vec(errors)) {
            (Some(c), Some(g), Some(r), Some(ctx), None) => {
                Ok(Self::new(c, g, r, ctx, queue.flatten(), participant.flatten()))
            }
            (_, _, _, _, Some(errors)) => Err(errors),
            // Unreachable in practice: a missing part always records an error.
            _ => Err(ValidationErrors::single("$", "is not a valid handoff request")),
        }
    }

    /// The canonical payload JSON of this request; [`from_json`](Self::from_json) reads it back
    /// unchanged. The ledger stores requests in this form.
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

fn optional_uuid<T>(
    errors: &mut Vec<FieldError>,
    obj: &Map<String, Value>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, crate::ids::InvalidId>,
) -> Option<Option<T>> {
    match obj.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => match parse(s) {
            Ok(v) => Some(Some(v)),
            Err(_) => {
                errors.push(FieldError::new(key, "must be a UUID"));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(key, "must be a UUID string"));
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
