//! The `gradlint` command as CI and users run it: exit codes, formats,
//! configuration, suppressions, and files that cannot be linted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BAD: &str =
    "for x, y in loader:\n    criterion(model(x), y).backward()\n    optimizer.step()\n";
const GOOD: &str = "for x, y in loader:\n    optimizer.zero_grad()\n    criterion(model(x), y).backward()\n    optimizer.step()\n";

fn gradlint(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradlint"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn exit_0_when_clean_and_1_with_findings() {
    let clean = tree(&[("train.py", GOOD.as_bytes())]);
    let out = gradlint(clean.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("Found 0 problems in 1 file"));
    let bad = tree(&[("train.py", BAD.as_bytes())]);
    assert_eq!(gradlint(bad.path(), &["."]).status.code(), Some(1));
}

#[test]
fn text_output_has_position_code_frame_and_help() {
    let dir = tree(&[("train.py", BAD.as_bytes())]);
    let out = stdout(&gradlint(dir.path(), &["train.py"]));
    let expected = "train.py:3:5: GL001 gradients pile up: `optimizer` steps after `backward()` with no gradient reset on every iteration\n  |\n2 |     criterion(model(x), y).backward()\n3 |     optimizer.step()\n  |     ^^^^^^^^^^^^^^^^\n  = help: call `optimizer.zero_grad()` every iteration, after the step (or before the backward pass)\n";
    assert!(out.starts_with(expected), "{out}");
}

#[test]
fn a_file_that_does_not_parse_is_reported_and_the_rest_still_linted() {
    let dir = tree(&[
        ("a_broken.py", b"def f(:\n  loss.backward()\n"),
        ("b_train.py", BAD.as_bytes()),
    ]);
    let out = gradlint(dir.path(), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("a_broken.py:1:7: error: syntax error"),
        "{text}"
    );
    assert!(text.contains("b_train.py:3:5: GL001"), "{text}");
    assert!(text.contains("(1 could not be linted)"), "{text}");
}

#[test]
fn a_file_with_no_gradient_event_is_not_parsed() {
    // Only files that may take part in a finding are parsed: a syntax
    // error elsewhere is not reported.
    let dir = tree(&[
        ("a_broken.py", b"def f(:\n  pass\n"),
        ("b_train.py", BAD.as_bytes()),
    ]);
    let out = gradlint(dir.path(), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("a_broken.py"), "{text}");
    assert!(text.contains("Found 1 problem in 2 files"), "{text}");
}

#[test]
fn not_utf8_huge_and_broken_symlinks_are_errors_not_panics() {
    let dir = tree(&[("latin1.py", b"x = '\xe9'\n"), ("ok.py", GOOD.as_bytes())]);
    std::os::unix::fs::symlink(
        dir.path().join("missing.py"),
        dir.path().join("dangling.py"),
    )
    .unwrap();
    let huge = vec![b'#'; 11 * 1024 * 1024];
    std::fs::write(dir.path().join("huge.py"), huge).unwrap();
    let out = gradlint(dir.path(), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("latin1.py: error: not valid UTF-8"), "{text}");
    assert!(
        text.contains("dangling.py: error: broken symbolic link"),
        "{text}"
    );
    assert!(text.contains("huge.py: error: file too large"), "{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(
        text.contains("in 4 files (3 could not be linted)"),
        "{text}"
    );
}

#[test]
fn deeply_nested_code_does_not_crash() {
    let mut python = String::from("x = ");
    python.push_str(&"(".repeat(3000));
    python.push('1');
    python.push_str(&")".repeat(3000));
    python.push('\n');
    let mut rust = String::from("fn f() { let x = ");
    rust.push_str(&"[".repeat(3000));
    rust.push_str(&"]".repeat(3000));
    rust.push_str("; }\n");
    let dir = tree(&[("deep.py", python.as_bytes()), ("deep.rs", rust.as_bytes())]);
    let out = gradlint(dir.path(), &[]);
    assert!(matches!(out.status.code(), Some(0) | Some(2)), "{out:?}");
}

