//! The documentation, tested: every table that lists something the code
//! defines lists exactly that, the root README's snippets and sample output
//! are what the code compiles and prints, every relative link and `#anchor` in the
//! Markdown resolves, every page is within two clicks of the root README, and
//! the PyPI page (`python/README.md`) is generated from gradlint's README.
//!
//! `GRADGUARD_BLESS=1 cargo test -p gradguard-tests --test docs` rewrites
//! `python/README.md` from `lint/README.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, Optimizer, VarBuilder, VarMap, SGD};
use gradguard::exporter::PrometheusConfig;
use gradguard::telemetry::METRIC_NAMES;
use gradguard::Guarded;
use regex::Regex;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of a Markdown text outside fenced code blocks, with their
/// 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<String> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker: String = trimmed
            .chars()
            .take_while(|&c| c == '`' || c == '~')
            .collect();
        let is_fence =
            marker.len() >= 3 && marker.chars().all(|c| c == marker.as_bytes()[0] as char);
        match &fence {
            Some(open) => {
                if is_fence
                    && marker.starts_with(open.as_str())
                    && trimmed[marker.len()..].trim().is_empty()
                {
                    fence = None;
                }
            }
            None if is_fence => fence = Some(marker),
            None => out.push((i + 1, line)),
        }
    }
    out
}

/// The cells of a table row (`| a | b |`), `\|` kept as `|` inside a cell.
fn cells(row: &str) -> Vec<String> {
    let row = row.trim().trim_start_matches('|');
    let row = row.strip_suffix('|').unwrap_or(row);
    let mut cells = vec![String::new()];
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The body rows of the first table whose header's first cell is `first`.
fn table(text: &str, first: &str) -> Vec<Vec<String>> {
    let lines = prose_lines(text);
    let start = lines
        .iter()
        .position(|(_, l)| l.trim_start().starts_with('|') && cells(l)[0] == first)
        .unwrap_or_else(|| panic!("no table with a `{first}` column"));
    lines[start + 2..]
        .iter()
        .take_while(|(_, l)| l.trim_start().starts_with('|'))
        .map(|(_, l)| cells(l))
        .collect()
}

/// The texts of the inline code spans of a cell.
fn code_spans(cell: &str) -> Vec<String> {
    let re = Regex::new(r"`([^`]+)`").unwrap();
    re.captures_iter(cell).map(|c| c[1].to_string()).collect()
}

#[test]
fn the_rule_table_of_lint_readme_lists_exactly_the_rules_gradlint_rules_prints() {
    let documented: Vec<(String, String)> = table(&read("lint/README.md"), "code")
        .into_iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect();
    // What `gradlint rules` prints: `rules::ALL`, in order.
    let defined: Vec<(String, String)> = gradlint::rules::ALL
        .iter()
        .map(|r| (r.code.to_string(), r.name.to_string()))
        .collect();
    assert_eq!(
        documented, defined,
        "lint/README.md's rule table (code, name) differs from `gradlint rules`"
    );
}

#[test]
fn the_metric_table_of_gradguard_readme_lists_exactly_metric_names() {
    let documented: BTreeSet<String> = table(&read("optimizer/README.md"), "metric")
        .iter()
        .map(|row| code_spans(&row[0]).concat())
        .collect();
    let defined: BTreeSet<String> = METRIC_NAMES.iter().map(|s| s.to_string()).collect();
    assert_eq!(documented, defined, "optimizer/README.md's metric table");
}

/// The metric names in a Prometheus exposition text (histogram series under
/// their metric's name).
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| METRIC_NAMES.contains(base))
                .unwrap_or(name)
                .to_string()
        })
        .collect()
}

