//! Fixes of hand-written updates (Python): `p -= lr * p.grad` in a loop over
//! a model's parameters, `w -= lr * w.grad` on a named tensor.
//!
//! | update | fix | safe when |
//! |---|---|---|
//! | in `for p in <parameters>:` | `p.grad = None` after the update, in the same loop | the loop's iterable names parameters (`model.parameters()`, `params`, `group["params"]`) and nothing after the update reads a `.grad` in the iteration; otherwise unsafe |
//! | loop over parameters not clear (`params[i] -= ...`) | `model.zero_grad()` after the loop holding the update (the model of the file's one `X.parameters()`) | never: unsafe |
//! | a named tensor, `w -= lr * w.grad` | `w.grad = None` after the update | a plain statement of the loop body (only `with` blocks around it) and nothing after it reads `w.grad` in the iteration; otherwise unsafe |
//!
//! An update in a helper function the loop calls is fixed there, unsafe (the
//! helper may serve other callers). Every fix is checked by linting the
//! result, as all fixes are.

use super::{Applicability, Edit, Fix, Text};
use crate::ir::{Span, Updater};
use crate::{Diagnostic, Language};

/// The block header of a statement enclosing the update (`for p in
/// model.parameters():`, `with torch.no_grad():`, `if ...:`).
#[derive(Debug, Clone)]
struct Header {
    /// Start of its first line.
    line_start: usize,
    /// Its indentation.
    indent: String,
    /// Its code, its lines joined, without comments.
    code: String,
}

/// What a header opens.
#[derive(Debug, PartialEq, Eq)]
enum Block<'a> {
    /// `with ...:`: runs its body once, unconditionally.
    With,
    /// `for TARGET in ITER:`: the names `TARGET` binds and `ITER`.
    For(Vec<&'a str>, &'a str),
    /// `while ...:`.
    While,
    /// Anything else (`if`, `else`, `try`, ...).
    Other,
}

impl Header {
    fn block(&self) -> Block<'_> {
        let code = self.code.trim_end_matches(':').trim();
        let code = code.strip_prefix("async ").unwrap_or(code).trim_start();
        if code.starts_with("with ") || code.starts_with("with(") {
            return Block::With;
        }
        if code.starts_with("while ") || code.starts_with("while(") {
            return Block::While;
        }
        let Some(rest) = code.strip_prefix("for ") else {
            return Block::Other;
        };
        let Some(at) = rest.find(" in ") else {
            return Block::Other;
        };
        let targets = rest[..at]
            .split([',', '(', ')', '[', ']'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        Block::For(targets, rest[at + 4..].trim())
    }

    /// Whether this is `for ... in ITER:` with an `ITER` that names
    /// parameters (`model.parameters()`, `params`, `group["params"]`).
    fn iterates_parameters(&self) -> bool {
        matches!(self.block(), Block::For(_, iter) if iter.to_ascii_lowercase().contains("param"))
    }
}

/// The fixes of a GL001 (or GL002) finding at a hand-written update, best
/// first; none in Rust (its front end has no hand-written updates).
pub(super) fn fixes(text: &Text, finding: &Diagnostic, updater: &Updater) -> Vec<Fix> {
    if text.language != Language::Python {
        return Vec::new();
    }
    let Some(update) = Update::at(text, finding) else {
        return Vec::new();
    };
    match updater {
        Updater::Tensor(tensor) => tensor_fix(text, &update, tensor).into_iter().collect(),
        Updater::Manual => parameter_fixes(text, &update),
        Updater::Optimizer(_) | Updater::Store(_) => Vec::new(),
    }
}

/// The update statement and what encloses it.
struct Update {
    /// End of its last line's text (where a following statement goes).
    content_end: usize,
    /// Its indentation.
    indent: String,
    /// Its line ending.
    newline: &'static str,
    /// The name it starts with (`p` in `p.data -= ...`).
    owner: String,
    /// Enclosing headers inside the loop (or the helper), innermost first.
    headers: Vec<Header>,
    /// Whether the update is in a helper function the loop calls.
    in_helper: bool,
    /// The indentation of the loop's header (`None` in a helper): the
    /// iteration's statements are indented deeper.
    loop_indent: Option<usize>,
}

impl Update {
    /// The update statement of `finding`: alone on its lines (a comment
    /// may follow), possibly over several lines.
    fn at(text: &Text, finding: &Diagnostic) -> Option<Update> {
        let span = finding.anchors.applied_first.unwrap_or(finding.span);
        let source = text.source;
        source.get(span.start..span.end)?;
        let line_start = text.line_start(span.start);
        if !source[line_start..span.start].trim().is_empty() {
            return None;
        }
        let content_end = text.content_end(span.end);
        let after = source[span.end..content_end].trim_start();
        if !(after.is_empty() || after.starts_with('#')) {
            return None;
        }
        let indent = text.indent_of(line_start).to_string();
        let owner: String = source[span.start..span.end]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let loop_span = finding.anchors.loop_span;
        let in_helper = loop_span.is_none_or(|l| !l.contains(span));
        let stop = loop_span
            .filter(|_| !in_helper)
            .map(|l| text.line_start(l.start));
        let loop_indent = stop.map(|s| text.indent_of(s).len());
        Some(Update {
            content_end,
            newline: text.newline_at(span.end),
            headers: headers_above(text, line_start, indent.len(), stop),
            indent,
            owner,
            in_helper,
            loop_indent,
        })
    }

