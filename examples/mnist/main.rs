//! The seed question, in candle, caught by gradguard.
//!
//! Three copies of the seed's Model(5) with identical initial weights, trained
//! by plain SGD on MNIST: M1 with fresh gradients each step (the analogue of
//! `torch.autograd.grad`), M2 with `backward` + `step` and no `zero_grad` (the
//! bug), M3 with the fix. gradguard flags M2 at step 2.
//!
//! `cargo run --release --example mnist -- --help`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::Device;
use clap::Parser;
use gradguard::exporter::PrometheusConfig;
use gradguard::logging::{self, Color, LogFormat};
use gradguard::{Check, Error, Level};
use gradguard_mnist::plot::{write_accuracy_svg, Curve};
use gradguard_mnist::{GradStyle, Mnist, Model, Run};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// The seed experiment: fresh gradients vs the missing zero_grad, on MNIST.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Training epochs.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Images per step (the seed uses 300).
    #[arg(long, default_value_t = 300)]
    batch_size: usize,
    /// SGD learning rate (the seed uses 0.1).
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Train on at most N images (in file order).
    #[arg(long, value_name = "N")]
    limit_train: Option<usize>,
    /// Evaluate on at most N test images.
    #[arg(long, value_name = "N")]
    limit_test: Option<usize>,
    /// Folder with the four MNIST IDX files (gzipped or not). Default: the
    /// small subset bundled in examples/mnist/data.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Run on the CPU even when built with `--features cuda` and a GPU answers.
    #[arg(long)]
    cpu: bool,
    /// Deny every gradguard check: the first anomaly stops the run (exit 1).
    #[arg(long)]
    deny: bool,
    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9464) while training.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Keep serving metrics this many seconds after training (for a scrape).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    linger: u64,
    /// Write the accuracy chart (SVG) to FILE. Default: mnist-accuracy.svg in
    /// the cargo target folder the example was built in.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Log lines as `text` or `json` (stderr; level from RUST_LOG).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// Log lines go through the progress bars, so they do not tear them.
#[derive(Clone)]
struct BarWriter(MultiProgress);

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn pick_device(force_cpu: bool) -> (Device, String) {
    if force_cpu || !cfg!(feature = "cuda") {
        return (Device::Cpu, "cpu".into());
    }
    // With the cuda feature, cuda_if_available returns an error (not the CPU)
    // when no GPU is usable: fall back, and say so.
    match Device::cuda_if_available(0) {
        Ok(dev @ Device::Cuda(_)) => (dev, "cuda:0".into()),
        Ok(dev) => (dev, "cpu (no CUDA device found)".into()),
        Err(e) => {
            eprintln!("note: no usable CUDA device ({e}); running on the CPU");
            (Device::Cpu, "cpu (CUDA unavailable)".into())
        }
    }
}

fn percent(acc: f64) -> String {
    format!("{:.1}", acc * 100.0)
}

fn print_table(runs: &[Run], epochs: usize) {
    let header_epochs: Vec<String> = (1..=epochs)
        .map(|e| format!("{:<6}", format!("ep{e}")))
        .collect();
    println!();
    println!(
        "{:<4} {:<31} {} {:<28} first flagged",
        "run",
        "gradients",
        header_epochs.join(" "),
        "anomalies"
    );
    for run in runs {
        let acc: Vec<String> = (0..epochs)
            .map(|e| run.accuracy.get(e).map_or("-".into(), |a| percent(*a)))
            .map(|s| format!("{s:<6}"))
            .collect();
        let anomalies = if run.anomalies.is_empty() {
            "none".to_string()
        } else {
            run.anomalies
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let first = run
            .first_flagged
            .map_or("-".into(), |(s, c)| format!("step {s} ({c})"));
        println!(
            "{:<4} {:<31} {} {:<28} {}",
            run.name,
            run.style.describe(),
            acc.join(" "),
            anomalies,
            first
        );
    }
    println!("(test accuracy in % after each epoch)");
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bars = MultiProgress::new();
    let format: LogFormat = args.log_format.parse().expect("checked by clap");
    if let Err(e) = logging::init_with_writer(format, BarWriter(bars.clone()), Color::Auto) {
        eprintln!("warning: logging not set up: {e}");
    }
    match run(&args, &bars) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if matches!(e, Failure::Denied { .. }) {
                1
            } else {
                2
            })
        }
    }
}