#[test]
fn the_metric_table_says_which_series_a_named_guard_registers_and_when() {
    let rows = table(&read("optimizer/README.md"), "metric");
    let all: BTreeSet<String> = rows.iter().map(|r| code_spans(&r[0]).concat()).collect();
    // The type column says when a series appears: from the guard's naming
    // (from 0, from empty, from the start) or from the first sample.
    let at_naming: BTreeSet<String> = rows
        .iter()
        .filter(|r| !r[1].contains("from the first sample"))
        .map(|r| code_spans(&r[0]).concat())
        .collect();
    assert!(at_naming.len() < all.len(), "{rows:?}");

    let recorder = PrometheusConfig::new().recorder();
    let handle = recorder.handle();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = candle_nn::linear(3, 1, vb.pp("fc")).unwrap();
    let mut opt = metrics::with_local_recorder(&recorder, || {
        Guarded::new(SGD::new(varmap.all_vars(), 0.1).unwrap())
            .with_varmap(&varmap)
            .sample_grad_norm(1)
            .name("docs")
    });
    assert_eq!(
        exposed(&handle.render()),
        at_naming,
        "series registered when a guard is named"
    );
    let x = Tensor::ones((4, 3), DType::F32, &Device::Cpu).unwrap();
    let loss = model.forward(&x).unwrap().sum_all().unwrap();
    metrics::with_local_recorder(&recorder, || {
        opt.backward(&loss).unwrap();
        opt.step().unwrap();
        opt.zero_grad();
    });
    assert_eq!(
        exposed(&handle.render()),
        all,
        "series after a step with sample_grad_norm(1)"
    );
}

#[test]
fn the_panel_table_of_dashboards_readme_matches_the_dashboard() {
    let rows = table(&read("dashboards/README.md"), "panel");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("dashboards/gradguard.json")).unwrap();
    let mut titles = Vec::new();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let metric = Regex::new(r"gradguard_[a-z_]+").unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        let title = panel["title"].as_str().unwrap().to_string();
        let names = used.entry(title.clone()).or_default();
        for target in targets {
            for m in metric.find_iter(target["expr"].as_str().unwrap_or_default()) {
                names.insert(exposed(m.as_str()).into_iter().next().unwrap());
            }
        }
        titles.push(title);
    }
    let documented: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        documented, titles,
        "dashboards/README.md's panels, in order"
    );
    for row in &rows {
        let names: BTreeSet<String> = code_spans(&row[1]).into_iter().collect();
        assert_eq!(names, used[&row[0]], "metrics of the panel `{}`", row[0]);
    }
    let shown: BTreeSet<&str> = used.values().flatten().map(String::as_str).collect();
    let defined: BTreeSet<&str> = METRIC_NAMES.into_iter().collect();
    assert_eq!(shown, defined, "every metric has a panel");
}

#[test]
fn the_alert_table_of_dashboards_readme_lists_exactly_the_alerts_of_alerts_yml() {
    let rules = read("dashboards/alerts.yml");
    let alert = Regex::new(r"(?m)^\s*- alert:\s*(\S+)").unwrap();
    let severity = Regex::new(r"(?m)^\s*severity:\s*(\S+)").unwrap();
    let starts: Vec<(usize, String)> = alert
        .captures_iter(&rules)
        .map(|c| (c.get(0).unwrap().start(), c[1].to_string()))
        .collect();
    let defined: Vec<(String, String)> = starts
        .iter()
        .enumerate()
        .map(|(i, (start, name))| {
            let end = starts.get(i + 1).map_or(rules.len(), |next| next.0);
            let sev = severity
                .captures(&rules[*start..end])
                .unwrap_or_else(|| panic!("alert {name} has no severity"));
            (name.clone(), sev[1].to_string())
        })
        .collect();
    let documented: Vec<(String, String)> = table(&read("dashboards/README.md"), "alert")
        .into_iter()
        .map(|row| (code_spans(&row[0]).concat(), row[1].clone()))
        .collect();
    assert_eq!(
        documented, defined,
        "dashboards/README.md's alert table (name, severity) differs from dashboards/alerts.yml"
    );
}

/// An example binary `cargo test --workspace` builds (as tests/example.rs
/// finds it).
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} missing: run `cargo test --workspace`, which builds examples",
        bin.display()
    );
    Command::new(bin)
}

