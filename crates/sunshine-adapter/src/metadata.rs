//! The passControl `metadata` (api-notes §9): every context entry under its own key (the bot's
//! context and the reserved `bot_handoff_*`/`guest_*` keys), the Zendesk group under
//! `SUNSHINE_GROUP_KEY`, and, when `SUNSHINE_TAGS_KEY` is set, the reason and the group as
//! space-separated Zendesk tags. A flat object of strings, at most [`MAX_METADATA_BYTES`] of
//! serialized JSON (below the documented 4 KB however it is counted, api-notes §6).

use serde_json::{Map, Value};

/// The largest metadata sent, in bytes of serialized JSON.
pub const MAX_METADATA_BYTES: usize = 4000;

/// The metadata does not fit [`MAX_METADATA_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge(pub usize);

/// Builds the metadata. `reason` is the handoff reason (`bot_handoff_reason`), `group` the target.
///
/// # Errors
/// [`TooLarge`] with the size it would have.
pub fn build<'a>(
    context: impl IntoIterator<Item = (&'a str, &'a str)>,
    group: &str,
    group_key: &str,
    tags_key: Option<&str>,
) -> Result<Map<String, Value>, TooLarge> {
    let mut metadata: Map<String, Value> =
        context.into_iter().map(|(k, v)| (k.to_owned(), Value::String(v.to_owned()))).collect();
    let reason = metadata.get("bot_handoff_reason").and_then(Value::as_str).map(tag_part);
    metadata.insert(group_key.to_owned(), Value::String(group.to_owned()));
    if let Some(key) = tags_key {
        let mut tags = Vec::new();
        if let Some(reason) = reason {
            tags.push(format!("bot_handoff_reason_{reason}"));
        }
        tags.push(format!("bot_handoff_group_{}", tag_part(group)));
        metadata.insert(key.to_owned(), Value::String(tags.join(" ")));
    }
    let size = serialized_len(&metadata);
    if size > MAX_METADATA_BYTES {
        return Err(TooLarge(size));
    }
    Ok(metadata)
}

/// Bytes of the metadata as sent.
pub fn serialized_len(metadata: &Map<String, Value>) -> usize {
    serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len())
}

/// A Zendesk tag part: lower case, `[a-z0-9_-]`, anything else becomes `_`.
fn tag_part(raw: &str) -> String {
    raw.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_the_group_and_optional_tags_go_into_flat_string_metadata() {
        // Arrange
        let context = [("bot_handoff_reason", "Billing issue"), ("orderId", "A-1"), ("guest_id", "g-1")];

        // Act
        let plain = build(context, "360001", "bot_handoff_group", None).unwrap();
        let tagged =
            build(context, "360001", "dataCapture.ticketField.123", Some("dataCapture.systemField.tags")).unwrap();

        // Assert
        assert_eq!(plain["orderId"], "A-1");
        assert_eq!(plain["bot_handoff_group"], "360001");
        assert_eq!(plain.len(), 4);
        assert!(plain.values().all(Value::is_string));
        assert_eq!(tagged["dataCapture.ticketField.123"], "360001");
        assert_eq!(tagged["dataCapture.systemField.tags"], "bot_handoff_reason_billing_issue bot_handoff_group_360001");
    }

    #[test]
    fn metadata_over_4000_bytes_is_refused_and_exactly_4000_is_sent() {
        // `{"k":"…","g":"1"}`: 16 bytes plus the value.
        let exactly = "x".repeat(MAX_METADATA_BYTES - 16);
        let over = "x".repeat(MAX_METADATA_BYTES - 15);
        let fits = build([("k", exactly.as_str())], "1", "g", None).unwrap();
        assert_eq!(serialized_len(&fits), MAX_METADATA_BYTES);
        assert_eq!(build([("k", over.as_str())], "1", "g", None), Err(TooLarge(MAX_METADATA_BYTES + 1)));
    }
}