/// `mnist-accuracy.svg` in the cargo target folder this binary was built in
/// (`target/release/examples/mnist` → `target/`), else the working folder.
fn default_plot_path() -> PathBuf {
    let name = "mnist-accuracy.svg";
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(|d| d.join(name))
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Data(#[from] gradguard_mnist::DataError),
    #[error(transparent)]
    Metrics(#[from] gradguard::exporter::ExporterError),
    #[error("gradguard denied step {} of {name}: {anomaly}\nthe run stopped; the model's weights are those of the last good step", anomaly.step)]
    Denied {
        name: String,
        anomaly: gradguard::Anomaly,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Plot(#[from] gradguard_mnist::plot::PlotError),
    #[error(transparent)]
    Guard(gradguard::Error),
}

fn run(args: &Args, bars: &MultiProgress) -> Result<(), Failure> {
    let (device, device_name) = pick_device(args.cpu);
    let bundled = args.data_dir.is_none();
    let dir = args.data_dir.clone().unwrap_or_else(Mnist::bundled_dir);
    let data = Mnist::load(&dir, args.limit_train, args.limit_test, &device)?;
    println!(
        "data: {} ({} training / {} test images){}",
        data.source,
        data.train_len(),
        data.test_len(),
        if bundled {
            " — the bundled subset; pass --data-dir for the full MNIST"
        } else {
            ""
        }
    );
    println!("device: {device_name}");
    let server = match &args.metrics_addr {
        Some(addr) => {
            let server = PrometheusConfig::new()
                .listen(addr)?
                .label("run", "mnist")
                .serve()?;
            println!("metrics: http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };

    let level = if args.deny { Level::Deny } else { Level::Warn };
    let mut runs = Vec::new();
    for (name, style) in [
        ("m1", GradStyle::Fresh),
        ("m2", GradStyle::NoZeroGrad),
        ("m3", GradStyle::ZeroGrad),
    ] {
        // The same seed gives the same weights: the seed's deepcopy.
        let (model, varmap) = Model::seeded(5, 0, &device)?;
        runs.push(Run::new(name, style, model, varmap, args.lr, |g| {
            let g = g.sample_grad_norm(10);
            Check::ALL
                .into_iter()
                .filter(|c| *c != Check::NonFinite)
                .fold(g, |g, c| g.level(c, level))
        })?);
    }
    println!(
        "SGD lr {}, batch {}, {} epochs, {} steps per epoch",
        args.lr,
        args.batch_size,
        args.epochs,
        Run::steps_per_epoch(data.train_len(), args.batch_size)
    );

    let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} steps {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let steps = Run::steps_per_epoch(data.train_len(), args.batch_size) as u64;
    for run in &mut runs {
        for epoch in 1..=args.epochs {
            let bar = bars.add(ProgressBar::new(steps));
            bar.set_style(style.clone());
            bar.set_prefix(format!("{} ep{epoch}", run.name));
            let started = Instant::now();
            let trained = run.train_epoch(&data, args.batch_size, |_| bar.inc(1));
            bar.finish_and_clear();
            match trained {
                Ok(()) => {}
                Err(Error::Denied(anomaly)) => {
                    return Err(Failure::Denied {
                        name: run.name.clone(),
                        anomaly,
                    })
                }
                Err(e) => return Err(Failure::Guard(e)),
            }
            let acc = run.evaluate(&data)?;
            let flagged: u64 = run.anomalies.values().sum();
            println!(
                "{} epoch {epoch}: test accuracy {}%, {:.1}s, anomalies so far {flagged}",
                run.name,
                percent(acc),
                started.elapsed().as_secs_f64()
            );
        }
    }
    print_table(&runs, args.epochs);
    let plot = args.plot.clone().unwrap_or_else(default_plot_path);
    let curves: Vec<Curve> = runs
        .iter()
        .map(|r| Curve {
            name: &r.name,
            describe: r.style.describe(),
            accuracy: &r.accuracy,
            first_flagged: r.first_flagged,
        })
        .collect();
    let title = format!(
        "MNIST, Model(5), SGD lr {}, batch {}: fresh gradients vs the missing zero_grad",
        args.lr, args.batch_size
    );
    write_accuracy_svg(&plot, &title, &curves, steps as usize)?;
    println!("chart: {}", plot.display());
    if let Some(server) = server {
        if args.linger > 0 {
            println!(
                "serving metrics on http://{}/metrics for {}s",
                server.addr(),
                args.linger
            );
            std::thread::sleep(std::time::Duration::from_secs(args.linger));
        }
    }
    Ok(())
}