/// The flags of an example's `--help` and those of its README's flag table.
fn flags(name: &str, readme: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = example(name).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flag = Regex::new(r"--[a-z][a-z-]*").unwrap();
    let from_help: BTreeSet<String> = help
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| flag.find(l).map(|m| m.as_str().to_string()))
        .collect();
    let documented: BTreeSet<String> = table(&read(readme), "flag")
        .iter()
        .flat_map(|row| {
            flag.find_iter(&row[0])
                .map(|m| m.as_str().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    (documented, from_help)
}

#[test]
fn the_flag_table_of_the_mnist_readme_lists_exactly_the_flags_of_help() {
    let (documented, from_help) = flags("mnist", "examples/mnist/README.md");
    assert!(from_help.contains("--epochs"), "{from_help:?}");
    assert_eq!(
        documented, from_help,
        "examples/mnist/README.md's flag table differs from `mnist --help`"
    );
}

#[test]
fn the_flag_table_of_the_finetune_readme_lists_exactly_the_flags_of_help() {
    let (documented, from_help) = flags("finetune", "examples/finetune/README.md");
    assert!(from_help.contains("--fused-norm"), "{from_help:?}");
    assert_eq!(
        documented, from_help,
        "examples/finetune/README.md's flag table differs from `finetune --help`"
    );
}

/// The fenced blocks of a Markdown text tagged `lang` (exactly, or with
/// attributes after a comma), as their lines.
fn code_blocks(text: &str, lang: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            Some(lines) if trimmed.starts_with("```") => {
                blocks.push(std::mem::take(lines));
                current = None;
            }
            Some(lines) => lines.push(line.to_string()),
            None => {
                if let Some(tag) = trimmed.strip_prefix("```") {
                    if tag.split(',').next() == Some(lang) {
                        current = Some(Vec::new());
                    }
                }
            }
        }
    }
    blocks
}

#[test]
fn the_root_readme_rust_snippet_is_part_of_a_compiled_gradguard_readme_example() {
    // The root README shows the adoption line bare; optimizer/README.md runs
    // the same lines as a doc-test. Every line shown at the root must occur,
    // in order, in one compiled block there.
    let root_blocks = code_blocks(&read("README.md"), "rust");
    assert!(!root_blocks.is_empty());
    let compiled = code_blocks(&read("optimizer/README.md"), "rust");
    for shown in root_blocks {
        let shown: Vec<String> = shown
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let found = compiled.iter().any(|block| {
            let mut lines = block.iter().map(|l| l.trim());
            shown.iter().all(|want| lines.any(|l| l == want))
        });
        assert!(
            found,
            "the root README's block {shown:#?} is not in any compiled block of optimizer/README.md"
        );
    }
}

/// Every Markdown file of the repository (not under hidden folders or
/// `target`), relative to the root.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            if path.is_dir() {
                walk(&path, root, out);
            } else if name.ends_with(".md") {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &root(), &mut out);
    out
}

/// GitHub's anchor for a heading's text: inline markup dropped, lower case,
/// punctuation other than `-` and `_` dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    let link = Regex::new(r"!?\[([^\]]*)\]\([^)]*\)").unwrap();
    let tag = Regex::new(r"<[^>]+>").unwrap();
    let text = link.replace_all(heading, "$1");
    let text = tag.replace_all(&text, "");
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == '-' || c == '_' || c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown text: its headings' slugs (a repeated one gets
/// `-1`, `-2`, ... as on GitHub) and explicit `<a id/name="...">`.
fn anchors(text: &str) -> BTreeSet<String> {
    let heading = Regex::new(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$").unwrap();
    let explicit = Regex::new(r#"<a\s+(?:id|name)="([^"]+)""#).unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        if let Some(c) = heading.captures(line) {
            let base = slug(&c[1]);
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            *n += 1;
        }
        for c in explicit.captures_iter(line) {
            out.insert(c[1].to_string());
        }
    }
    out
}

