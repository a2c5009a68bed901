//! Fine-tuning a small transformer language model with gradguard: the base
//! is pretrained, then frozen, and low-rank adapters are trained with
//! gradient accumulation; one guard per phase watches exactly what its
//! optimizer trains. The same fine-tuning without `zero_grad` is flagged at
//! step 2.
//!
//! `cargo run --release --example finetune -- --help`

use std::process::ExitCode;
use std::time::Instant;

use candle_core::Device;
use candle_nn::VarMap;
use clap::Parser;
use gradguard::exporter::PrometheusConfig;
use gradguard::logging::{self, LogFormat};
use gradguard::{Check, Level};
use gradguard_finetune::train::{pretrain, restore, snapshot, validation_loss};
use gradguard_finetune::{Config, Corpus, Finetune, Kernels, Lm, Outcome, Phase, Reset};

/// Fine-tuning with a frozen base and adapters, watched by gradguard.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Pretraining steps of the base.
    #[arg(long, default_value_t = 250)]
    pretrain_steps: usize,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Fine-tuning micro-batches per epoch.
    #[arg(long, default_value_t = 30)]
    micro_batches: usize,
    /// Micro-batches per step (declared with accumulation_steps).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    accumulation: u32,
    /// Use candle-nn's fused RmsNorm, which passes no gradient back in
    /// candle-nn 0.11: the guard names what it starves at step 1.
    #[arg(long, conflicts_with = "fused_softmax")]
    fused_norm: bool,
    /// Use candle-nn's softmax_last_dim in attention, which passes no
    /// gradient back in candle-nn 0.11: the guard names the query and key
    /// projections at step 1.
    #[arg(long)]
    fused_softmax: bool,
    /// Deny every gradguard check but short_accumulation (the epoch's short
    /// last window, expected here): the first anomaly stops the run (exit 1).
    #[arg(long)]
    deny: bool,
    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9464) while training.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Keep serving metrics this many seconds after training (for a scrape).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    linger: u64,
    /// Log lines as `text` or `json` (stderr; level from RUST_LOG).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Metrics(#[from] gradguard::exporter::ExporterError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{phase}: {error}\nthe run stopped; the weights are those of the last good step")]
    Guard {
        phase: &'static str,
        error: gradguard::Error,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let format: LogFormat = args.log_format.parse().expect("checked by clap");
    if let Err(e) = logging::init(format) {
        eprintln!("warning: logging not set up: {e}");
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(
                if matches!(
                    e,
                    Failure::Guard {
                        error: gradguard::Error::Denied(_),
                        ..
                    }
                ) {
                    1
                } else {
                    2
                },
            )
        }
    }
}

