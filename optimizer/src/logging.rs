//! Log set-up for applications (feature `logging`): gradguard's WARN lines,
//! human-readable or as JSON for a log store. The level comes from `RUST_LOG`
//! (default `info`). A library never calls this.
//!
//! Text lines are coloured only when they go to a terminal and `NO_COLOR` is
//! not set (<https://no-color.org>): a log file or a pipe gets plain text.
//!
//! ```no_run
//! gradguard::logging::init(gradguard::logging::LogFormat::Text).unwrap();
//! ```

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-27T10:00:00Z  WARN gradguard: accumulated gradients: ...`
    Text,
    /// One JSON object per line, with the structured fields (never coloured).
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

/// When text lines carry ANSI colour codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Color {
    /// Colour when stderr is a terminal and `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    /// Always colour (e.g. a terminal behind a progress-bar writer).
    Always,
    /// Never colour.
    Never,
}

impl Color {
    /// Whether to colour, given whether the stream is a terminal and the
    /// value of `NO_COLOR` (any non-empty value turns colour off).
    ///
    /// ```
    /// use gradguard::logging::Color;
    /// assert!(Color::Auto.enabled(true, None));
    /// assert!(!Color::Auto.enabled(false, None)); // a file or a pipe
    /// assert!(!Color::Auto.enabled(true, Some("1".as_ref())));
    /// assert!(Color::Always.enabled(false, Some("1".as_ref())));
    /// ```
    pub fn enabled(self, is_terminal: bool, no_color: Option<&OsStr>) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => is_terminal && no_color.is_none_or(|v| v.is_empty()),
        }
    }

    /// [`Color::enabled`] for this process's stderr and environment.
    pub fn for_stderr(self) -> bool {
        self.enabled(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        )
    }
}

/// Installs a global subscriber writing to stderr, coloured only on a
/// terminal without `NO_COLOR`. Fails if one is installed.
pub fn init(format: LogFormat) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    init_with_writer(format, std::io::stderr, Color::Auto)
}

/// Like [`init`], writing through `writer` (e.g. one that pauses progress
/// bars). `Color::Auto` decides by stderr, where such writers end.
pub fn init_with_writer<W>(
    format: LogFormat,
    writer: W,
    color: Color,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder
            .with_target(true)
            .with_ansi(color.for_stderr())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    }
}
