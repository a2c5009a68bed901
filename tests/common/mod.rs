//! What the end-to-end tests with a real Prometheus share: starting it on a
//! free port (optionally with alert rules), querying its API, polling.
//!
//! Needs `prometheus` on PATH (scripts/test.sh installs it).
#![allow(dead_code)] // each test file uses its own part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Kills the child when dropped, also when the test panics.
pub struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus scraping one target every second, killed when dropped.
pub struct Prometheus {
    _child: KillOnDrop,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

/// The repository's `dashboards/` folder.
pub fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `ok` every 100 ms until it holds; fails after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping `target` every second; with
    /// `rules`, loads that rule file and evaluates it every second.
    pub fn start(dir: &Path, target: &str, rules: Option<&Path>) -> Self {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        let rule_files = rules
            .map(|r| format!("rule_files:\n  - \"{}\"\n", r.display()))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}\
                 scrape_configs:\n  - job_name: gradguard\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus on PATH (run bash scripts/test.sh, which installs it)");
        let child = KillOnDrop(child);
        let base = format!("http://127.0.0.1:{port}");
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            ureq::get(&format!("{base}/-/ready")).call().is_ok()
        });
        Self {
            _child: child,
            base,
        }
    }

    /// `GET /api/v1/{path}` with `params`; fails unless the status is success.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut req = ureq::get(&format!("{}/api/v1/{path}", self.base));
        for (k, v) in params {
            req = req.query(k, v);
        }
        let body = req
            .call()
            .unwrap_or_else(|e| panic!("{path} {params:?} failed: {e}"))
            .into_string()
            .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{path} {params:?}: {body}");
        v
    }

    /// An instant query.
    pub fn query(&self, expr: &str) -> Value {
        self.api("query", &[("query", expr)])
    }

    /// The values of an instant query's series.
    pub fn values(&self, expr: &str) -> Vec<f64> {
        values(&self.query(expr))
    }
}

/// The values of an instant query's result.
pub fn values(v: &Value) -> Vec<f64> {
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"][1].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Every `expr` of every dashboard panel as `(panel title, expr)`, with the
/// dashboard variables filled in (`$__rate_interval` as 1m).
pub fn dashboard_queries(optimizer: &str, run: &str, rank: &str) -> Vec<(String, String)> {
    let path = dashboards().join("gradguard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$optimizer", optimizer)
                .replace("$run", run)
                .replace("$rank", rank);
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}