/// The link targets of a Markdown text outside code (fences and inline code
/// spans), with their line numbers: `[text](target)`, `![alt](target)`,
/// `[label]: target`, `href="..."` and `src="..."`.
fn links(text: &str) -> Vec<(usize, String)> {
    let code = Regex::new(r"`+[^`]*`+").unwrap();
    let inline = Regex::new(r#"\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)"#).unwrap();
    let definition = Regex::new(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)").unwrap();
    let html = Regex::new(r#"(?:href|src)="([^"]+)""#).unwrap();
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let line = code.replace_all(line, "");
        for re in [&inline, &definition, &html] {
            for c in re.captures_iter(&line) {
                out.push((n, c[1].to_string()));
            }
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    let scheme = Regex::new(r"^[a-zA-Z][a-zA-Z0-9+.-]*:").unwrap();
    scheme.is_match(target)
}

/// `base/relative`, with `.` and `..` resolved, relative to the root; `None`
/// when it leaves the repository.
fn resolve(base: &Path, relative: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let start = if relative.starts_with('/') {
        PathBuf::new()
    } else {
        base.to_path_buf()
    };
    for part in start.join(relative.trim_start_matches('/')).components() {
        match part {
            // `..` above the root leaves the repository.
            Component::ParentDir => out.pop().then_some(())?,
            Component::Normal(p) => out.push(p),
            _ => {}
        }
    }
    Some(out)
}

/// The page a link to `path` shows on GitHub: a folder shows its README.md.
fn page(path: &Path) -> PathBuf {
    if root().join(path).is_dir() {
        path.join("README.md")
    } else {
        path.to_path_buf()
    }
}

#[test]
fn every_relative_link_and_anchor_in_the_markdown_resolves() {
    let files = markdown_files();
    assert!(files.contains(&PathBuf::from("README.md")), "{files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = read(file.to_str().unwrap());
        let dir = file.parent().unwrap();
        for (line, target) in links(&text) {
            if is_external(&target) || target.is_empty() {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                Some(file.clone())
            } else {
                resolve(dir, &path.replace("%20", " "))
            };
            let Some(resolved) = resolved.filter(|p| root().join(p).exists()) else {
                broken.push(format!(
                    "{}:{line}: `{target}`: no such file",
                    file.display()
                ));
                continue;
            };
            let shown = page(&resolved);
            if let Some(anchor) = anchor {
                if shown.extension().is_some_and(|e| e == "md") {
                    let found = anchors(&read(shown.to_str().unwrap()));
                    if !found.contains(anchor) {
                        broken.push(format!(
                            "{}:{line}: `{target}`: no heading `#{anchor}` in {} (it has: {})",
                            file.display(),
                            shown.display(),
                            found.into_iter().collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_markdown_page_is_within_two_clicks_of_the_root_readme() {
    let mut depth: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let start = PathBuf::from("README.md");
    depth.insert(start.clone(), 0);
    let mut queue = VecDeque::from([start]);
    while let Some(file) = queue.pop_front() {
        let d = depth[&file];
        if d == 2 {
            continue;
        }
        let text = read(file.to_str().unwrap());
        for (_, target) in links(&text) {
            if is_external(&target) {
                continue;
            }
            let path = target.split('#').next().unwrap();
            if path.is_empty() {
                continue;
            }
            let Some(resolved) = resolve(file.parent().unwrap(), path) else {
                continue;
            };
            let shown = page(&resolved);
            if shown.extension().is_some_and(|e| e == "md")
                && root().join(&shown).is_file()
                && !depth.contains_key(&shown)
            {
                depth.insert(shown.clone(), d + 1);
                queue.push_back(shown);
            }
        }
    }
    let far: Vec<String> = markdown_files()
        .into_iter()
        .filter(|f| !depth.contains_key(f))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        far.is_empty(),
        "pages more than two clicks from README.md: {far:?}"
    );
}

const REPOSITORY_BLOB: &str = "https://github.com/gradguard/gradguard/blob/main";

/// python/README.md (the PyPI page) as generated from lint/README.md: the
/// same text, with links that are relative in the repository made absolute
/// (PyPI shows the page alone, without the repository around it).
fn python_readme() -> String {
    let text = read("lint/README.md");
    let inline = Regex::new(r#"\]\(\s*([^)\s]+)\)"#).unwrap();
    let prose: BTreeSet<usize> = prose_lines(&text).into_iter().map(|(n, _)| n).collect();
    let mut out = String::from(
        "<!-- Generated from lint/README.md, the one source of gradlint's documentation: edit that\n\
         file, then run `GRADGUARD_BLESS=1 cargo test -p gradguard-tests --test docs`. -->\n\n",
    );
    for (i, line) in text.lines().enumerate() {
        let line = if prose.contains(&(i + 1)) {
            inline
                .replace_all(line, |c: &regex::Captures| {
                    let target = &c[1];
                    if is_external(target) {
                        return c[0].to_string();
                    }
                    let absolute = match target.split_once('#') {
                        Some(("", anchor)) => format!("{REPOSITORY_BLOB}/lint/README.md#{anchor}"),
                        _ => {
                            let path = resolve(Path::new("lint"), target)
                                .expect("a link inside the repository");
                            format!("{REPOSITORY_BLOB}/{}", path.display())
                        }
                    };
                    format!("]({absolute})")
                })
                .into_owned()
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn python_readme_is_generated_from_lint_readme() {
    let want = python_readme();
    let path = root().join("python/README.md");
    if std::env::var_os("GRADGUARD_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap();
    assert!(
        have == want,
        "python/README.md is not lint/README.md as generated: edit lint/README.md and run \
         `GRADGUARD_BLESS=1 cargo test -p gradguard-tests --test docs`"
    );
    assert!(
        !want.contains("](../"),
        "a relative link left in the PyPI page"
    );
}

#[test]
fn the_pypi_package_takes_its_readme_from_python_readme() {
    let pyproject = read("pyproject.toml");
    assert!(
        pyproject
            .lines()
            .any(|l| l.trim() == r#"readme = "python/README.md""#),
        "pyproject.toml's readme is not python/README.md"
    );
}

#[test]
fn the_configuration_example_of_lint_readme_is_read_by_gradlint() {
    let text = read("lint/README.md");
    let block = Regex::new(r"(?s)```toml\n(# gradlint\.toml.*?)```")
        .unwrap()
        .captures(&text)
        .expect("lint/README.md: no ```toml block starting `# gradlint.toml`")[1]
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gradlint.toml");
    std::fs::write(&path, &block).unwrap();
    let config = gradlint::config::Config::read(&path)
        .unwrap_or_else(|e| panic!("lint/README.md's configuration example: {e}"))
        .unwrap();
    assert_eq!(
        config.select,
        Some(vec!["GL001".into(), "GL002".into(), "GL003".into()])
    );
    assert!(config.enabled("GL001") && !config.enabled("GL004"));
    // The same keys under [tool.gradlint] in pyproject.toml.
    let path = dir.path().join("pyproject.toml");
    std::fs::write(&path, format!("[tool.gradlint]\n{block}")).unwrap();
    assert_eq!(gradlint::config::Config::read(&path).unwrap(), Some(config));
}

/// The text block of the root README that follows the paragraph starting
/// with `lead`, its lines trimmed.
fn root_block_after(lead: &str) -> Vec<String> {
    let text = read("README.md");
    let at = text
        .find(lead)
        .unwrap_or_else(|| panic!("no `{lead}` in README.md"));
    code_blocks(&text[at..], "text")
        .into_iter()
        .next()
        .expect("a text block after it")
}

#[test]
fn the_root_readme_finding_is_what_gradlint_prints() {
    // The five lines of a training loop whose frame the README shows.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("train.py");
    std::fs::write(
        &file,
        "for x, y in loader:\n    out = model(x)\n    loss = loss_fn(out, y)\n    loss.backward()\n    optimizer.step()\n",
    )
    .unwrap();
    let report = gradlint::walk::lint_paths(&[file], &gradlint::config::Config::default());
    let printed = gradlint::output::render(&report, gradlint::output::Format::Text)
        .replace(&format!("{}/", dir.path().display()), "");
    let printed: Vec<&str> = printed.lines().map(str::trim_end).collect();
    for line in root_block_after("**A finding**") {
        assert!(
            printed.contains(&line.trim_end()),
            "README.md shows `{line}`, gradlint prints:\n{}",
            printed.join("\n")
        );
    }
}

#[test]
fn the_root_readme_log_line_is_the_message_the_seed_model_gets_at_step_2() {
    // The seed's Model(5), two steps with no zero_grad: the WARN's message.
    let (model, varmap) = gradguard_mnist::Model::seeded(5, 0, &Device::Cpu).unwrap();
    let mut opt = Guarded::new(SGD::new(varmap.all_vars(), 0.1).unwrap())
        .with_varmap(&varmap)
        .name("m2");
    let x = Tensor::ones((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let mut anomaly = None;
    for _ in 0..2 {
        let loss = model
            .forward_t(&x, true)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        opt.backward(&loss).unwrap();
        anomaly = opt.step().unwrap().anomalies.into_iter().next();
    }
    let message = anomaly.expect("flagged at step 2").to_string();
    let shown = root_block_after("**A log line**").join(" ");
    assert!(
        shown.contains(&message),
        "README.md's log line does not hold the message\n{message}\nin\n{shown}"
    );
}
