//! `gradlint`: find gradient-reset bugs in PyTorch and Rust training code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gradlint::config::Config;
use gradlint::output::{self, Format};
use gradlint::rules;

/// Finds gradient-reset bugs (the missing zero_grad and its cousins) in
/// PyTorch and Rust (candle, gradguard, tch-rs) training code.
///
/// Exit status: 0 no finding, 1 findings, 2 usage error or a file that could
/// not be read or parsed.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    check: Check,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lint files and directories (the default).
    Check(Check),
    /// Show a rule's documentation (e.g. `gradlint rule GL001`).
    Rule {
        /// A code (`GL001`) or name (`missing-zero-grad`).
        code: String,
    },
    /// List every rule.
    Rules,
}

#[derive(Debug, clap::Args)]
struct Check {
    /// Files or directories to lint (default: the current directory).
    paths: Vec<PathBuf>,
    /// Run only these rules (comma-separated codes).
    #[arg(long, value_delimiter = ',')]
    select: Option<Vec<String>>,
    /// Skip these rules (comma-separated codes).
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json", "sarif", "github"])]
    format: String,
    /// Read settings from this file instead of the nearest gradlint.toml or
    /// pyproject.toml ([tool.gradlint]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write the report to a file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Fix what can be fixed with certainty, in place; report what remains.
    #[arg(long)]
    fix: bool,
    /// Show the fixes as a unified diff on standard output; write nothing
    /// (with --fix too, as ruff does: preview the fix).
    #[arg(long)]
    diff: bool,
    /// With --fix or --diff, apply the fixes that need a reader's judgement
    /// too (`gradlint rule CODE` says which).
    #[arg(long)]
    unsafe_fixes: bool,
    /// The lowest confidence shown: high (default: findings that rest on no
    /// guess), medium (one guess), low or all.
    #[arg(long, value_parser = ["high", "medium", "low", "all"])]
    confidence: Option<String>,
}

// Parsing allocates per syntax node on every core; mimalloc scales where the
// system allocator contends.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Rule { code }) => match rules::find(&code) {
            Some(rule) => {
                println!(
                    "# {} ({})\n\n{}\n\n{}\n{}",
                    rule.name,
                    rule.code,
                    rule.summary,
                    rule.docs,
                    gradlint::assumptions::TIERS
                );
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: no rule `{code}`; `gradlint rules` lists them");
                ExitCode::from(2)
            }
        },
        Some(Command::Rules) => {
            for r in rules::ALL {
                println!("{}  {:<24} {}", r.code, r.name, r.summary);
            }
            ExitCode::SUCCESS
        }
        Some(Command::Check(check)) => run(check),
        None => run(cli.check),
    }
}

fn usage(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn run(check: Check) -> ExitCode {
    let paths = if check.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        check.paths
    };
    let loaded = match &check.config {
        Some(path) => Config::read(path).map(|c| c.unwrap_or_default()),
        None => Config::discover(&paths[0]).map(|found| found.map(|(_, c)| c).unwrap_or_default()),
    };
    let mut config = match loaded {
        Ok(c) => c,
        Err(e) => return usage(format!("bad configuration: {e}")),
    };
    if let Some(select) = check.select {
        config.select = Some(select);
    }
    config.ignore.extend(check.ignore);
    if let Some(c) = check.confidence {
        config.confidence = Some(c.parse().expect("checked by clap"));
    }
    for code in config.select.iter().flatten().chain(&config.ignore) {
        if rules::find(code).is_none() {
            return usage(format!(
                "unknown rule `{code}`; `gradlint rules` lists them"
            ));
        }
    }
    let format: Format = check.format.parse().expect("checked by clap");
    if check.diff {
        return diff(&paths, &config, check.unsafe_fixes);
    }
    let report = if check.fix {
        gradlint::fix::fix_paths(&paths, &config, check.unsafe_fixes, true).0
    } else {
        gradlint::walk::lint_paths(&paths, &config)
    };
    let rendered = output::render(&report, format);
    let written = match &check.output {
        Some(path) => {
            std::fs::write(path, rendered).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => std::io::stdout()
            .write_all(rendered.as_bytes())
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = written {
        return usage(format!("cannot write the report: {e}"));
    }
    if !report.errors.is_empty() {
        ExitCode::from(2)
    } else if !report.diagnostics.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `--diff`: the fixes as a unified diff, nothing written. Exit 1 when there
/// is something to fix or findings would remain.
fn diff(paths: &[PathBuf], config: &Config, unsafe_fixes: bool) -> ExitCode {
    let (report, changed) = gradlint::fix::fix_paths(paths, config, unsafe_fixes, false);
    let mut out = std::io::stdout().lock();
    for file in &changed {
        if out.write_all(file.unified_diff().as_bytes()).is_err() {
            return usage("cannot write the diff".to_string());
        }
    }
    for e in &report.errors {
        eprintln!("{}: error: {}", e.path, e.message);
    }
    let fixed = report.fixed.unwrap_or(0);
    let remaining = report.diagnostics.len();
    eprintln!(
        "Would fix {fixed} problem{} ({remaining} would remain) in {} file{}",
        if fixed == 1 { "" } else { "s" },
        changed.len(),
        if changed.len() == 1 { "" } else { "s" }
    );
    if !report.errors.is_empty() {
        ExitCode::from(2)
    } else if fixed > 0 || remaining > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
