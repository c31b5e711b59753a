//! What an adapter declares about its platform ([`PlatformRules`]): its id formats, the limits of
//! the context it keeps, how context and analytics travel, and whether transfers are confirmed
//! later. The domain reads these facts; it never names a platform.

use std::sync::Arc;
use std::time::Duration;

use crate::ids::IdRules;

/// What an adapter declares about its platform. The domain reads it; it never names a vendor.
#[derive(Debug, Clone)]
pub struct PlatformRules {
    /// A short lower-case name of the platform: logs, metrics label, conformance test names.
    pub name: &'static str,
    /// The platform's id formats.
    pub ids: Arc<dyn IdRules>,
    /// The limits of the context the platform keeps.
    pub context: ContextLimits,
    /// How the context reaches the platform.
    pub context_delivery: ContextDelivery,
    /// How the analytics of a transfer reach the platform.
    pub analytics: AnalyticsDelivery,
    /// The longest wait for an [`Accepted`](crate::ports::TransferResult::Accepted) transfer to
    /// show in a read-back; `None`: the platform's transfers are always
    /// [`Done`](crate::ports::TransferResult::Done).
    pub confirm_within: Option<Duration>,
}

/// How a platform measures a context's total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMeasure {
    /// The bytes of the context serialized as one flat JSON object of strings.
    SerializedJson,
    /// The sum of the values' bytes.
    ValueBytes,
}

/// The limits of the context a platform keeps; `None`: no such limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextLimits {
    /// At most this many keys (the reserved keys included).
    pub max_keys: Option<usize>,
    /// At most this many characters per value.
    pub max_value_chars: Option<usize>,
    /// At most this many bytes in total, measured by `total_measure`.
    pub max_total_bytes: Option<usize>,
    /// How `max_total_bytes` is measured.
    pub total_measure: TotalMeasure,
}

impl ContextLimits {
    /// No limit at all.
    pub const NONE: ContextLimits = ContextLimits {
        max_keys: None,
        max_value_chars: None,
        max_total_bytes: None,
        total_measure: TotalMeasure::ValueBytes,
    };
}

/// How the context reaches the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextDelivery {
    /// [`TransferPort::write_context`](crate::ports::TransferPort::write_context) at the located
    /// anchor, before the transfer.
    Separate,
    /// The context rides on [`TransferPort::transfer`](crate::ports::TransferPort::transfer);
    /// `write_context` is never called.
    WithTransfer,
}

/// How the analytics of a transfer reach the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalyticsDelivery {
    /// An outbox event per transfer, delivered by
    /// [`AnalyticsPort::record`](crate::ports::AnalyticsPort::record).
    Separate,
    /// The reason travels with the transfer (in the context): no outbox event is written.
    WithTransfer,
}
