//! Optional OpenTelemetry traces, exported over OTLP/HTTP (off unless gateway.yaml has a
//! `tracing` section): a span per request, a child per upstream try and per aggregate call.
//!
//! A request's span continues the client's `traceparent`; what goes upstream carries the
//! try's (or call's) span as parent, so the upstream's spans nest under the gateway's.
//! When tracing is off, `traceparent` passes through unchanged and nothing here runs.

use crate::config::gateway::TracingSettings;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use std::sync::OnceLock;
use std::time::Duration;

static TRACER: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// Starts the exporter. Errors are reported, and tracing stays off.
pub fn init(settings: Option<&TracingSettings>) -> Result<(), String> {
    let Some(s) = settings else { return Ok(()) };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(s.otlp_endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("tracing: cannot build the OTLP exporter: {e}"))?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(s.export_interval.0)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            s.sample_ratio.clamp(0.0, 1.0),
        ))))
        .with_resource(
            Resource::builder_empty()
                .with_service_name(s.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("gateway");
    let _ = TRACER.set((provider, tracer));
    Ok(())
}

fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get().map(|(_, t)| t)
}

/// The remote parent named by a well-formed `traceparent` (version 00).
pub fn remote_parent(traceparent: &str) -> Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let parts: Vec<&str> = traceparent.split('-').collect();
    let parsed = match parts.as_slice() {
        ["00", trace, span, flags] => (|| {
            let trace = TraceId::from_hex(trace).ok()?;
            let span = SpanId::from_hex(span).ok()?;
            let flags = u8::from_str_radix(flags, 16).ok()?;
            Some(SpanContext::new(
                trace,
                span,
                TraceFlags::new(flags),
                true,
                TraceState::default(),
            ))
        })(),
        _ => None,
    };
    match parsed {
        Some(sc) if sc.is_valid() => Context::new().with_remote_span_context(sc),
        _ => Context::new(),
    }
}

/// The span of one request, continuing `traceparent`; `None` when tracing is off.
pub fn request(traceparent: &str, method: &str, path: &str) -> Option<Context> {
    let tracer = tracer()?;
    let parent = remote_parent(traceparent);
    let span = tracer
        .span_builder("gateway.request")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.path", path.to_string()),
        ])
        .start_with_context(tracer, &parent);
    Some(parent.with_span(span))
}

/// Whether traces are exported at all (checked before building a span's inputs).
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// A child of `parent`: an upstream try or an aggregate call.
pub fn child(parent: &Context, name: &'static str, attrs: Vec<KeyValue>) -> Option<Context> {
    let tracer = tracer()?;
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attrs)
        .start_with_context(tracer, parent);
    Some(parent.with_span(span))
}

/// The `traceparent` that makes `cx`'s span the parent of what the upstream records.
pub fn traceparent(cx: &Context) -> String {
    let sc = cx.span().span_context().clone();
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// Ends `cx`'s span with an HTTP status (0: no answer) and an error when there is one.
/// A WebSocket or event stream ended: the request's span (which lasted as long as the
/// stream) says how, and what it carried each way.
pub fn stream_ended(cx: &Context, reason: &'static str, from_client: u64, to_client: u64) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("gateway.stream.end", reason));
    let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    span.set_attribute(KeyValue::new(
        "gateway.stream.bytes_from_client",
        bytes(from_client),
    ));
    span.set_attribute(KeyValue::new(
        "gateway.stream.bytes_to_client",
        bytes(to_client),
    ));
}

pub fn end(cx: &Context, status: u16, error: Option<String>) {
    let span = cx.span();
    if status > 0 {
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    match error {
        Some(e) => span.set_status(Status::error(e)),
        None if status >= 500 => span.set_status(Status::error(format!("status {status}"))),
        None => {}
    }
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_parents() {
        let cx = remote_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(!remote_parent("garbage").span().span_context().is_valid());
        assert!(!remote_parent("00-zz-00f067aa0ba902b7-01")
            .span()
            .span_context()
            .is_valid());
    }
}
