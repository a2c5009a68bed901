//! The alert rules of `dashboards/alerts.yml` in a real Prometheus (scrape and
//! evaluation every second) against real training runs: a single stale step
//! fires `GradguardStaleGradients` and nothing else, a missing `zero_grad`
//! fires `GradguardAccumulatedGradients`, and every dashboard panel shows a
//! value for a clean run.
//!
//! Needs `prometheus` on PATH (scripts/test.sh installs it).

mod common;

use std::time::Duration;

use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, SGD};
use common::{dashboard_queries, dashboards, wait_for, Prometheus};
use gradguard::exporter::PrometheusConfig;
use gradguard::{Check, Guarded};
use gradguard_mnist::{GradStyle, Mnist, Model, Run};

const BATCH: usize = 32;
const STEPS: usize = 6;
/// The step of the stale run that applies its gradients a second time.
const STALE_AT: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(30);

/// `(alertname, alertstate)` of every anomaly alert (`Gradguard*Gradients`)
/// Prometheus ever had for `optimizer` since it started.
fn alerts_ever(prometheus: &Prometheus, optimizer: &str) -> Vec<(String, String)> {
    let result = prometheus.query(&format!(
        r#"count by (alertname, alertstate) (count_over_time(ALERTS{{alertname=~"Gradguard.*Gradients",optimizer="{optimizer}"}}[1h]))"#
    ));
    let mut alerts: Vec<(String, String)> = result["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let name = r["metric"]["alertname"].as_str().unwrap().to_string();
            let state = r["metric"]["alertstate"].as_str().unwrap().to_string();
            (name, state)
        })
        .collect();
    alerts.sort();
    alerts
}

fn firing(prometheus: &Prometheus, alert: &str, optimizer: &str) -> bool {
    !prometheus
        .values(&format!(
            r#"ALERTS{{alertname="{alert}",alertstate="firing",optimizer="{optimizer}"}}"#
        ))
        .is_empty()
}

/// When the rule group was last evaluated (as Prometheus writes it); every
/// rule must be healthy (a query that fails at evaluation is not).
fn last_evaluation(prometheus: &Prometheus) -> String {
    let rules = prometheus.api("rules", &[]);
    let group = &rules["data"]["groups"][0];
    for rule in group["rules"].as_array().unwrap() {
        assert_eq!(rule["health"], "ok", "rule {rule}");
    }
    group["lastEvaluation"].as_str().unwrap().to_string()
}

fn batch(data: &Mnist, k: usize) -> (Tensor, Tensor) {
    (
        data.train_images.narrow(0, k * BATCH, BATCH).unwrap(),
        data.train_labels.narrow(0, k * BATCH, BATCH).unwrap(),
    )
}

