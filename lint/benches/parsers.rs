//! Why ruff's parser: ruff_python_parser against tree-sitter-python on the
//! same Python files (default: the corpus of scripts/corpus.sh), alternating
//! rounds in one run. Prints the median time of each and how many files each
//! rejects (every corpus file is valid Python: CPython 3.11 compiles them all).
//!
//! `cargo bench -p gradlint --bench parsers -- [DIR] [ROUNDS]`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn python_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            python_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "py") {
            out.push(p);
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/corpus/src");
    let dir = args.first().map(PathBuf::from).unwrap_or(root);
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    let mut files = Vec::new();
    python_files(&dir, &mut files);
    let sources: Vec<String> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
    assert!(
        !sources.is_empty(),
        "no Python files under {} (run scripts/corpus.sh)",
        dir.display()
    );
    let lines: usize = sources.iter().map(|s| s.lines().count()).sum();

    let mut ts = tree_sitter::Parser::new();
    ts.set_language(&tree_sitter_python::LANGUAGE.into())
        .expect("grammar");
    let (mut ruff_times, mut ts_times) = (Vec::new(), Vec::new());
    let (mut ruff_rejects, mut ts_rejects) = (0, 0);
    for _ in 0..rounds {
        let t = Instant::now();
        ruff_rejects = sources
            .iter()
            .filter(|s| ruff_python_parser::parse_module(s).is_err())
            .count();
        ruff_times.push(t.elapsed());
        let t = Instant::now();
        ts_rejects = sources
            .iter()
            .filter(|s| {
                ts.parse(s.as_bytes(), None)
                    .is_none_or(|tree| tree.root_node().has_error())
            })
            .count();
        ts_times.push(t.elapsed());
    }
    let (r, t) = (median(ruff_times), median(ts_times));
    println!(
        "{} files, {lines} lines, {rounds} rounds, one thread",
        sources.len()
    );
    for (name, d, rejects) in [
        ("ruff_python_parser 0.0.10", r, ruff_rejects),
        ("tree-sitter-python 0.25", t, ts_rejects),
    ] {
        println!(
            "{name:<26} median {:>8.1} ms  {:>6.2} M lines/s  rejects {rejects} valid files",
            d.as_secs_f64() * 1e3,
            lines as f64 / d.as_secs_f64() / 1e6
        );
    }
    println!(
        "tree-sitter / ruff time: {:.2}",
        t.as_secs_f64() / r.as_secs_f64()
    );
}