    /// A statement on the line after the update, at its indentation.
    fn insert_after(&self, statement: &str) -> Edit {
        Edit {
            start: self.content_end,
            end: self.content_end,
            text: format!("{}{}{statement}", self.newline, self.indent),
        }
    }

    /// Whether code after the update, still in the iteration, reads
    /// `needle` (`w.grad`; `.grad` for any gradient): up to the end of the
    /// loop body, or of the helper's enclosing block.
    fn read_after(&self, text: &Text, needle: &str) -> bool {
        let floor = match self.loop_indent {
            Some(n) => n,
            None => self.headers.last().map_or(0, |h| h.indent.len()),
        };
        reads_until_dedent(text, self.content_end, floor, needle)
    }
}

/// The headers of the blocks enclosing the line at `line_start` (indented
/// `indent`), innermost first, up to the line `stop` (the loop's header,
/// not included; `None` in a helper) or a `def`/`class`.
fn headers_above(
    text: &Text,
    line_start: usize,
    indent: usize,
    stop: Option<usize>,
) -> Vec<Header> {
    let mut out = Vec::new();
    let mut current = indent;
    let mut at = line_start;
    while at > 0 && current > 0 {
        at = text.line_start(at - 1);
        let code = text.code_of_line(at);
        let width = text.indent_of(at).len();
        if code.is_empty() || width >= current {
            continue;
        }
        if stop.is_some_and(|s| at <= s)
            || code.starts_with("def ")
            || code.starts_with("async def ")
        {
            break;
        }
        if code.starts_with("class ") {
            break;
        }
        current = width;
        out.push(Header {
            line_start: at,
            indent: text.indent_of(at).to_string(),
            code: header_code(text, at),
        });
    }
    out
}

/// A header's code from its first line to the line ending with `:` (at
/// most ten lines).
fn header_code(text: &Text, line_start: usize) -> String {
    let mut code = String::new();
    let mut at = line_start;
    for _ in 0..10 {
        let line = text.code_of_line(at);
        code.push_str(line);
        if line.ends_with(':') || at >= text.source.len() {
            break;
        }
        code.push(' ');
        at = text.next_line(at);
    }
    code
}

/// Whether the lines from `from` on, up to the first line of code indented
/// `floor` or less, read `needle` (as a whole name: `w.grad` is not read by
/// `new_w.grad` nor by `w.gradient`).
fn reads_until_dedent(text: &Text, from: usize, floor: usize, needle: &str) -> bool {
    let mut at = text.next_line(from);
    while at < text.source.len() {
        let code = text.code_of_line(at);
        if !code.is_empty() {
            if text.indent_of(at).len() <= floor {
                return false;
            }
            if reads(code, needle) {
                return true;
            }
        }
        at = text.next_line(at);
    }
    false
}

/// Whether `code` reads `needle` as a whole name.
fn reads(code: &str, needle: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(needle).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + needle.len()..].chars().next();
        let starts_name = needle.starts_with('.') || before.is_none_or(|c| !ident(c) && c != '.');
        starts_name && after.is_none_or(|c| !ident(c))
    })
}