#[test]
fn gitignore_and_exclude_are_honoured() {
    let dir = tree(&[
        (".gitignore", b"generated/\n"),
        ("generated/train.py", BAD.as_bytes()),
        ("vendor/train.py", BAD.as_bytes()),
        ("gradlint.toml", b"exclude = [\"vendor/\"]\n"),
        ("train.py", GOOD.as_bytes()),
    ]);
    let out = gradlint(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn select_ignore_and_config_files() {
    let dir = tree(&[("train.py", BAD.as_bytes())]);
    assert_eq!(
        gradlint(dir.path(), &["--ignore", "GL001"]).status.code(),
        Some(0)
    );
    assert_eq!(
        gradlint(dir.path(), &["--select", "GL003,GL004"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        gradlint(dir.path(), &["--select", "GL001"]).status.code(),
        Some(1)
    );
    let out = gradlint(dir.path(), &["--select", "GL999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown rule `GL999`"));
    std::fs::write(
        dir.path().join("pyproject.toml"),
        "[tool.gradlint]\nignore = [\"GL001\"]\n",
    )
    .unwrap();
    assert_eq!(gradlint(dir.path(), &[]).status.code(), Some(0));
    std::fs::write(
        dir.path().join("pyproject.toml"),
        "[tool.gradlint]\nignore = 3\n",
    )
    .unwrap();
    let out = gradlint(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad configuration"));
}

#[test]
fn a_disabled_rule_does_not_take_findings_from_enabled_ones() {
    // A pile-up with the only reset before the loop is GL002's; with GL002
    // ignored (or not selected) GL001 reports it, as ruff orders precedence.
    let src = "optimizer.zero_grad()\nfor x, y in loader:\n    criterion(model(x), y).backward()\n    optimizer.step()\n";
    let dir = tree(&[("train.py", src.as_bytes())]);
    let all = stdout(&gradlint(dir.path(), &["--format", "json"]));
    assert!(all.contains("GL002") && !all.contains("GL001"), "{all}");
    for args in [&["--ignore", "GL002"][..], &["--select", "GL001"][..]] {
        let mut argv = args.to_vec();
        argv.extend(["--format", "json"]);
        let out = gradlint(dir.path(), &argv);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let text = stdout(&out);
        assert!(text.contains("GL001") && !text.contains("GL002"), "{text}");
    }
}

#[test]
fn suppression_comments_silence_one_rule() {
    let py = BAD.replace(
        "optimizer.step()",
        "optimizer.step()  # gradlint: ignore[GL001]",
    );
    let rs = "fn f(opt: &mut Opt) { for b in bs { b.loss().backward(); opt.step(); // gradlint: ignore[GL001]\n } }\n";
    let other = BAD.replace(
        "optimizer.step()",
        "optimizer.step()  # gradlint: ignore[GL003]",
    );
    let dir = tree(&[("a.py", py.as_bytes()), ("b.rs", rs.as_bytes())]);
    assert_eq!(
        gradlint(dir.path(), &[]).status.code(),
        Some(0),
        "{}",
        stdout(&gradlint(dir.path(), &[]))
    );
    let dir = tree(&[("a.py", other.as_bytes())]);
    assert_eq!(gradlint(dir.path(), &[]).status.code(), Some(1));
}

#[test]
fn json_output() {
    let dir = tree(&[("train.py", BAD.as_bytes())]);
    let out = gradlint(dir.path(), &["--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "GL001");
    assert_eq!(d["rule"], "missing-zero-grad");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(v["files"], 1);
}

#[test]
fn github_annotations() {
    let dir = tree(&[("train.py", BAD.as_bytes())]);
    let out = stdout(&gradlint(dir.path(), &["--format", "github", "train.py"]));
    assert!(
        out.starts_with("::error title=gradlint GL001 missing-zero-grad,file=train.py,line=3,col=5,endLine=3,endColumn=21::gradients pile up"),
        "{out}"
    );
}

fn sarif_schema() -> PathBuf {
    let path = std::env::var_os("GRADLINT_SARIF_SCHEMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/sarif-schema-2.1.0.json")
        });
    assert!(
        path.is_file(),
        "{} missing: bash scripts/test.sh fetches the SARIF 2.1.0 schema",
        path.display()
    );
    path
}

#[test]
fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sarif_schema()).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let dir = tree(&[
        ("src/train.py", BAD.as_bytes()),
        ("broken.py", b"def (\nloss.backward()\n"),
    ]);
    let out = gradlint(
        dir.path(),
        &["--format", "sarif", "--output", "report.sarif"],
    );
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.sarif")).unwrap())
            .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let run = &report["runs"][0];
    assert_eq!(run["tool"]["driver"]["rules"].as_array().unwrap().len(), 9);
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "GL001");
    let location = &result["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "src/train.py");
    assert_eq!(location["region"]["startLine"], 3);
    assert_eq!(run["invocations"][0]["executionSuccessful"], false);
    // A broken report fails validation: the check is real.
    let mut broken = report.clone();
    broken["runs"][0]["results"][0]["level"] = "fatal".into();
    assert!(!validator.is_valid(&broken));
}

#[test]
fn rule_docs_and_rule_list() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(&gradlint(dir.path(), &["rule", "GL004"]));
    for section in [
        "# accumulation-defeated (GL004)",
        "## What it does",
        "## Why is this bad?",
        "## Example",
        "## Use instead",
    ] {
        assert!(out.contains(section), "{section} in {out}");
    }
    let list = stdout(&gradlint(dir.path(), &["rules"]));
    assert_eq!(list.lines().count(), 9);
    assert!(list.lines().all(|l| l.starts_with("GL00")));
    assert_eq!(
        gradlint(dir.path(), &["rule", "GL999"]).status.code(),
        Some(2)
    );
}

#[test]
fn a_missing_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = gradlint(dir.path(), &["nope.py"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("nope.py: error: no such file or directory"));
}

#[test]
fn fix_rewrites_the_file_and_says_fixed_and_remaining() {
    // GL004 (a reset every iteration defeats the accumulation) has no fix.
    let manual = "for i, x in enumerate(data):\n    loss(x).backward()\n    if (i + 1) % 4 == 0:\n        opt.step()\n    opt.zero_grad()\n";
    let dir = tree(&[
        ("train.py", BAD.as_bytes()),
        ("manual.py", manual.as_bytes()),
    ]);
    let out = gradlint(dir.path(), &["--fix", "."]);
    // The accumulation finding has no fix: it remains, so the exit status is 1.
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("Found 2 problems (1 fixed, 1 remaining) in 2 files"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("manual.py:5:5: GL004"));
    let fixed = std::fs::read_to_string(dir.path().join("train.py")).unwrap();
    assert_eq!(fixed, format!("{BAD}    optimizer.zero_grad()\n"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("manual.py")).unwrap(),
        manual
    );
    // Nothing left to fix: exit 0 on the fixed file, and it stays as it is.
    let again = gradlint(dir.path(), &["--fix", "train.py"]);
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
    assert!(stdout(&again).contains("Found 0 problems (0 fixed, 0 remaining) in 1 file"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("train.py")).unwrap(),
        fixed
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 2);
}

#[test]
fn diff_shows_the_edit_and_writes_nothing() {
    let dir = tree(&[("train.py", BAD.as_bytes())]);
    let out = gradlint(dir.path(), &["--diff", "train.py"]);
    assert_eq!(out.status.code(), Some(1));
    let diff = stdout(&out);
    assert!(
        diff.starts_with("--- a/train.py\n+++ b/train.py\n@@ "),
        "{diff}"
    );
    assert!(
        diff.contains("     optimizer.step()\n+    optimizer.zero_grad()\n"),
        "{diff}"
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("Would fix 1 problem (0 would remain) in 1 file"),
        "{summary}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("train.py")).unwrap(),
        BAD
    );
    // A clean file: no diff, exit 0.
    let clean = tree(&[("train.py", GOOD.as_bytes())]);
    let out = gradlint(clean.path(), &["--diff", "."]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), ""));
    // With --fix, --diff previews the same edit and still writes nothing.
    let out = gradlint(dir.path(), &["--fix", "--diff", "train.py"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(1), diff));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("train.py")).unwrap(),
        BAD
    );
}