#[test]
fn one_stale_step_fires_the_stale_alert_and_a_missing_zero_grad_the_accumulated_one() {
    let server = PrometheusConfig::new()
        .listen("127.0.0.1:0")
        .unwrap()
        .label("run", "alerts")
        .label("rank", "0")
        .serve()
        .unwrap();
    let data = Mnist::synthetic(BATCH * STEPS, 8, 1, &Device::Cpu).unwrap();

    // Three guards, named (so their series exist) before Prometheus starts.
    let (stale_model, varmap) = Model::seeded(5, 0, &Device::Cpu).unwrap();
    let mut stale = Guarded::new(SGD::new(varmap.all_vars(), 0.1).unwrap())
        .with_varmap(&varmap)
        .name("stale");
    let (model, varmap) = Model::seeded(5, 0, &Device::Cpu).unwrap();
    let mut nozg = Run::new("nozg", GradStyle::NoZeroGrad, model, varmap, 0.1, |g| g).unwrap();
    let (model, varmap) = Model::seeded(5, 0, &Device::Cpu).unwrap();
    let mut clean = Run::new("clean", GradStyle::ZeroGrad, model, varmap, 0.1, |g| {
        g.sample_grad_norm(1)
    })
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(
        dir.path(),
        &server.addr().to_string(),
        Some(&dashboards().join("alerts.yml")),
    );

    // Before any training, every counter series of every guard is scraped
    // at 0, with the exporter's global labels: one per check for anomalies.
    wait_for("a scrape of the zero series", TIMEOUT, || {
        prometheus
            .values(r#"gradguard_zero_grad_total{job="gradguard",run="alerts",rank="0"}"#)
            .len()
            == 3
    });
    for optimizer in ["stale", "nozg", "clean"] {
        let anomalies = prometheus.query(&format!(
            r#"gradguard_anomalies_total{{run="alerts",rank="0",optimizer="{optimizer}"}}"#
        ));
        let mut checks: Vec<&str> = anomalies["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["value"][1], "0", "{r}");
                r["metric"]["check"].as_str().unwrap()
            })
            .collect();
        checks.sort();
        let mut all: Vec<&str> = Check::ALL.iter().map(|c| c.as_str()).collect();
        all.sort();
        assert_eq!(checks, all, "{optimizer}");
        for counter in [
            "gradguard_steps_total",
            "gradguard_backward_passes_total",
            "gradguard_zero_grad_total",
        ] {
            let v = prometheus.values(&format!(r#"{counter}{{optimizer="{optimizer}"}}"#));
            assert_eq!(v, [0.0], "{counter} of {optimizer}");
        }
    }
    assert!(prometheus
        .values(r#"{__name__=~"gradguard_.+",optimizer="default"}"#)
        .is_empty());

    // Train. The stale run: fresh gradients every step, and once the same
    // GradStore a second time (a step with no new backward pass).
    let mut seen = Vec::new();
    for k in 0..STEPS {
        let (x, y) = batch(&data, k);
        let logits = stale_model.forward_t(&x, true).unwrap();
        let grads = candle_nn::loss::cross_entropy(&logits, &y)
            .unwrap()
            .backward()
            .unwrap();
        let report = stale.step_with(&grads).unwrap();
        seen.extend(report.anomalies.iter().map(|a| (a.step, a.check)));
        if k == STALE_AT {
            let report = stale.step_with(&grads).unwrap();
            seen.extend(report.anomalies.iter().map(|a| (a.step, a.check)));
        }
    }
    assert_eq!(seen, [(STALE_AT as u64 + 2, Check::Stale)]);
    nozg.train_epoch(&data, BATCH, |_| {}).unwrap();
    assert_eq!(nozg.anomalies[&Check::Accumulated], STEPS as u64 - 1);
    clean.train_epoch(&data, BATCH, |_| {}).unwrap();
    assert!(clean.anomalies.is_empty(), "{:?}", clean.anomalies);

    wait_for("GradguardStaleGradients to fire", TIMEOUT, || {
        firing(&prometheus, "GradguardStaleGradients", "stale")
    });
    wait_for("GradguardAccumulatedGradients to fire", TIMEOUT, || {
        firing(&prometheus, "GradguardAccumulatedGradients", "nozg")
    });

    // Then, once the rules were evaluated after a scrape of every last step
    // (the group's evaluation finishes before its time is published: the
    // second new one started after the scrape), those two alerts, and no
    // other anomaly alert, ever existed.
    let total_steps = (STEPS * 3 + 1) as f64;
    wait_for("a scrape of every step", TIMEOUT, || {
        prometheus.values(r#"sum(gradguard_steps_total{run="alerts"})"#) == [total_steps]
    });
    let mut last = last_evaluation(&prometheus);
    let mut evaluations = 0;
    wait_for("two rule evaluations after that scrape", TIMEOUT, || {
        let now = last_evaluation(&prometheus);
        if now != last {
            evaluations += 1;
            last = now;
        }
        evaluations >= 2
    });
    let fired = |alert: &str| (alert.to_string(), "firing".to_string());
    assert_eq!(
        alerts_ever(&prometheus, "stale"),
        [fired("GradguardStaleGradients")]
    );
    assert_eq!(
        alerts_ever(&prometheus, "nozg"),
        [fired("GradguardAccumulatedGradients")]
    );
    assert_eq!(alerts_ever(&prometheus, "clean"), Vec::new());

    // Every dashboard panel shows a value for the clean run: a series, and a
    // number (0 for the anomalies, one per check).
    for (title, expr) in dashboard_queries("clean", "alerts", "0") {
        let result = prometheus.query(&expr);
        let series = result["data"]["result"].as_array().unwrap();
        assert!(!series.is_empty(), "panel `{title}`: `{expr}` has no data");
        for s in series {
            let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            assert!(v.is_finite(), "panel `{title}`: `{expr}` shows {v}");
            if title.starts_with("Anomalies") {
                assert_eq!(v, 0.0, "panel `{title}`: {s}");
            }
        }
        if title.starts_with("Anomalies") {
            assert_eq!(series.len(), Check::ALL.len(), "panel `{title}`: {result}");
        }
    }
}
