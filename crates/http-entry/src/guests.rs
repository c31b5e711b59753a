//! Guest erasure: `DELETE /guests/{guestId}`, behind the admin guard ([`AdminAccess`]).
//!
//! Removes the guest's name, e-mail and the bot's context from every handoff record of that guest
//! (the ledger's `erase_guest`); the records themselves, their guest id, reason, queue, stage and
//! history stay, so the stats and replays keep working. Erasing again, or erasing a guest the
//! ledger never saw, answers 200 with `erasedHandoffs: 0`. The guest's id is not logged.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use handoff_domain::GuestId;
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::AdminAccess;
use crate::error::{ApiError, ErrorBody, InvalidPayloadBody};
use crate::state::AppState;

/// `DELETE /guests/{guestId}`.
#[utoipa::path(
    delete,
    path = "/guests/{guestId}",
    tag = "privacy",
    operation_id = "eraseGuest",
    summary = "Erase a guest's personal data from every handoff record",
    description = "Removes `guestInfo.name`, `guestInfo.email` and `customContext` from every record of the guest \
(`guestInfo.id` as the bot sent it, percent-encoded in the path). With the SQLite ledger the data is also gone \
from the database files when the answer arrives (zeroed pages, truncated WAL); with PostgreSQL the old row \
versions stay until VACUUM reclaims them (docs/operations.md, \"Privacy\"). A deferred handoff of the guest still \
runs, without that data.",
    params(("guestId" = String, Path, description = "`guestInfo.id` of the webhook payload: 1-256 characters, \
no control characters.")),
    responses(
        (status = 200, body = ErasureView, description = "Erased (`erasedHandoffs` is 0 for an unknown guest or a \
repeated erasure)."),
        (status = 400, body = InvalidPayloadBody, description = "`guestId` is empty, too long or has control \
characters (`invalid_request`)."),
        (status = 401, body = ErrorBody, description = "Missing or wrong admin token (or, while \
HANDOFF_ADMIN_TOKEN is unset, webhook credentials).", example = json!({"error": "unauthorized"})),
        (status = 503, description = "The ledger could not be used (nothing or everything was erased; retry).",
            body = ErrorBody, example = json!({"error": "unavailable"})),
    ),
    security(("adminBearer" = []), ("adminBasic" = []), ("bearer" = []), ("basic" = []), ("hmacTimestamp" = [], "hmacSignature" = [])),
)]
pub(crate) async fn erase_guest(
    _: AdminAccess,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ErasureView>, ApiError> {
    let Ok(Path(raw)) = path else {
        return Err(ApiError::invalid_parameter("guestId", "must be valid percent-encoded UTF-8"));
    };
    let guest = GuestId::parse(&raw).map_err(ApiError::InvalidParameters)?;
    let erased = state.service().ledger().erase_guest(&guest).await?;
    tracing::info!(erased_handoffs = erased, "guest personal data erased");
    Ok(Json(ErasureView { erased_handoffs: erased }))
}

/// The answer of `DELETE /guests/{guestId}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErasureView {
    /// Records that held the guest's personal data and no longer do.
    #[schema(example = 2)]
    erased_handoffs: u64,
}

#[cfg(test)]
mod tests;