#[test]
fn unsafe_fixes_only_with_unsafe_fixes() {
    let gan = "for x in data:\n    d_loss(x).backward()\n    opt_d.step()\n    g_loss(x).backward()\n    opt_g.step()\n";
    let dir = tree(&[("gan.py", gan.as_bytes())]);
    let out = gradlint(dir.path(), &["--fix", "gan.py"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("(0 fixed, 2 remaining)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("gan.py")).unwrap(),
        gan
    );
    let out = gradlint(dir.path(), &["--fix", "--unsafe-fixes", "gan.py"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let fixed = std::fs::read_to_string(dir.path().join("gan.py")).unwrap();
    assert!(
        fixed.contains("opt_d.step()\n    opt_d.zero_grad()\n"),
        "{fixed}"
    );
    assert!(
        fixed.contains("opt_g.step()\n    opt_g.zero_grad()\n"),
        "{fixed}"
    );
}

#[test]
fn fix_never_touches_a_file_with_a_syntax_error_and_keeps_crlf() {
    let broken = b"for x in y\n    loss.backward()\n    opt.step()\n";
    let crlf = BAD.replace('\n', "\r\n");
    let dir = tree(&[("broken.py", broken), ("crlf.py", crlf.as_bytes())]);
    let out = gradlint(dir.path(), &["--fix", "."]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("broken.py:1:11: error: syntax error"));
    assert_eq!(std::fs::read(dir.path().join("broken.py")).unwrap(), broken);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("crlf.py")).unwrap(),
        format!("{crlf}    optimizer.zero_grad()\r\n")
    );
}

#[test]
fn fix_respects_select() {
    let dir = tree(&[("train.py", BAD.as_bytes())]);
    let out = gradlint(dir.path(), &["--fix", "--select", "GL003", "train.py"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("train.py")).unwrap(),
        BAD
    );
}

/// A notebook: a markdown cell, a cell with IPython magics and a shell line,
/// and a training loop with no reset in cell 3.
fn notebook(loop_cell: &str) -> Vec<u8> {
    serde_json::json!({
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"language_info": {"name": "python"}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Training\n"]},
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": null,
             "source": ["!pip install torch\n", "%matplotlib inline\n", "import torch\n"]},
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": null,
             "source": loop_cell},
        ]
    })
    .to_string()
    .into_bytes()
}

