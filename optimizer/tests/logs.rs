//! The WARN events: one clear line per new problem, repeats rate-limited.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{sgd, Toy};
use gradguard::{Check, Level};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs `f` with a JSON subscriber and returns the logged lines.
fn logged(f: impl FnOnce()) -> Vec<serde_json::Value> {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::WARN)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn missing_zero_grad_warns_once_with_fields_and_the_fix() {
    let toy = Toy::new();
    let lines = logged(|| {
        let mut opt = sgd(&toy);
        for _ in 0..9 {
            opt.backward(&toy.loss(true, true)).unwrap();
            opt.step().unwrap();
        }
    });
    // Steps 2..=9 are all accumulated: 8 occurrences, one WARN.
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let l = &lines[0];
    assert_eq!(l["level"], "WARN");
    assert_eq!(l["target"], "gradguard");
    let f = &l["fields"];
    assert_eq!(f["check"], "accumulated");
    assert_eq!(f["step"], 2);
    assert_eq!(f["optimizer"], "toy");
    assert_eq!(f["params"], "layer.a,layer.b");
    assert_eq!(f["passes"], 2);
    assert_eq!(f["reapplied"], 1);
    assert!(f.get("declared").is_none(), "nothing declared: {f}");
    let msg = f["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "accumulated gradients: 2 parameters hold gradients from 2 backward passes, 1 of which an earlier step already applied"
        ),
        "{msg}"
    );
    assert!(msg.ends_with("call zero_grad() after step()"), "{msg}");
}

#[test]
fn the_tenth_repeat_is_a_summary() {
    let toy = Toy::new();
    let lines = logged(|| {
        let mut opt = sgd(&toy);
        for _ in 0..11 {
            opt.backward(&toy.loss(true, true)).unwrap();
            opt.step().unwrap();
        }
    });
    assert_eq!(lines.len(), 2);
    let summary = &lines[1]["fields"];
    assert_eq!(summary["occurrences"], 10);
    assert_eq!(summary["step"], 11);
    assert!(summary["message"]
        .as_str()
        .unwrap()
        .contains("seen 10 times"));
}

#[test]
fn a_parameter_that_never_got_a_gradient_is_named_once() {
    let toy = Toy::new();
    let lines = logged(|| {
        let mut opt = sgd(&toy);
        for _ in 0..3 {
            opt.backward(&toy.loss(true, false)).unwrap();
            opt.step().unwrap();
            opt.zero_grad();
        }
    });
    let never: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .unwrap()
                .contains("never received a gradient")
        })
        .collect();
    assert_eq!(never.len(), 1, "{lines:#?}");
    assert_eq!(never[0]["fields"]["params"], "layer.b");
    assert!(lines.iter().all(|l| l["fields"]["check"] == "missing"));
}

#[test]
fn allow_logs_nothing_and_deny_logs_the_refusal() {
    let toy = Toy::new();
    let allow = logged(|| {
        let mut opt = sgd(&toy).level(Check::Stale, Level::Allow);
        opt.backward(&toy.loss(true, true)).unwrap();
        opt.step().unwrap();
        opt.step().unwrap();
    });
    assert!(allow.is_empty(), "{allow:#?}");
    let deny = logged(|| {
        let mut opt = sgd(&toy).level(Check::Stale, Level::Deny);
        opt.backward(&toy.loss(true, true)).unwrap();
        opt.step().unwrap();
        assert!(opt.step().is_err());
        assert!(opt.step().is_err());
    });
    assert_eq!(deny.len(), 2, "every refusal is logged");
    assert!(deny[0]["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("step denied: stale gradients"));
}

#[test]
fn a_variable_added_to_the_varmap_later_is_named_in_a_warning() {
    let toy = Toy::new();
    let lines = logged(|| {
        let mut opt = sgd(&toy);
        toy.varmap
            .get(
                2,
                "head.w",
                candle_nn::Init::Const(1.0),
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .unwrap();
        opt.backward(&toy.loss(true, true)).unwrap();
        opt.backward(&toy.loss(true, true)).unwrap();
    });
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let f = &lines[0]["fields"];
    assert_eq!(f["params"], "head.w");
    assert!(f["message"]
        .as_str()
        .unwrap()
        .contains("added to the VarMap after the guard was built, now watched: head.w"));
}
