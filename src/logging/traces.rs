//! OpenTelemetry traces of MCP requests, off unless an OTLP endpoint is
//! configured. Spans are ordinary `tracing` spans with the target
//! [`TARGET`]: while traces are off, the log filter disables that target, so
//! a request pays for one disabled span and nothing else; while on, only
//! the OpenTelemetry layer sees them (log lines do not change) and a batch
//! processor on the tokio runtime exports them over OTLP (HTTP/protobuf).
//! A client's W3C `traceparent` makes its span the parent of ours.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::{Resource, runtime};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every span meant for export.
pub const TARGET: &str = "erlmcp::traces";

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set once the exporter is installed; read per request to decide whether
/// a `traceparent` is worth parsing.
static ON: AtomicBool = AtomicBool::new(false);

/// True while spans are exported.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// True when traces are on and the caller is inside a traced span: the
/// condition for a child span (work outside any request, a background
/// write, starts no trace of its own).
pub fn in_trace() -> bool {
    enabled() && !tracing::Span::current().is_none()
}

/// Where and how to export (from `[tracing]` in the configuration).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The collector's OTLP/HTTP base URL; spans go to `/v1/traces` below it.
    pub endpoint: String,
    pub service_name: String,
    /// `service.instance.id`: which node of a pair sent the span.
    pub instance: String,
    /// Share of locally started traces kept; a remote parent's decision wins.
    pub sampling_ratio: f64,
}

#[derive(Debug, Error)]
pub enum TracesError {
    #[error("tracing.otlp_endpoint {endpoint:?}: {message}")]
    Exporter { endpoint: String, message: String },
}

/// The running exporter; [`Exporter::shutdown`] flushes what is queued.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Exports the spans still queued and stops. Call from outside the
    /// runtime's worker threads while the runtime still runs (the batch
    /// processor is a task on it).
    pub fn shutdown(self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces: the last spans may not have been exported");
        }
    }
}

/// The exporter's provider. Must run inside the tokio runtime (the batch
/// processor spawns its task there).
pub(super) fn provider(s: &Settings) -> Result<SdkTracerProvider, TracesError> {
    let url = format!("{}/v1/traces", s.endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TracesError::Exporter {
            endpoint: s.endpoint.clone(),
            message: e.to_string(),
        })?;
    let batches = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    let resource = Resource::builder()
        .with_service_name(s.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            crate::release::VERSION,
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            s.instance.clone(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            s.sampling_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The `tracing` layer that turns our spans into OpenTelemetry spans.
pub(super) fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("erlmcp"))
        // Log events inside a span are not span events.
        .with_tracked_inactivity(false)
}

pub(super) fn started(provider: SdkTracerProvider) -> Exporter {
    ON.store(true, Ordering::Relaxed);
    Exporter { provider }
}

/// The client's trace context (W3C `traceparent` and `tracestate`), kept
/// only when traces are on and the header names a valid span.
#[derive(Clone, Debug, Default)]
pub struct Parent(Option<opentelemetry::Context>);

impl Parent {
    pub fn from_headers(h: &http::HeaderMap) -> Parent {
        if !enabled() || !h.contains_key("traceparent") {
            return Parent(None);
        }
        let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(h));
        Parent(cx.span().span_context().is_valid().then_some(cx))
    }

    /// Makes the remote span the parent of `span` (a new, not yet entered
    /// span); without one, `span` keeps its own parent.
    pub fn adopt(&self, span: &tracing::Span) {
        if let Some(cx) = &self.0 {
            let _ = span.set_parent(cx.clone());
        }
    }
}