const NB_LOOP: &str = "for x, y in loader:\n    %time out = model(x)\n    criterion(out, y).backward()\n    optimizer.step()\n";

#[test]
fn notebooks_report_cell_line_and_column_with_the_cell_as_frame() {
    let dir = tree(&[("train.ipynb", &notebook(NB_LOOP))]);
    let out = gradlint(dir.path(), &["train.ipynb"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let expected = "train.ipynb:cell 3:4:5: GL001 gradients pile up: `optimizer` steps after `backward()` with no gradient reset on every iteration\n  |\n3 |     criterion(out, y).backward()\n4 |     optimizer.step()\n  |     ^^^^^^^^^^^^^^^^\n";
    assert!(text.starts_with(expected), "{text}");
    let fixed = NB_LOOP.replace(
        "    optimizer.step()\n",
        "    optimizer.step()\n    optimizer.zero_grad()\n",
    );
    let clean = tree(&[("train.ipynb", &notebook(&fixed))]);
    assert_eq!(gradlint(clean.path(), &[]).status.code(), Some(0));
}

#[test]
fn notebooks_in_json_sarif_and_github_carry_the_cell() {
    let dir = tree(&[
        ("nb/train.ipynb", &notebook(NB_LOOP)),
        ("train.py", BAD.as_bytes()),
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&gradlint(dir.path(), &["--format", "json"]).stdout).unwrap();
    let d = &json["diagnostics"][0];
    assert_eq!(d["path"], "./nb/train.ipynb");
    assert_eq!((d["cell"].as_u64(), d["line"].as_u64()), (Some(3), Some(4)));
    // Plain Python files have no cell.
    assert!(json["diagnostics"][1].get("cell").is_none());

    let sarif = gradlint(dir.path(), &["--format", "sarif"]);
    let report: serde_json::Value = serde_json::from_slice(&sarif.stdout).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sarif_schema()).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&report));
    let result = &report["runs"][0]["results"][0];
    assert_eq!(result["properties"]["cell"], 3);
    assert!(result["message"]["text"]
        .as_str()
        .unwrap()
        .starts_with("cell 3: gradients pile up"));
    assert_eq!(
        result["locations"][0]["physicalLocation"]["region"]["startLine"],
        4
    );

    let github = stdout(&gradlint(dir.path(), &["--format", "github", "nb"]));
    assert!(
        github.starts_with("::error title=gradlint GL001 missing-zero-grad,file=nb/train.ipynb,line=4,col=5,endLine=4,endColumn=21::cell 3: gradients pile up"),
        "{github}"
    );
}

