//! Telemetry: a `tracing` subscriber writing JSON (or pretty) lines, filtered by `RUST_LOG`.

use tracing::subscriber::set_global_default;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::LogFormat;

/// A subscriber writing to `sink`, with `RUST_LOG` (or `default_filter`) as the filter.
pub fn subscriber<W>(default_filter: &str, format: LogFormat, sink: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = Registry::default().with(filter);
    match format {
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    // The request span (`method`, `matched_path`, `request_id`) in every line
                    // logged for a request, the handoff's outcome line included.
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(sink),
            ),
        ),
        LogFormat::Pretty => Box::new(registry.with(tracing_subscriber::fmt::layer().with_writer(sink))),
    }
}

/// Installs `subscriber` for the whole process. A second call is ignored (tests build many apps).
pub fn init(subscriber: Box<dyn Subscriber + Send + Sync>) {
    let _ = set_global_default(subscriber);
}
