//! Log set-up for applications (feature `logging`): gradguard's WARN lines,
//! human-readable or as JSON for a log store. The level comes from `RUST_LOG`
//! (default `info`). A library never calls this.
//!
//! ```no_run
//! gradguard::logging::init(gradguard::logging::LogFormat::Text).unwrap();
//! ```

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-27T10:00:00Z  WARN gradguard: accumulated gradients: ...`
    Text,
    /// One JSON object per line, with the structured fields.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format `{s}`; expected text or json")),
        }
    }
}

/// Installs a global subscriber writing to stderr. Fails if one is installed.
pub fn init(format: LogFormat) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    init_with_writer(format, std::io::stderr)
}

/// Like [`init`], writing through `writer` (e.g. one that pauses progress bars).
pub fn init_with_writer<W>(
    format: LogFormat,
    writer: W,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
}