#[test]
fn a_malformed_notebook_is_reported_and_the_rest_still_linted() {
    let dir = tree(&[
        ("a.ipynb", b"{\"cells\": [" as &[u8]),
        (
            "b.ipynb",
            b"{\"nbformat\": 4, \"cells\": [{\"cell_type\": \"code\", \"source\": 7}]}",
        ),
        ("c_train.py", BAD.as_bytes()),
        (
            "d.ipynb",
            &notebook("for x in loader:\n    def (\n    loss.backward()\n"),
        ),
    ]);
    let out = gradlint(dir.path(), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("c_train.py:3:5: GL001"), "{text}");
    assert!(
        text.contains("./a.ipynb: error: not a valid notebook"),
        "{text}"
    );
    assert!(
        text.contains("./b.ipynb: error: not a valid notebook: cell 1"),
        "{text}"
    );
    // A syntax error is placed in its cell.
    assert!(text.contains("./d.ipynb:cell 3:2:"), "{text}");
    assert!(
        text.contains("Found 1 problem in 4 files (3 could not be linted)"),
        "{text}"
    );
}

#[test]
fn a_manual_update_is_fixed_safely_over_parameters_and_unsafely_otherwise() {
    let seed = "for x, y in loader:\n    F.cross_entropy(model(x), y).backward()\n    with torch.no_grad():\n        for p in model.parameters():\n            p -= 0.1 * p.grad\n";
    let indexed = "params = list(model.parameters())\nfor x, y in loader:\n    F.cross_entropy(model(x), y).backward()\n    for i in range(len(params)):\n        params[i] -= 0.1 * params[i].grad\n";
    let dir = tree(&[
        ("seed.py", seed.as_bytes()),
        ("indexed.py", indexed.as_bytes()),
    ]);
    let out = gradlint(dir.path(), &["--fix", "."]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("Found 2 problems (1 fixed, 1 remaining) in 2 files"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("seed.py")).unwrap(),
        format!("{seed}            p.grad = None\n")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("indexed.py")).unwrap(),
        indexed
    );
    let out = gradlint(dir.path(), &["--fix", "--unsafe-fixes", "indexed.py"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("indexed.py")).unwrap(),
        format!("{indexed}    model.zero_grad()\n")
    );
}
