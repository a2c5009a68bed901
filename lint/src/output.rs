//! Report formats: text (rustc/ruff-like, with a code frame), JSON, SARIF
//! 2.1.0 (GitHub code scanning) and GitHub workflow annotations.

use std::fmt::Write as _;
use std::str::FromStr;

use serde_json::{json, Value};

use crate::assumptions::Confidence;
use crate::diagnostic::{Diagnostic, LineIndex};
use crate::notebook::Notebook;
use crate::rules;
use crate::walk::Report;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `path:line:col: GL001 message`, a code frame and a help line.
    Text,
    /// One JSON object: diagnostics, errors, file count.
    Json,
    /// SARIF 2.1.0.
    Sarif,
    /// `::error file=...` workflow commands.
    Github,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "sarif" => Ok(Format::Sarif),
            "github" => Ok(Format::Github),
            _ => Err(format!(
                "unknown format `{s}`; expected text, json, sarif or github"
            )),
        }
    }
}

/// Renders `report` in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Text => text(report),
        Format::Json => serde_json::to_string_pretty(&json(report)).expect("serialisable") + "\n",
        Format::Sarif => serde_json::to_string_pretty(&sarif(report)).expect("serialisable") + "\n",
        Format::Github => github(report),
    }
}

/// `path:line:col`, or `path:cell N:line:col` in a notebook.
fn position(path: &str, cell: Option<usize>, line: usize, column: usize) -> String {
    match cell {
        Some(c) => format!("{path}:cell {c}:{line}:{column}"),
        None => format!("{path}:{line}:{column}"),
    }
}

/// The text a finding's lines count in: the file, or its notebook cell.
fn frame_source(path: &str, cell: Option<usize>) -> Option<LineIndex> {
    let text = std::fs::read_to_string(path).ok()?;
    match cell {
        None => Some(LineIndex::new(&text)),
        Some(c) => {
            let notebook = Notebook::parse(&text).ok()?;
            Some(LineIndex::new(notebook.cell(c)?))
        }
    }
}

/// A file and, in a notebook, a cell.
type FrameKey = (String, Option<usize>);

fn text(report: &Report) -> String {
    let mut out = String::new();
    // The last frame's file and cell, and its text.
    let mut sources: Option<(FrameKey, Option<LineIndex>)> = None;
    for d in &report.diagnostics {
        let _ = writeln!(
            out,
            "{}: {} {}",
            position(&d.path, d.cell, d.line, d.column),
            d.code,
            d.message
        );
        let key = (d.path.clone(), d.cell);
        if sources.as_ref().is_none_or(|(k, _)| *k != key) {
            let index = frame_source(&d.path, d.cell);
            sources = Some((key, index));
        }
        if let Some((_, Some(index))) = &sources {
            let width = d.line.to_string().len();
            let pad = " ".repeat(width);
            let _ = writeln!(out, "{pad} |");
            if d.line > 1 {
                let _ = writeln!(out, "{:>width$} | {}", d.line - 1, index.line(d.line - 1));
            }
            let line = index.line(d.line);
            let _ = writeln!(out, "{:>width$} | {line}", d.line);
            let len = if d.end_line == d.line {
                d.end_column.saturating_sub(d.column).max(1)
            } else {
                line.chars().count().saturating_sub(d.column - 1).max(1)
            };
            let _ = writeln!(
                out,
                "{pad} | {}{}",
                " ".repeat(d.column - 1),
                "^".repeat(len)
            );
            let _ = writeln!(out, "{pad} = help: {}", d.help);
            weight(&mut out, &pad, d);
        } else {
            let _ = writeln!(out, "  = help: {}", d.help);
            weight(&mut out, " ", d);
        }
        out.push('\n');
    }
    for e in &report.errors {
        match (e.line, e.column) {
            (Some(l), Some(c)) => {
                let _ = writeln!(
                    out,
                    "{}: error: {}",
                    position(&e.path, e.cell, l, c),
                    e.message
                );
            }
            _ => {
                let _ = writeln!(out, "{}: error: {}", e.path, e.message);
            }
        }
    }
    let n = report.diagnostics.len();
    let total = n + report.fixed.unwrap_or(0);
    let _ = write!(
        out,
        "Found {total} problem{}",
        if total == 1 { "" } else { "s" }
    );
    if let Some(fixed) = report.fixed {
        let _ = write!(out, " ({fixed} fixed, {n} remaining)");
    }
    let _ = write!(
        out,
        " in {} file{}",
        report.files,
        if report.files == 1 { "" } else { "s" }
    );
    if !report.errors.is_empty() {
        let _ = write!(out, " ({} could not be linted)", report.errors.len());
    }
    out.push('\n');
    out
}

