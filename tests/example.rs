//! The MNIST example: what it shows on the bundled subset, and its errors on
//! bad data (clear message, non-zero exit, no panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use gradguard::Check;
use gradguard_mnist::{GradStyle, Mnist, Model, Run};

fn bundled() -> PathBuf {
    Mnist::bundled_dir()
}

/// The example binary `cargo test` built next to this test.
fn example() -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("mnist{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} missing: run `cargo test --workspace`, which builds examples",
        bin.display()
    );
    Command::new(bin)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bundled_subset_loads_with_its_sizes() {
    let data = Mnist::load(&bundled(), None, None, &Device::Cpu).unwrap();
    assert_eq!((data.train_len(), data.test_len()), (20000, 2000));
    let labels: Vec<u32> = data
        .train_labels
        .narrow(0, 0, 5)
        .unwrap()
        .to_vec1()
        .unwrap();
    // The first five labels of the official training file.
    assert_eq!(labels, [5, 0, 4, 1, 9]);
}

#[test]
fn m2_is_flagged_at_step_2_and_falls_behind_m1_while_m3_matches_m1() {
    let data = Mnist::load(&bundled(), Some(3000), Some(1000), &Device::Cpu).unwrap();
    let mut runs: Vec<Run> = [
        ("m1", GradStyle::Fresh),
        ("m2", GradStyle::NoZeroGrad),
        ("m3", GradStyle::ZeroGrad),
    ]
    .into_iter()
    .map(|(name, style)| {
        let (model, varmap) = Model::seeded(5, 0, &Device::Cpu).unwrap();
        Run::new(name, style, model, varmap, LR, |g| g).unwrap()
    })
    .collect();
    for run in &mut runs {
        for _ in 0..EPOCHS {
            run.train_epoch(&data, BATCH, |_| {}).unwrap();
            run.evaluate(&data).unwrap();
        }
    }
    let (m1, m2, m3) = (&runs[0], &runs[1], &runs[2]);
    assert_eq!(m1.first_flagged, None, "{:?}", m1.anomalies);
    assert_eq!(m3.first_flagged, None, "{:?}", m3.anomalies);
    assert_eq!(m2.first_flagged, Some((2, Check::Accumulated)));
    let steps = (EPOCHS * Run::steps_per_epoch(3000, BATCH)) as u64;
    assert_eq!(m2.anomalies.get(&Check::Accumulated), Some(&(steps - 1)));
    let (a1, a2) = (m1.accuracy.last().unwrap(), m2.accuracy.last().unwrap());
    assert!(a1 - a2 > 0.2, "m1 {a1} should be clearly above m2 {a2}");
    assert!(*a1 > 0.8, "m1 learns: {a1}");
    // The fix restores M1's result: same weights, same data, same updates.
    assert_eq!(m1.accuracy, m3.accuracy);
}

const LR: f64 = 0.1;
const BATCH: usize = 50;
const EPOCHS: usize = 3;

#[test]
fn example_runs_end_to_end_and_shows_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("charts/seed.svg");
    let out = example()
        .args([
            "--epochs",
            "1",
            "--limit-train",
            "900",
            "--limit-test",
            "200",
            "--log-format",
            "json",
            "--plot",
        ])
        .arg(&chart)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, stderr(&out));
    assert!(
        stdout.contains(&format!("chart: {}", chart.display())),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(&chart).unwrap();
    for needle in [
        "m1: step_with(&amp;loss.backward())",
        "m2: backward + step, no zero_grad",
        "m3: backward + step + zero_grad",
        "m2 flagged: accumulated at step 2",
    ] {
        assert!(svg.contains(needle), "{needle} not in the chart");
    }
    assert!(!svg.contains("m1 flagged") && !svg.contains("m3 flagged"));
    assert!(stdout.contains("the bundled subset"), "{stdout}");
    assert!(stdout.contains("device: cpu"), "{stdout}");
    let m2 = stdout
        .lines()
        .find(|l| l.starts_with("m2  "))
        .expect("m2 row");
    assert!(
        m2.contains("accumulated: 2") && m2.ends_with("step 2 (accumulated)"),
        "{m2}"
    );
    for name in ["m1  ", "m3  "] {
        let row = stdout.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(row.contains(" none ") && row.ends_with('-'), "{row}");
    }
    let warn = stderr(&out)
        .lines()
        .find(|l| l.contains("\"check\":\"accumulated\""))
        .map(str::to_string)
        .expect("a JSON WARN line for m2");
    let v: serde_json::Value = serde_json::from_str(&warn).unwrap();
    assert_eq!(
        (v["step"].as_u64(), v["optimizer"].as_str()),
        (Some(2), Some("m2"))
    );
}