/// `w.grad = None` after `w -= lr * w.grad`: safe when the update is a plain
/// statement of the loop body (only `with` blocks around it) and nothing
/// after it in the iteration reads `w.grad`.
fn tensor_fix(text: &Text, update: &Update, tensor: &str) -> Option<Fix> {
    let plain = update.headers.iter().all(|h| h.block() == Block::With);
    let grad = format!("{tensor}.grad");
    let safe = !update.in_helper && plain && !update.read_after(text, &grad);
    Some(Fix {
        applicability: applicability(safe),
        edits: vec![update.insert_after(&format!("{grad} = None"))],
    })
}

/// `p.grad = None` after `p -= lr * p.grad` in `for p in
/// model.parameters():`; where the loop over the parameters is not clear,
/// `model.zero_grad()` after the loop that holds the update.
fn parameter_fixes(text: &Text, update: &Update) -> Vec<Fix> {
    let mut out = Vec::new();
    let own_loop = update.headers.iter().find(
        |h| matches!(h.block(), Block::For(targets, _) if targets.contains(&update.owner.as_str())),
    );
    if let Some(header) = own_loop {
        let safe =
            !update.in_helper && header.iterates_parameters() && !update.read_after(text, ".grad");
        out.push(Fix {
            applicability: applicability(safe),
            edits: vec![update.insert_after(&format!("{}.grad = None", update.owner))],
        });
    }
    if let Some(model) = model_of(text, own_loop) {
        out.push(model_reset_fix(text, update, &model));
    }
    out
}

/// `model.zero_grad()` after the innermost loop in the iteration that holds
/// the update (right after the update when none does): unsafe.
fn model_reset_fix(text: &Text, update: &Update, model: &str) -> Fix {
    let reset = format!("{model}.zero_grad()");
    let inner_loop = update
        .headers
        .iter()
        .find(|h| matches!(h.block(), Block::For(..) | Block::While));
    let edit = match inner_loop {
        Some(h) => {
            let end = block_end(text, h.line_start, h.indent.len());
            Edit {
                start: end,
                end,
                text: format!("{}{}{reset}", text.newline_at(end), h.indent),
            }
        }
        None => update.insert_after(&reset),
    };
    Fix {
        applicability: Applicability::Unsafe,
        edits: vec![edit],
    }
}

/// The end of the text of the last line of code of the block opened at
/// `header` (indented `indent`).
fn block_end(text: &Text, header: usize, indent: usize) -> usize {
    let mut last = text.content_end(header);
    let mut at = text.next_line(header);
    while at < text.source.len() {
        let code = text.code_of_line(at);
        if !code.is_empty() {
            if text.indent_of(at).len() <= indent {
                break;
            }
            last = text.content_end(at);
        }
        at = text.next_line(at);
    }
    last
}

/// The model whose `zero_grad()` clears the updated parameters: `X` of the
/// update loop's `X.parameters()`, else of the file's only one.
fn model_of(text: &Text, own_loop: Option<&Header>) -> Option<String> {
    if let Some(Block::For(_, iter)) = own_loop.map(Header::block) {
        if let [model] = parameter_owners(iter).as_slice() {
            return Some(model.clone());
        }
    }
    match parameter_owners(text.source).as_slice() {
        [model] => Some(model.clone()),
        _ => None,
    }
}

