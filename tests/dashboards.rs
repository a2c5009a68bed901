//! The operator's files: alert rules (promtool check and unit tests), the
//! Grafana dashboard's structure and the scrape config.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dashboards())
        .output()
        .expect("promtool on PATH (run bash scripts/test.sh, which installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid() {
    let out = promtool(&["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
}

#[test]
fn alert_rule_unit_tests_pass() {
    let out = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_firing_and_a_silent_unit_test() {
    let rules = std::fs::read_to_string(dashboards().join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dashboards().join("alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 5);
    for alert in alerts {
        let fires = tests.contains(&format!("name: {alert} fires"));
        let silent = tests.contains(&format!("name: {alert} stays silent"));
        assert!(fires && silent, "{alert}: fires {fires}, silent {silent}");
        // An anomaly alert also on what the exporter really produces.
        if alert.ends_with("Gradients") {
            for case in [
                "fires on a single",
                "fires for a series born at 1",
                "fires for an anomaly across a counter reset",
            ] {
                let name = format!("name: {alert} {case}");
                assert!(tests.contains(&name), "no unit test `{name}`");
            }
        }
    }
}

#[test]
fn the_gradient_norm_panel_says_when_sampling_is_off() {
    // The norm is only sampled with sample_grad_norm(N): a run without it has
    // no such series, and the panel says why instead of "No data".
    let text = std::fs::read_to_string(dashboards().join("gradguard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let panel = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Gradient norm")
        .unwrap();
    let no_value = panel["fieldConfig"]["defaults"]["noValue"]
        .as_str()
        .unwrap();
    assert!(no_value.contains("sample_grad_norm"), "{no_value}");
}

#[test]
fn scrape_config_is_valid_and_loads_the_alert_rules() {
    let out = promtool(&["check", "config", "prometheus.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn dashboard_uses_a_datasource_variable_and_filters_every_query() {
    let text = std::fs::read_to_string(dashboards().join("gradguard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "run", "rank", "optimizer"]);
    assert_eq!(dash["templating"]["list"][0]["type"], "datasource");
    let panels = dash["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for needed in [
        "Anomalies by check (rate)",
        "Anomalies by check (total)",
        "Steps per second",
        "Backward passes per step",
        "Step latency",
        "Learning rate",
        "Gradient norm",
    ] {
        assert!(titles.contains(&needed), "no panel `{needed}`");
    }
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for var in ["$optimizer", "$run", "$rank"] {
                assert!(expr.contains(var), "{}: `{expr}` ignores {var}", p["title"]);
            }
        }
    }
    let latency = panels
        .iter()
        .find(|p| p["title"] == "Step latency")
        .unwrap();
    let exprs = latency["targets"].to_string();
    assert!(
        exprs.contains("histogram_quantile(0.5,") && exprs.contains("histogram_quantile(0.99,")
    );
}
