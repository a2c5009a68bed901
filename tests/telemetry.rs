//! Telemetry end to end: a training run with a deliberate missing zero_grad
//! serves its metrics; a real Prometheus scrapes them; its query API sees the
//! anomalies and the steps; every dashboard panel's query runs against it; the
//! exposition text passes `promtool check metrics`.
//!
//! Needs `prometheus` and `promtool` on PATH (scripts/test.sh installs them).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use candle_core::Device;
use common::{dashboard_queries, values, wait_for, Prometheus};
use gradguard::exporter::PrometheusConfig;
use gradguard::telemetry::METRIC_NAMES;
use gradguard::Check;
use gradguard_mnist::{GradStyle, Mnist, Model, Run};

const STEPS: u64 = 12;

#[test]
fn prometheus_scrapes_the_missing_zero_grad_and_every_panel_query_runs() {
    let server = PrometheusConfig::new()
        .listen("127.0.0.1:0")
        .unwrap()
        .label("run", "e2e")
        .label("rank", "0")
        .serve()
        .unwrap();
    assert!(server.addr().ip().is_loopback());

    // A training run with the seed's bug: backward + step, no zero_grad.
    let data = Mnist::synthetic(32 * STEPS as usize, 8, 1, &Device::Cpu).unwrap();
    let (model, varmap) = Model::seeded(5, 0, &Device::Cpu).unwrap();
    let mut run = Run::new("m2", GradStyle::NoZeroGrad, model, varmap, 0.1, |g| {
        g.sample_grad_norm(1)
    })
    .unwrap();
    run.train_epoch(&data, 32, |_| {}).unwrap();
    assert_eq!(run.opt.steps(), STEPS);
    // And a correct one beside it, under another `optimizer` label.
    let (model, varmap) = Model::seeded(5, 0, &Device::Cpu).unwrap();
    let mut fixed = Run::new("m3", GradStyle::ZeroGrad, model, varmap, 0.1, |g| g).unwrap();
    fixed.train_epoch(&data, 128, |_| {}).unwrap();

    // The endpoint serves the text, and promtool accepts it.
    let text = ureq::get(&format!("http://{}/metrics", server.addr()))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(text.contains("# HELP gradguard_anomalies_total"), "{text}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool on PATH");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), &server.addr().to_string(), None);
    let query = |expr: &str| prometheus.query(expr);
    let steps_query = r#"gradguard_steps_total{job="gradguard",optimizer="m2",run="e2e",rank="0"}"#;
    wait_for("a scrape with every step", Duration::from_secs(60), || {
        values(&query(steps_query)) == [STEPS as f64]
    });
    let accumulated = values(&query(
        r#"gradguard_anomalies_total{check="accumulated",optimizer="m2"}"#,
    ));
    assert_eq!(
        accumulated,
        [(STEPS - 1) as f64],
        "steps 2..=12 are accumulated"
    );
    assert_eq!(
        values(&query(r#"gradguard_backward_passes_total{optimizer="m2"}"#)),
        [STEPS as f64]
    );
    assert_eq!(
        values(&query(r#"gradguard_step_generations_sum{optimizer="m2"}"#)),
        [(1..=STEPS).sum::<u64>() as f64],
        "step k holds k passes"
    );
    assert_eq!(
        values(&query(r#"gradguard_learning_rate{optimizer="m2"}"#)),
        [0.1]
    );
    assert_eq!(
        values(&query(r#"gradguard_zero_grad_total{optimizer="m3"}"#)),
        [3.0]
    );
    // The clean run's anomaly series exist, one per check, at 0.
    let clean = query(r#"gradguard_anomalies_total{optimizer="m3"}"#);
    assert_eq!(values(&clean), vec![0.0; Check::ALL.len()], "{clean}");

    // Every dashboard panel: known metrics only, and the query runs and
    // returns data.
    let name = regex::Regex::new(r"gradguard_[a-z_]+").unwrap();
    // Wait for two scrapes after the run so that rate() has two samples.
    std::thread::sleep(Duration::from_secs(3));
    for (title, expr) in dashboard_queries(".*", "e2e", "0") {
        for m in name.find_iter(&expr) {
            let base_name = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(m.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(
                METRIC_NAMES.contains(&base_name),
                "panel `{title}` uses `{}`, which gradguard does not export",
                m.as_str()
            );
        }
        let result = query(&expr);
        assert!(
            !result["data"]["result"].as_array().unwrap().is_empty(),
            "panel `{title}`: `{expr}` returned no series"
        );
    }
    // The variables' label queries find the run.
    let runs = query("count by (run) (gradguard_steps_total)");
    assert_eq!(runs["data"]["result"][0]["metric"]["run"], "e2e");
}
