//! `[telemetry]` (DESIGN §13): where OpenTelemetry traces go, and how many.
//! With no endpoint (neither the key nor `OTEL_EXPORTER_OTLP_ENDPOINT`),
//! tracing is off and costs nothing.

use http::Uri;

use super::walk::{Report, Section, check_keys};
use crate::credentials::Sources;

/// The OpenTelemetry variables honoured when the file says nothing.
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// A full traces URL (`/v1/traces` not appended), as the specification says.
pub const ENV_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// The batch queue's bounds (OpenTelemetry's batch span processor variables).
pub const ENV_MAX_QUEUE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
pub const ENV_MAX_BATCH: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";

pub const KEYS: &[&str] = &["otlp_endpoint", "sample_ratio", "service_name"];

/// Tracing, when on.
#[derive(Clone, Debug, PartialEq)]
pub struct Telemetry {
    /// Where spans are posted: `{otlp_endpoint}/v1/traces`.
    pub traces_url: Uri,
    /// Of the traces this proxy starts; a client's sampled flag is followed.
    pub sample_ratio: f64,
    pub service_name: String,
    /// Spans waiting for export at most; more are dropped and counted.
    pub max_queue: usize,
    pub max_batch: usize,
}

pub const DEFAULT_SERVICE_NAME: &str = "modelarts-proxy";
/// The specification's defaults for the batch span processor.
pub const DEFAULT_MAX_QUEUE: usize = 2048;
pub const DEFAULT_MAX_BATCH: usize = 512;

/// `[telemetry]`, or the OpenTelemetry variables; `None`: tracing is off.
pub fn telemetry(
    report: &mut Report,
    s: Option<&Section<'_>>,
    sources: &dyn Sources,
) -> Option<Telemetry> {
    if let Some(s) = s {
        check_keys(report, s.table, &s.path, KEYS);
    }
    let env = |name: &str| {
        sources
            .env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let ratio = s.and_then(|s| sample_ratio(report, s)).unwrap_or(1.0);
    let service_name = s
        .and_then(|s| s.str(report, "service_name"))
        .map(str::to_owned)
        .or_else(|| env(ENV_SERVICE_NAME))
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let (text, path, full) = match s.and_then(|s| s.str(report, "otlp_endpoint")) {
        Some(e) => (e.to_owned(), "telemetry.otlp_endpoint".to_owned(), false),
        None => match (env(ENV_OTLP_TRACES_ENDPOINT), env(ENV_OTLP_ENDPOINT)) {
            (Some(e), _) => (e, ENV_OTLP_TRACES_ENDPOINT.to_owned(), true),
            (None, Some(e)) => (e, ENV_OTLP_ENDPOINT.to_owned(), false),
            (None, None) => return None,
        },
    };
    let url = if full {
        text.clone()
    } else {
        format!("{}/v1/traces", text.trim_end_matches('/'))
    };
    let traces_url = match url.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        _ => {
            report.error(
                path,
                format!("{text:?} is not an http(s) URL such as \"http://127.0.0.1:4318\""),
            );
            return None;
        }
    };
    let bound = |report: &mut Report, name: &str, default: usize| match env(name) {
        None => default,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                report.error(name, format!("{v:?} is not a positive whole number"));
                default
            }
        },
    };
    let max_queue = bound(report, ENV_MAX_QUEUE, DEFAULT_MAX_QUEUE);
    let max_batch = bound(report, ENV_MAX_BATCH, DEFAULT_MAX_BATCH).min(max_queue);
    Some(Telemetry {
        traces_url,
        sample_ratio: ratio,
        service_name,
        max_queue,
        max_batch,
    })
}

fn sample_ratio(report: &mut Report, s: &Section<'_>) -> Option<f64> {
    let value = s.get("sample_ratio")?;
    let ratio = value
        .as_float()
        .or_else(|| value.as_integer().map(|i| i as f64));
    match ratio {
        Some(r) if (0.0..=1.0).contains(&r) => Some(r),
        _ => {
            report.error(
                s.key_path("sample_ratio"),
                "must be a number from 0.0 to 1.0",
            );
            None
        }
    }
}