#[test]
fn text_logs_into_a_pipe_carry_no_colour_codes_and_the_chart_has_a_default_home() {
    let out = example()
        .args([
            "--epochs",
            "1",
            "--limit-train",
            "600",
            "--limit-test",
            "100",
        ])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("accumulated gradients"),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "ANSI escape in piped logs: {err:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let chart = stdout
        .lines()
        .find_map(|l| l.strip_prefix("chart: "))
        .expect("the chart's path is printed");
    assert!(chart.ends_with("mnist-accuracy.svg"), "{chart}");
    assert!(Path::new(chart).is_file(), "{chart}");
}

#[test]
fn deny_stops_the_run_at_m2_step_2_with_exit_1() {
    let out = example()
        .args([
            "--epochs",
            "1",
            "--limit-train",
            "900",
            "--limit-test",
            "100",
            "--deny",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: gradguard denied step 2 of m2: accumulated gradients"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

/// Copies the bundled files into a temporary folder, where one can be broken.
fn data_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(bundled()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gz") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn write_gz(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap();
}

fn run_on(dir: &Path) -> Output {
    example()
        .args(["--epochs", "1", "--limit-train", "300", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap()
}

fn assert_clear_failure(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let dir = data_copy();
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let out = run_on(dir.path());
    assert_clear_failure(
        &out,
        &[
            "error: test labels: no file t10k-labels-idx1-ubyte",
            "t10k-labels.idx1-ubyte",
        ],
    );
}

#[test]
fn a_wrong_magic_number_is_named() {
    let dir = data_copy();
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    // A label file's magic in an image file's otherwise valid header.
    let mut bytes = vec![0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28];
    bytes.extend([0u8; 784]);
    write_gz(&path, &bytes);
    let out = run_on(dir.path());
    assert_clear_failure(
        &out,
        &["train-images-idx3-ubyte.gz: magic number 2049, expected 2051 (image IDX file)"],
    );
}

#[test]
fn a_truncated_file_is_named() {
    let dir = data_copy();
    // An uncompressed, dotted-name file whose header promises 10 images.
    std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28];
    bytes.extend(std::iter::repeat_n(0u8, 784 * 3));
    std::fs::write(dir.path().join("t10k-images.idx3-ubyte"), &bytes).unwrap();
    let out = run_on(dir.path());
    assert_clear_failure(
        &out,
        &["t10k-images.idx3-ubyte: truncated: 2368 bytes, expected 7856 (header promises 10 images)"],
    );
}

#[test]
fn a_corrupt_gzip_is_named() {
    let dir = data_copy();
    let path = dir.path().join("train-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, bytes).unwrap();
    let out = run_on(dir.path());
    assert_clear_failure(&out, &["train-labels-idx1-ubyte.gz: cannot read"]);
}

#[test]
fn a_taken_metrics_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = example()
        .args(["--epochs", "1", "--limit-train", "300", "--metrics-addr"])
        .arg(addr.to_string())
        .output()
        .unwrap();
    assert_clear_failure(&out, &[&format!("error: cannot serve metrics on {addr}")]);
}