fn anomalies(outcome: &Outcome) -> String {
    if outcome.anomalies.is_empty() {
        return "none".into();
    }
    outcome
        .anomalies
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn first(outcome: &Outcome) -> String {
    outcome
        .first_flagged
        .map_or("-".into(), |(s, c)| format!("step {s} ({c})"))
}

fn run(args: &Args) -> Result<(), Failure> {
    let dev = Device::Cpu;
    let server = match &args.metrics_addr {
        Some(addr) => {
            let server = PrometheusConfig::new()
                .listen(addr)?
                .label("run", "finetune")
                .serve()?;
            println!("metrics: http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    let level = if args.deny { Level::Deny } else { Level::Warn };
    let levels = |g: gradguard::Guarded<_>| {
        Check::ALL
            .into_iter()
            .filter(|c| *c != Check::NonFinite)
            .fold(g, |g, c| g.level(c, level))
            .level(Check::ShortAccumulation, Level::Warn)
    };

    let (base_train, base_val) = Corpus::base(12_000, 11).split(0.9);
    let (tune_train, tune_val) = Corpus::finetune(6_000, 12).split(0.8);
    let kernels = if args.fused_norm {
        Kernels::FusedRmsNorm
    } else if args.fused_softmax {
        Kernels::FusedSoftmax
    } else {
        Kernels::Differentiable
    };
    let varmap = VarMap::new();
    let model = Lm::new(Config::default(), kernels, &varmap, &dev)?;
    let base_vars = Phase::Pretrain.vars(&varmap).len();
    let adapter_vars = Phase::Finetune.vars(&varmap).len();
    println!(
        "model: {} variables in one VarMap ({base_vars} base, {adapter_vars} adapters), {}",
        base_vars + adapter_vars,
        match kernels {
            Kernels::Differentiable => "norm and softmax from differentiable ops",
            Kernels::FusedRmsNorm => "candle-nn's fused RmsNorm (no backward pass)",
            Kernels::FusedSoftmax => "candle-nn's softmax_last_dim (no backward pass)",
        }
    );
    println!(
        "text: {} tokens to pretrain on, {} to fine-tune on, {} to validate",
        base_train.len(),
        tune_train.len(),
        tune_val.len()
    );

    let started = Instant::now();
    let mut opt = levels(Phase::Pretrain.optimizer(&varmap, 3e-3)?.name("base"));
    let before = validation_loss(&model, &base_val, 4, &dev)?;
    let base = pretrain(&model, &mut opt, &base_train, args.pretrain_steps, 16, &dev).map_err(
        |error| Failure::Guard {
            phase: "pretraining",
            error,
        },
    )?;
    let after = validation_loss(&model, &base_val, 4, &dev)?;
    let tune_before = validation_loss(&model, &tune_val, 4, &dev)?;
    println!(
        "base: {} steps over {base_vars} variables, {:.1}s; validation loss {before:.3} -> {after:.3} (on the fine-tuning text: {tune_before:.3}); anomalies: {}",
        base.steps,
        started.elapsed().as_secs_f64(),
        anomalies(&base)
    );

    let pretrained = snapshot(&varmap)?;
    let mut rows = Vec::new();
    for (name, reset) in [("lora", Reset::AfterStep), ("lora-noreset", Reset::Never)] {
        restore(&pretrained)?;
        let started = Instant::now();
        let mut opt = levels(
            Phase::Finetune
                .optimizer(&varmap, 1e-2)?
                .accumulation_steps(args.accumulation)
                .name(name),
        );
        let tune = Finetune {
            epochs: args.epochs,
            micro_batches: args.micro_batches,
            accumulation: args.accumulation,
            rows: 8,
            reset,
        };
        let outcome = tune
            .run(
                &model,
                &mut opt,
                &tune_train,
                &tune_val,
                &dev,
                |epoch, loss| {
                    println!("{name} epoch {epoch}: validation loss {loss:.3}");
                },
            )
            .map_err(|error| Failure::Guard {
                phase: "fine-tuning",
                error,
            })?;
        println!(
            "{name}: {} steps, {:.1}s",
            outcome.steps,
            started.elapsed().as_secs_f64()
        );
        rows.push((name, reset, outcome));
    }

    print_table(args, &rows);
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

/// The summary: validation loss per epoch, anomalies and the first flagged
/// step of each fine-tuning run.
fn print_table(args: &Args, rows: &[(&str, Reset, Outcome)]) {
    let loss_width = (6 * args.epochs).max(16);
    println!();
    println!(
        "{:<13} {:<22} {:<loss_width$} {:<45} first flagged",
        "run", "gradients", "validation loss", "anomalies"
    );
    for (name, reset, outcome) in rows {
        let losses: Vec<String> = outcome.val_loss.iter().map(|l| format!("{l:.3}")).collect();
        println!(
            "{name:<13} {:<22} {:<loss_width$} {:<45} {}",
            match reset {
                Reset::AfterStep => "zero_grad after step",
                Reset::Never => "no zero_grad (bug)",
            },
            losses.join(" "),
            anomalies(outcome),
            first(outcome)
        );
    }
    println!(
        "(validation loss on the fine-tuning text after each epoch; {} micro-batches per epoch, a step every {}: the last window of each epoch holds {})",
        args.micro_batches,
        args.accumulation,
        match args.micro_batches % args.accumulation as usize {
            0 => args.accumulation as usize,
            r => r,
        }
    );
}