/// The distinct `X` of `X.parameters()` and `X.named_parameters()` in `code`.
fn parameter_owners(code: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for call in [".parameters(", ".named_parameters("] {
        for (at, _) in code.match_indices(call) {
            let before = &code[..at];
            let start = before
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .map_or(0, |i| i + 1);
            let owner = &before[start..];
            let plain = owner
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && !owner.ends_with('.');
            if plain && !out.iter().any(|o| o == owner) {
                out.push(owner.to_string());
            }
        }
    }
    out
}

fn applicability(safe: bool) -> Applicability {
    if safe {
        Applicability::Safe
    } else {
        Applicability::Unsafe
    }
}

/// Whether the update at `span` runs once every iteration of the loop at
/// `loop_span`: every block around it in the loop is a `with` or a loop
/// over parameters (GL002 moves a reset to the loop's top then).
pub(super) fn runs_every_iteration(text: &Text, span: Span, loop_span: Span) -> bool {
    if text.language != Language::Python || !loop_span.contains(span) {
        return false;
    }
    let line_start = text.line_start(span.start);
    let indent = text.indent_of(line_start).len();
    let stop = text.line_start(loop_span.start);
    headers_above(text, line_start, indent, Some(stop))
        .iter()
        .all(|h| h.block() == Block::With || h.iterates_parameters())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(source: &str, unsafe_fixes: bool) -> super::super::Fixed {
        super::super::fix_source("t.py", source, Language::Python, unsafe_fixes, &|_| true).unwrap()
    }

    const SEED: &str = "for x, y in loader:\n    loss = F.cross_entropy(model(x), y)\n    loss.backward()\n    with torch.no_grad():\n        for p in model.parameters():\n            p -= 0.1 * p.grad\n";

    #[test]
    fn the_seed_update_over_model_parameters_gets_p_grad_none_safely() {
        let out = fix(SEED, false);
        assert_eq!(out.fixed, 1);
        assert_eq!(
            out.source,
            format!("{SEED}            p.grad = None\n"),
            "{}",
            out.source
        );
        assert!(out.remaining.is_empty());
    }

    #[test]
    fn add_and_data_updates_get_the_same_fix() {
        for update in [
            "p.data.add_(p.grad, alpha=-lr)",
            "p.data -= lr * p.grad.data",
            "p.data = p.data - lr * p.grad",
        ] {
            let src = SEED.replace("p -= 0.1 * p.grad", update);
            let out = fix(&src, false);
            assert_eq!(
                out.source,
                format!("{src}            p.grad = None\n"),
                "{update}"
            );
        }
    }

    #[test]
    fn a_later_read_of_a_gradient_makes_the_fix_unsafe() {
        let src = "for x in loader:\n    loss(x).backward()\n    for p in model.parameters():\n        p.data -= lr * p.grad\n        log(p.grad.norm())\n";
        let safe = fix(src, false);
        assert_eq!((safe.fixed, safe.source.as_str()), (0, src));
        let unsafe_ = fix(src, true);
        assert!(
            unsafe_
                .source
                .contains("p.grad\n        p.grad = None\n        log("),
            "{}",
            unsafe_.source
        );
        // After the update loop, another loop reading `.grad`: unsafe too.
        let src = "for x in loader:\n    loss(x).backward()\n    for p in model.parameters():\n        p.data -= lr * p.grad\n    norm = sum(q.grad.norm() for q in model.parameters())\n";
        assert_eq!(fix(src, false).fixed, 0);
        assert_eq!(fix(src, true).fixed, 1);
    }

    #[test]
    fn a_loop_not_over_parameters_by_name_is_unsafe() {
        let src = "for x in loader:\n    loss(x).backward()\n    for w in weights:\n        w.data -= lr * w.grad\n";
        assert_eq!(fix(src, false).fixed, 0);
        let out = fix(src, true);
        assert_eq!(out.fixed, 1);
        assert!(
            out.source.ends_with("w.grad\n        w.grad = None\n"),
            "{}",
            out.source
        );
    }

    #[test]
    fn an_indexed_update_gets_the_model_reset_after_its_loop_unsafely() {
        let src = "params = list(model.parameters())\nfor x in loader:\n    loss(x).backward()\n    for i in range(len(params)):\n        params[i].data -= lr * params[i].grad\n    log(x)\n";
        assert_eq!(fix(src, false).fixed, 0);
        let out = fix(src, true);
        assert_eq!(out.fixed, 1, "{}", out.source);
        assert_eq!(
            out.source,
            "params = list(model.parameters())\nfor x in loader:\n    loss(x).backward()\n    for i in range(len(params)):\n        params[i].data -= lr * params[i].grad\n    model.zero_grad()\n    log(x)\n"
        );
    }

    #[test]
    fn a_named_tensor_gets_its_own_reset() {
        let src = "w = torch.randn(3, requires_grad=True)\nfor x, y in data:\n    loss = ((x @ w - y) ** 2).mean()\n    loss.backward()\n    with torch.no_grad():\n        w -= lr * w.grad\n    print(loss)\n";
        let out = fix(src, false);
        assert_eq!(out.fixed, 1);
        assert!(
            out.source
                .contains("w -= lr * w.grad\n        w.grad = None\n    print"),
            "{}",
            out.source
        );
        assert!(out.remaining.is_empty());
    }

    #[test]
    fn a_named_tensor_updated_under_a_condition_is_unsafe() {
        let src = "for x, y in data:\n    loss = ((x @ w - y) ** 2).mean()\n    loss.backward()\n    if ok:\n        w -= lr * w.grad\n";
        assert_eq!(fix(src, false).fixed, 0);
        let out = fix(src, true);
        assert!(
            out.source
                .ends_with("w -= lr * w.grad\n        w.grad = None\n"),
            "{}",
            out.source
        );
        // Read after the update: unsafe too.
        let src = "for x, y in data:\n    loss = ((x @ w - y) ** 2).mean()\n    loss.backward()\n    w -= lr * w.grad\n    print(w.grad.norm())\n";
        assert_eq!(fix(src, false).fixed, 0);
        assert_eq!(fix(src, true).fixed, 1);
    }

    #[test]
    fn two_tensors_get_one_reset_each() {
        let src = "for x, y in data:\n    loss = ((x @ w + b - y) ** 2).mean()\n    loss.backward()\n    with torch.no_grad():\n        w -= lr * w.grad\n        b -= lr * b.grad\n";
        let out = fix(src, false);
        assert_eq!(out.fixed, 2);
        assert!(out.source.ends_with("        w -= lr * w.grad\n        w.grad = None\n        b -= lr * b.grad\n        b.grad = None\n"), "{}", out.source);
    }

    #[test]
    fn headers_and_names() {
        let text = Text {
            source: "for x in data:\n    with torch.no_grad():\n        for name, (p, q) in zip(a,\n                b):\n            p -= q\n",
            language: Language::Python,
        };
        let at = text.source.find("p -= q").unwrap();
        let line = text.line_start(at);
        let headers = headers_above(&text, line, 12, None);
        let blocks: Vec<_> = headers.iter().map(Header::block).collect();
        assert_eq!(
            blocks,
            vec![
                Block::For(vec!["name", "p", "q"], "zip(a, b)"),
                Block::With,
                Block::For(vec!["x"], "data"),
            ]
        );
        assert!(reads("print(w.grad)", "w.grad"));
        assert!(!reads("print(new_w.grad, w.gradient, m.w.grad)", "w.grad"));
        assert!(reads("x.grad.norm()", ".grad"));
        assert!(!reads("opt.zero_grad()", ".grad"));
        assert_eq!(
            parameter_owners("a = self.net.parameters(); b = net2.named_parameters()"),
            vec!["self.net", "net2"]
        );
    }
}
