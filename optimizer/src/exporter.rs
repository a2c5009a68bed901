//! Serving gradguard's metrics to Prometheus (feature `prometheus`).
//!
//! For applications: a library never installs a recorder. One call installs
//! metrics-exporter-prometheus as the global recorder and serves `/metrics`,
//! on 127.0.0.1 unless told otherwise; global labels (`run`, `rank`, ...)
//! are added to every series.
//!
//! ```no_run
//! # fn main() -> Result<(), gradguard::exporter::ExporterError> {
//! let server = gradguard::exporter::PrometheusConfig::new()
//!     .listen("127.0.0.1:9464")?
//!     .label("run", "baseline")
//!     .label("rank", "0")
//!     .serve()?;
//! println!("metrics on http://{}/metrics", server.addr());
//! # Ok(()) }
//! ```

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use metrics_exporter_prometheus::{
    BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::telemetry::{
    self, DURATION_BUCKETS, GENERATION_BUCKETS, STEP_DURATION_SECONDS, STEP_GENERATIONS,
};

/// Why metrics could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// The address is not `host:port`.
    #[error(
        "invalid metrics address `{addr}`: {reason} (expected host:port, e.g. 127.0.0.1:9464)"
    )]
    BadAddress {
        /// What was given.
        addr: String,
        /// Why it is wrong.
        reason: String,
    },
    /// The port is taken or the address cannot be bound.
    #[error("cannot serve metrics on {addr}: {reason} (is another process using this port? pick another with a different port, or port 0 for any free one)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's reason.
        reason: String,
    },
    /// A global recorder is already installed.
    #[error("a metrics recorder is already installed in this process; install the exporter once, before training")]
    AlreadyInstalled,
    /// Any other exporter error.
    #[error("metrics exporter: {0}")]
    Other(String),
}

/// Where and how to serve metrics.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    addr: SocketAddr,
    labels: Vec<(String, String)>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            labels: Vec::new(),
        }
    }
}

/// A running `/metrics` endpoint.
#[derive(Debug, Clone)]
pub struct MetricsServer {
    addr: SocketAddr,
    handle: PrometheusHandle,
}

impl MetricsServer {
    /// The address served (the real port when port 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The exposition text, as a scrape would see it now.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

impl PrometheusConfig {
    /// 127.0.0.1:9464, no global label.
    pub fn new() -> Self {
        Self::default()
    }

    /// Listens on `addr` (`host:port`; port 0 picks a free port). Bind
    /// `0.0.0.0` only on purpose: the endpoint has no authentication.
    pub fn listen(mut self, addr: &str) -> Result<Self, ExporterError> {
        let bad = |reason: String| ExporterError::BadAddress {
            addr: addr.to_string(),
            reason,
        };
        self.addr = addr
            .to_socket_addrs()
            .map_err(|e| bad(e.to_string()))?
            .next()
            .ok_or_else(|| bad("resolves to no address".into()))?;
        Ok(self)
    }

    /// Adds a label to every series (e.g. `run`, `rank`, `host`).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    fn builder(&self) -> PrometheusBuilder {
        let mut b = PrometheusBuilder::new();
        for (k, v) in &self.labels {
            b = b.add_global_label(k, v);
        }
        let buckets = [
            (STEP_GENERATIONS, &GENERATION_BUCKETS[..]),
            (STEP_DURATION_SECONDS, &DURATION_BUCKETS[..]),
        ];
        for (name, values) in buckets {
            b = b
                .set_buckets_for_metric(Matcher::Full(name.to_string()), values)
                .expect("bucket lists are not empty");
        }
        b
    }

    /// A recorder that is not installed, for tests and for rendering the text
    /// yourself (`metrics::with_local_recorder`, push-style use).
    pub fn recorder(&self) -> PrometheusRecorder {
        self.builder().build_recorder()
    }

    /// Installs the global recorder without serving; render the text with
    /// the returned handle.
    pub fn install_recorder(self) -> Result<PrometheusHandle, ExporterError> {
        let handle = self
            .builder()
            .install_recorder()
            .map_err(convert(self.addr))?;
        telemetry::describe_metrics();
        Ok(handle)
    }

    /// Installs the global recorder and serves `/metrics` on a background
    /// thread. A taken port is an error, and nothing is installed.
    pub fn serve(self) -> Result<MetricsServer, ExporterError> {
        let addr = self.resolve_port()?;
        let builder = self.builder().with_http_listener(addr);
        // The builder installs its own recorder: build it on a private runtime
        // so that a bind failure comes back before anything is installed.
        let runtime = tokio_runtime()?;
        let (recorder, exporter) = {
            let _guard = runtime.enter();
            builder.build().map_err(convert(addr))?
        };
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| ExporterError::AlreadyInstalled)?;
        std::thread::Builder::new()
            .name("gradguard-metrics".into())
            .spawn(move || runtime.block_on(exporter))
            .map_err(|e| ExporterError::Other(e.to_string()))?;
        telemetry::describe_metrics();
        Ok(MetricsServer { addr, handle })
    }

    /// Port 0 means "any free port": find one, so the caller learns it.
    fn resolve_port(&self) -> Result<SocketAddr, ExporterError> {
        let bind_err = |e: std::io::Error| ExporterError::Bind {
            addr: self.addr,
            reason: e.to_string(),
        };
        let probe = TcpListener::bind(self.addr).map_err(bind_err)?;
        probe.local_addr().map_err(bind_err)
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, ExporterError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ExporterError::Other(e.to_string()))
}

fn convert(addr: SocketAddr) -> impl Fn(BuildError) -> ExporterError {
    move |e| match e {
        BuildError::FailedToCreateHTTPListener(reason) => ExporterError::Bind { addr, reason },
        BuildError::FailedToSetGlobalRecorder(_) => ExporterError::AlreadyInstalled,
        other => ExporterError::Other(other.to_string()),
    }
}
