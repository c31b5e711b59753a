//! The read-back the scenarios assert on: `TransferPort::locate` as the ports report it
//! ([`Located`]: control state, handed-to, handle), and a transfer from what it located, with
//! the context when the adapter declares `ContextDelivery::WithTransfer`.

use chrono::Utc;
use handoff_domain::ports::{Located, PortError, TransferPort, TransferResult};
use handoff_domain::{ContextDelivery, ContextSet, ConversationId, HandoffId, HandoffRequest, QueueId};

/// `TransferPort::locate` without a holder hint.
///
/// # Errors
/// The port's error.
pub async fn locate(port: &dyn TransferPort, conversation: ConversationId) -> Result<Located, PortError> {
    port.locate(conversation, None).await
}

/// `TransferPort::transfer` from the handle `located` holds, to `target`; the context of
/// `request` rides along exactly when the adapter declares `ContextDelivery::WithTransfer`.
///
/// # Panics
/// When `located` has no handle or the context does not fit: a scenario bug.
///
/// # Errors
/// The port's error.
pub async fn transfer(
    port: &dyn TransferPort,
    conversation: ConversationId,
    located: &Located,
    target: QueueId,
    request: &HandoffRequest,
) -> Result<TransferResult, PortError> {
    let handle = located.handle.clone().unwrap_or_else(|why| panic!("nothing to transfer from: {why:?}"));
    let rules = port.rules();
    let context = match rules.context_delivery {
        ContextDelivery::Separate => None,
        ContextDelivery::WithTransfer => Some(
            ContextSet::for_handoff(request, HandoffId::random(), Utc::now(), &rules.context)
                .unwrap_or_else(|e| panic!("the scenario's context does not fit: {e}")),
        ),
    };
    port.transfer(conversation, handle, target, context.as_ref()).await
}
