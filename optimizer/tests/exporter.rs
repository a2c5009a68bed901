//! The application helper that serves metrics (feature `prometheus`).
#![cfg(feature = "prometheus")]

mod common;

use candle_nn::{Optimizer, SGD};
use common::{sgd, Toy};
use gradguard::exporter::{ExporterError, PrometheusConfig};
use gradguard::{Check, Guarded};

#[test]
fn histograms_are_real_prometheus_histograms_with_the_optimizer_label() {
    let config = PrometheusConfig::new().label("run", "unit");
    let recorder = config.recorder();
    let handle = recorder.handle();
    let toy = Toy::new();
    metrics::with_local_recorder(&recorder, || {
        gradguard::describe_metrics();
        let mut opt = sgd(&toy);
        for _ in 0..3 {
            opt.backward(&toy.loss(true, true)).unwrap();
            opt.step().unwrap();
        }
    });
    let text = handle.render();
    assert!(
        text.contains("# TYPE gradguard_step_generations histogram"),
        "{text}"
    );
    assert!(
        text.contains(r#"gradguard_step_generations_bucket{run="unit",optimizer="toy",le="1"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gradguard_step_generations_bucket{run="unit",optimizer="toy",le="3"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("# TYPE gradguard_step_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"gradguard_anomalies_total{run="unit",optimizer="toy",check="accumulated"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"gradguard_steps_total{run="unit",optimizer="toy"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("# HELP gradguard_anomalies_total Gradient anomalies found at a step"),
        "{text}"
    );
}

#[test]
fn every_counter_series_exists_at_zero_from_naming_and_renaming_leaves_no_default() {
    let config = PrometheusConfig::new().label("run", "unit");
    let recorder = config.recorder();
    let handle = recorder.handle();
    let toy = Toy::new();
    let opt = metrics::with_local_recorder(&recorder, || sgd(&toy));
    let text = handle.render();
    for check in Check::ALL {
        let line =
            format!(r#"gradguard_anomalies_total{{run="unit",optimizer="toy",check="{check}"}} 0"#);
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    for counter in [
        "gradguard_steps_total",
        "gradguard_backward_passes_total",
        "gradguard_zero_grad_total",
    ] {
        let line = format!(r#"{counter}{{run="unit",optimizer="toy"}} 0"#);
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    assert!(
        text.contains(r#"gradguard_step_generations_count{run="unit",optimizer="toy"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gradguard_learning_rate{run="unit",optimizer="toy"} 0.1"#),
        "{text}"
    );
    assert!(!text.contains("default"), "{text}");
    assert_eq!(opt.optimizer_name(), "toy");
}

#[test]
fn an_unnamed_guard_gets_its_default_series_at_first_use_and_counts_survive() {
    let recorder = PrometheusConfig::new().recorder();
    let handle = recorder.handle();
    let toy = Toy::new();
    let mut opt = metrics::with_local_recorder(&recorder, || {
        Guarded::new(SGD::new(toy.varmap.all_vars(), 0.1).unwrap()).with_varmap(&toy.varmap)
    });
    assert!(!handle.render().contains("gradguard_"));
    metrics::with_local_recorder(&recorder, || {
        opt.backward(&toy.loss(true, true)).unwrap();
        opt.step().unwrap();
        opt.zero_grad();
        opt.backward(&toy.loss(true, true)).unwrap();
        opt.step().unwrap();
        // Registering again keeps what was counted.
        gradguard::telemetry::register_series("default", 0.1);
    });
    let text = handle.render();
    for line in [
        r#"gradguard_backward_passes_total{optimizer="default"} 2"#,
        r#"gradguard_steps_total{optimizer="default"} 2"#,
        r#"gradguard_zero_grad_total{optimizer="default"} 1"#,
        r#"gradguard_anomalies_total{optimizer="default",check="stale"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
}

#[test]
fn a_bad_address_is_a_clear_error() {
    let err = PrometheusConfig::new().listen("localhost").unwrap_err();
    assert!(matches!(err, ExporterError::BadAddress { .. }));
    assert!(
        err.to_string()
            .starts_with("invalid metrics address `localhost`"),
        "{err}"
    );
}

#[test]
fn a_taken_port_is_an_error_and_installs_nothing_then_a_free_port_serves() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = PrometheusConfig::new()
        .listen(&addr)
        .unwrap()
        .serve()
        .unwrap_err();
    assert!(matches!(err, ExporterError::Bind { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("cannot serve metrics on {addr}")),
        "{err}"
    );
    // Nothing was installed: serving on a free port still works, once.
    let server = PrometheusConfig::new()
        .listen("127.0.0.1:0")
        .unwrap()
        .serve()
        .unwrap();
    assert!(server.addr().port() != 0 && server.addr().ip().is_loopback());
    let err = PrometheusConfig::new()
        .listen("127.0.0.1:0")
        .unwrap()
        .serve()
        .unwrap_err();
    assert!(matches!(err, ExporterError::AlreadyInstalled), "{err:?}");
}