/// Under a finding that rests on guesses: its confidence and each guess.
fn weight(out: &mut String, pad: &str, d: &Diagnostic) {
    if d.confidence == Confidence::High {
        return;
    }
    let _ = writeln!(
        out,
        "{pad} = confidence: {}, assuming:",
        d.confidence.as_str()
    );
    for a in &d.assumptions {
        match a.line {
            Some(l) => {
                let _ = writeln!(out, "{pad}   - {} (line {l})", a.note);
            }
            None => {
                let _ = writeln!(out, "{pad}   - {}", a.note);
            }
        }
    }
}

/// SARIF's level and rank (0-100) for a confidence: CodeQL-style, a
/// guess lowers both.
fn level_and_rank(c: Confidence) -> (&'static str, f64) {
    match c {
        Confidence::High => ("error", 90.0),
        Confidence::Medium => ("warning", 50.0),
        Confidence::Low => ("note", 20.0),
    }
}

fn json(report: &Report) -> Value {
    json!({
        "diagnostics": report.diagnostics,
        "errors": report.errors,
        "files": report.files,
        "fixed": report.fixed,
    })
}

/// A path as a SARIF relative URI.
fn uri(path: &str) -> String {
    path.trim_start_matches("./").replace('\\', "/")
}

fn sarif(report: &Report) -> Value {
    let rules: Vec<Value> = rules::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.code,
                "name": r.name,
                "shortDescription": { "text": r.summary },
                "fullDescription": { "text": r.summary },
                "help": { "text": r.docs, "markdown": r.docs },
                "defaultConfiguration": { "level": "error" },
                "properties": { "tags": ["correctness", "machine-learning"], "precision": "high" }
            })
        })
        .collect();
    let results: Vec<Value> = report
        .diagnostics
        .iter()
        .map(|d| {
            let index = rules::ALL
                .iter()
                .position(|r| r.code == d.code)
                .unwrap_or(0);
            let (level, rank) = level_and_rank(d.confidence);
            let mut result = json!({
                "ruleId": d.code,
                "ruleIndex": index,
                "level": level,
                "rank": rank,
                "properties": {
                    "precision": d.confidence.as_str(),
                    "confidence": d.confidence.as_str(),
                    "assumptions": d.assumptions,
                },
                "message": { "text": format!("{}{} (help: {})", in_cell(d.cell), d.message, d.help) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&d.path), "uriBaseId": "%SRCROOT%" },
                        "region": {
                            "startLine": d.line,
                            "startColumn": d.column,
                            "endLine": d.end_line,
                            "endColumn": d.end_column
                        }
                    }
                }]
            });
            if let Some(cell) = d.cell {
                // Lines count from the top of the notebook cell.
                result["properties"]["cell"] = json!(cell);
            }
            result
        })
        .collect();
    let notifications: Vec<Value> = report
        .errors
        .iter()
        .map(|e| {
            json!({
                "level": "error",
                "message": { "text": format!("{}{}", in_cell(e.cell), e.message) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&e.path), "uriBaseId": "%SRCROOT%" }
                    }
                }]
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "gradlint",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://github.com/gradguard/gradguard",
                    "rules": rules
                }
            },
            "results": results,
            "invocations": [{
                "executionSuccessful": report.errors.is_empty(),
                "toolExecutionNotifications": notifications
            }]
        }]
    })
}

/// `cell N: ` before a message about a notebook cell.
fn in_cell(cell: Option<usize>) -> String {
    cell.map_or_else(String::new, |c| format!("cell {c}: "))
}

/// Escapes a workflow command's data (`%`, CR, LF) or property (also `:` and `,`).
fn escape(s: &str, property: bool) -> String {
    let mut out = s
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    if property {
        out = out.replace(':', "%3A").replace(',', "%2C");
    }
    out
}

fn github(report: &Report) -> String {
    let mut out = String::new();
    for d in &report.diagnostics {
        let command = match d.confidence {
            Confidence::High => "error",
            _ => "warning",
        };
        let _ = writeln!(
            out,
            "::{command} title={},file={},line={},col={},endLine={},endColumn={}::{}",
            escape(&format!("gradlint {} {}", d.code, d.rule), true),
            escape(&d.path, true),
            d.line,
            d.column,
            d.end_line,
            d.end_column,
            escape(
                &format!("{}{} (help: {})", in_cell(d.cell), d.message, d.help),
                false
            )
        );
    }
    for e in &report.errors {
        let _ = writeln!(
            out,
            "::error title=gradlint,file={}::{}",
            escape(&e.path, true),
            escape(&format!("{}{}", in_cell(e.cell), e.message), false)
        );
    }
    out
}
