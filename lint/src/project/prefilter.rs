//! The byte-level pre-filter of whole-tree analysis: which files must be
//! parsed at all. Parsing is most of the cost of a tree, and most files of
//! a tree have no gradient event: a file is parsed only when its text has
//! one ([`Events`]), when its imports ([`ImportText`]) may bind what
//! another file's gradient code defines, or when a parsed file's imports
//! lead to it (in [`super`]).

use memchr::memmem::Finder;
use rustc_hash::FxHashMap as HashMap;

/// What the text of a Python file says about gradient events, read from
/// its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Events {
    /// A call of a backward pass: [`crate::frontend::python::calls_backward`].
    pub backward: bool,
    /// `backward(`, `zero_grad`, `.step(` or `.grad`: the text that makes a class or
    /// function worth following from another file (its summary's
    /// `relevant`).
    pub mentioned: bool,
}

/// Finds [`Events`] in many texts (a search for each word, as fast as the
/// memory reads: most texts have none).
pub(super) struct EventFinder {
    backward: Finder<'static>,
    zero_grad: Finder<'static>,
    step: Finder<'static>,
    grad: Finder<'static>,
}

impl EventFinder {
    pub(super) fn new() -> Self {
        Self {
            backward: Finder::new(b"backward"),
            zero_grad: Finder::new(b"zero_grad"),
            step: Finder::new(b".step("),
            grad: Finder::new(b".grad"),
        }
    }

    /// The events `source` has, read as
    /// [`crate::frontend::python::calls_backward`] and the summary read it.
    pub(super) fn find(&self, source: &str) -> Events {
        let bytes = source.as_bytes();
        let mut found = Events::default();
        for at in self.backward.find_iter(bytes) {
            // `backward(` is both; `backward (` only a call.
            let rest = &bytes[at + b"backward".len()..];
            let blank = rest
                .iter()
                .take_while(|&&c| c == b' ' || c == b'\t')
                .count();
            if rest.get(blank) == Some(&b'(') {
                found.backward = true;
                found.mentioned |= blank == 0;
            }
            if found.backward && found.mentioned {
                return found;
            }
        }
        found.mentioned = found.mentioned
            || self.zero_grad.find(bytes).is_some()
            || self.step.find(bytes).is_some()
            || self
                .grad
                .find_iter(bytes)
                .any(|at| crate::frontend::python::ends_grad_attribute(bytes, at));
        found
    }
}

/// An import statement as its text reads, found without parsing. The
/// statements found are a superset of those the parser sees (a statement
/// in a string is found too): a file with no gradient event is parsed only
/// when one of these may bind a class or function with gradient events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ImportText {
    /// `from <dots><module> import ...`: the level and the module, when
    /// the statement reads as one (a statement the parser sees always
    /// does: line continuations are read through).
    pub from: Option<(u32, String)>,
    /// The names after `import` (dotted module paths, or imported names),
    /// each with the name it binds (its alias, or itself).
    pub names: Vec<(String, String)>,
    /// `import *`.
    pub star: bool,
}

fn is_identifier(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The length of the blank at `bytes[i..]` on one logical line: spaces,
/// tabs, form feeds and escaped line ends.
fn blank_at(bytes: &[u8], i: usize) -> usize {
    let mut j = i;
    loop {
        match bytes.get(j..) {
            Some([b' ' | b'\t' | b'\x0c', ..]) => j += 1,
            Some([b'\\', b'\n', ..]) => j += 2,
            Some([b'\\', b'\r', b'\n', ..]) => j += 3,
            _ => return j - i,
        }
    }
}

/// Every import statement of `source`, read from its text.
pub(super) fn import_texts(source: &str) -> Vec<ImportText> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    for at in memchr::memmem::find_iter(bytes, b"import") {
        let end = at + b"import".len();
        // A word: `.import` (`from .import x`) is one, `import_utils` not.
        if at > 0 && is_identifier(bytes[at - 1])
            || bytes.get(end).is_some_and(|&c| is_identifier(c))
        {
            continue;
        }
        let (names, star) = imported_names(bytes, end);
        out.push(ImportText {
            from: from_module(&bytes[..at]),
            names,
            star,
        });
    }
    out
}

/// The names listed after `import` from `bytes[i..]` (in parentheses, on
/// several lines), and whether one is `*`.
fn imported_names(bytes: &[u8], mut i: usize) -> (Vec<(String, String)>, bool) {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut star = false;
    let mut alias = false;
    let mut depth = 0usize;
    loop {
        let blank = blank_at(bytes, i);
        if blank > 0 {
            i += blank;
            continue;
        }
        match bytes.get(i) {
            Some(b'\r' | b'\n') if depth > 0 => i += 1,
            Some(b'#') if depth > 0 => i += bytes[i..].iter().take_while(|&&c| c != b'\n').count(),
            Some(b'(') => {
                depth += 1;
                i += 1;
            }
            Some(b')') if depth > 0 => {
                depth -= 1;
                i += 1;
            }
            Some(b',') => i += 1,
            Some(b'*') => {
                star = true;
                i += 1;
            }
            Some(&c) if is_identifier(c) => {
                // A dotted path (`a.b`, `a . b`).
                let mut name = String::new();
                loop {
                    let word = bytes[i..].iter().take_while(|&&c| is_identifier(c)).count();
                    name.push_str(&String::from_utf8_lossy(&bytes[i..i + word]));
                    i += word;
                    let after = i + blank_at(bytes, i);
                    if bytes.get(after) != Some(&b'.') {
                        break;
                    }
                    let next = after + 1 + blank_at(bytes, after + 1);
                    if !bytes.get(next).is_some_and(|&c| is_identifier(c)) {
                        break;
                    }
                    name.push('.');
                    i = next;
                }
                match names.last_mut() {
                    _ if name == "as" => alias = true,
                    Some((_, local)) if alias => {
                        *local = name;
                        alias = false;
                    }
                    _ => names.push((name.clone(), name)),
                }
            }
            _ => break,
        }
    }
    (names, star)
}

/// The `from <dots><module>` that `before`, the text up to an `import`,
/// ends with, if it does: its level and module.
fn from_module(before: &[u8]) -> Option<(u32, String)> {
    let mut k = before.len();
    // Dots, names and blanks back to the start of the statement.
    loop {
        match before[..k] {
            [.., c] if is_identifier(c) || matches!(c, b'.' | b' ' | b'\t' | b'\x0c') => k -= 1,
            [.., b'\\', b'\n'] => k -= 2,
            [.., b'\\', b'\r', b'\n'] => k -= 3,
            _ => break,
        }
    }
    let text: Vec<u8> = before[k..]
        .iter()
        .copied()
        .filter(|c| !matches!(c, b' ' | b'\t' | b'\x0c' | b'\\' | b'\r' | b'\n'))
        .collect();
    let path = text.strip_prefix(b"from")?;
    // `from` as a word: `fromage import x` is no `from`.
    let words = before[k..].trim_ascii_start();
    if words.get(4).is_some_and(|&c| is_identifier(c)) {
        return None;
    }
    let level = path.iter().take_while(|&&c| c == b'.').count();
    let module = String::from_utf8_lossy(&path[level..]).into_owned();
    Some((level as u32, module))
}

/// A class `source` may define at the top level: each `class Name` at the
/// start of a line (a top-level statement has no indentation; form feeds
/// and a byte order mark may come first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClassText {
    pub name: String,
    /// Whether it may be a base class whose loop calls one of its methods
    /// left to subclasses, the one reason a class with no gradient event is
    /// followed from another file; `false` only when its text surely is
    /// not one.
    pub may_follow: bool,
}

/// The classes `source` may define at the top level ([`ClassText`]).
pub(super) fn top_level_classes(source: &str) -> Vec<ClassText> {
    let bytes = source.as_bytes();
    // The start of a line, past form feeds (and a byte order mark).
    let line_start = |at: usize| {
        let start = at
            - bytes[..at]
                .iter()
                .rev()
                .take_while(|&&c| c == b'\x0c')
                .count();
        start == 0 || bytes[start - 1] == b'\n' || bytes[..start] == *"\u{feff}".as_bytes()
    };
    let starts: Vec<(usize, String)> = memchr::memmem::find_iter(bytes, b"class")
        .filter(|&at| line_start(at))
        .filter_map(|at| {
            let start = at + b"class".len();
            let blank = blank_at(bytes, start);
            let name = &bytes[start + blank..];
            let len = name.iter().take_while(|&&c| is_identifier(c)).count();
            (blank > 0 && len > 0).then(|| (at, String::from_utf8_lossy(&name[..len]).into_owned()))
        })
        .collect();
    if starts.is_empty() {
        return Vec::new();
    }
    // A class is read to the end of the file (where it ends at the latest):
    // after its start a method that may be left to subclasses, read as an
    // attribute (`self.train_step(`), and a loop.
    let left: Vec<(usize, &[u8])> = words(bytes, b"def")
        .filter_map(|at| may_be_left_to_subclasses(bytes, at))
        .collect();
    let last_loop = if left.is_empty() {
        None
    } else {
        words(bytes, b"for").chain(words(bytes, b"while")).max()
    };
    // Each such method with its last use as an attribute: a class may
    // leave it to subclasses when both come after the class's start. Found
    // once per method, not once per class and method.
    let last_attribute = if left.is_empty() {
        HashMap::default()
    } else {
        last_attribute_uses(bytes)
    };
    let last_uses: Vec<(usize, Option<usize>)> = left
        .iter()
        .map(|&(def, method)| (def, last_attribute.get(method).copied()))
        .collect();
    starts
        .into_iter()
        .map(|(at, name)| {
            let after = |p: usize| p > at;
            let may_follow = last_loop.is_some_and(after)
                && last_uses
                    .iter()
                    .any(|&(def, last)| after(def) && last.is_some_and(after));
            ClassText { name, may_follow }
        })
        .collect()
}

/// Where `word` stands as a word in `bytes`.
fn words<'b>(bytes: &'b [u8], word: &'b [u8]) -> impl Iterator<Item = usize> + 'b {
    memchr::memmem::find_iter(bytes, word).filter(move |&at| is_word(bytes, at, word.len()))
}

/// Whether `bytes[at..at + len]` is a whole word.
fn is_word(bytes: &[u8], at: usize, len: usize) -> bool {
    let before = at.checked_sub(1).map(|i| bytes[i]);
    !before.is_some_and(is_identifier) && !bytes.get(at + len).copied().is_some_and(is_identifier)
}

/// Where `name` is read as an attribute (`self.name`, `x . name`).
/// Each name read as an attribute (`self.name`, `x . name`), with where
/// it is read last: one pass over the text.
fn last_attribute_uses(bytes: &[u8]) -> HashMap<&[u8], usize> {
    let mut last = HashMap::default();
    for dot in memchr::memchr_iter(b'.', bytes) {
        let start = dot
            + 1
            + bytes[dot + 1..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count();
        let len = bytes[start..]
            .iter()
            .take_while(|&&c| is_identifier(c))
            .count();
        if len > 0 {
            last.insert(&bytes[start..start + len], start);
        }
    }
    last
}

/// The `def` at `at` and its name, unless the text shows that its body is
/// not one left to subclasses (only `pass`, `...`, docstrings and `raise
/// NotImplementedError`): its first statement is none of those. Where the
/// header cannot be read for sure (a string in it), it may be.
fn may_be_left_to_subclasses(bytes: &[u8], at: usize) -> Option<(usize, &[u8])> {
    let mut i = at + b"def".len();
    i += blank_at(bytes, i);
    let name_len = bytes[i..].iter().take_while(|&&c| is_identifier(c)).count();
    if name_len == 0 {
        return None;
    }
    let name = &bytes[i..i + name_len];
    i += name_len;
    // The header's `:`, outside brackets.
    let mut depth = 0usize;
    loop {
        match bytes.get(i) {
            None | Some(b'\'' | b'"') => return Some((at, name)),
            Some(b'(' | b'[' | b'{') => depth += 1,
            Some(b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            Some(b':') if depth == 0 => break,
            Some(b'\n') if depth == 0 && bytes[i - 1] != b'\\' => return Some((at, name)),
            _ => {}
        }
        i += 1;
    }
    i += 1;
    // The first statement: on the line, or the first of the block.
    loop {
        i += blank_at(bytes, i);
        match bytes.get(i) {
            Some(b'#') => i += bytes[i..].iter().take_while(|&&c| c != b'\n').count(),
            Some(b'\r' | b'\n' | b' ' | b'\t') => i += 1,
            _ => break,
        }
    }
    let rest = &bytes[i..];
    let word =
        |w: &[u8]| rest.starts_with(w) && !rest.get(w.len()).is_some_and(|&c| is_identifier(c));
    // A string, with its prefix (`r"`, `rb'`), or in parentheses.
    let prefix = rest
        .iter()
        .take(2)
        .take_while(|c| b"rRuUbBfF".contains(c))
        .count();
    let string = matches!(rest.get(prefix), Some(b'\'' | b'"')) || rest.first() == Some(&b'(');
    (word(b"pass") || word(b"raise") || rest.starts_with(b"...") || string).then_some((at, name))
}

/// Whether a Rust file can have a finding, and so must be parsed: every
/// rule needs a backward pass, and every event that makes one (a
/// `backward` call, a store bound from one, `extend` of one) names
/// `backward`. Steps, resets and optimizer constructions alone make no
/// finding.
pub(super) fn rust_needs_parse(source: &str) -> bool {
    memchr::memmem::find(source.as_bytes(), b"backward").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::python::{calls_backward, mentions_gradient_event};

    #[test]
    fn events_agree_with_the_frontend() {
        let finder = EventFinder::new();
        for text in [
            "",
            "loss.backward()",
            "loss.backward ()",
            "self.manual_backward\t(loss)",
            "\"\"\"Kept for backward compatibility.\"\"\"",
            "backward",
            "x.backward",
            "opt.zero_grad",
            "scheduler.step()",
            "step()",
            "opt.step",
            "backward compatible; then loss.backward (x); opt.zero_grad()",
            "backward\n(",
            "a .step( b",
            "backwardbackward(",
        ] {
            let found = finder.find(text);
            assert_eq!(found.backward, calls_backward(text), "{text:?}");
            assert_eq!(found.mentioned, mentions_gradient_event(text), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn events_agree_on_any_text(text in "(backward|zero_grad|\\.step|[ \t(.\n]|[a-z_]{1,3}){0,12}") {
            let found = EventFinder::new().find(&text);
            proptest::prop_assert_eq!(found.backward, calls_backward(&text));
            proptest::prop_assert_eq!(found.mentioned, mentions_gradient_event(&text));
        }
    }

    /// `a` or `a as b`.
    fn named(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| match n.split_once(" as ") {
                Some((name, local)) => (name.to_string(), local.to_string()),
                None => (n.to_string(), n.to_string()),
            })
            .collect()
    }

    fn from(level: u32, module: &str, names: &[&str], star: bool) -> ImportText {
        ImportText {
            from: Some((level, module.to_string())),
            names: named(names),
            star,
        }
    }

    fn plain(names: &[&str]) -> ImportText {
        ImportText {
            from: None,
            names: named(names),
            star: false,
        }
    }

    #[test]
    fn import_statements_read_from_text() {
        let cases: [(&str, Vec<ImportText>); 12] = [
            ("import os", vec![plain(&["os"])]),
            (
                "import pkg.trainer as t, b",
                vec![plain(&["pkg.trainer as t", "b"])],
            ),
            ("if x: import a . b", vec![plain(&["a.b"])]),
            (
                "from .trainer import Trainer",
                vec![from(1, "trainer", &["Trainer"], false)],
            ),
            (
                "from . import (\n  a,  # the first\n  b as c,\n)",
                vec![from(1, "", &["a", "b as c"], false)],
            ),
            ("from .import x", vec![from(1, "", &["x"], false)]),
            (
                "from.. pkg . mod import *",
                vec![from(2, "pkg.mod", &[], true)],
            ),
            (
                "    from pkg \\\n  import x \\\n    as y; z()",
                vec![from(0, "pkg", &["x as y"], false)],
            ),
            (
                "x = 1; from a import b\nimport c",
                vec![from(0, "a", &["b"], false), plain(&["c"])],
            ),
            (
                "from import_utils import important",
                vec![from(0, "import_utils", &["important"], false)],
            ),
            ("fromage import x", vec![plain(&["x"])]),
            ("\"\"\"Nothing to import.\"\"\"", vec![plain(&[])]),
        ];
        for (text, expected) in cases {
            assert_eq!(import_texts(text), expected, "{text:?}");
        }
    }

    #[test]
    fn import_texts_cover_the_parser() {
        // Every import the parser sees is read from the text.
        let source = "import a.b as c\nfrom .x import (y,\n  z as w)\ndef f():\n    from ..p import *\n    import q\nif t:\n    from r import s\n";
        let parsed = crate::frontend::python::parse(source).unwrap();
        let summary = crate::frontend::python::summarize(source, parsed.syntax());
        let texts = import_texts(source);
        for import in &summary.imports {
            let found = texts.iter().any(|t| match import {
                crate::frontend::python::Import::From {
                    level,
                    module,
                    name,
                    local,
                } => {
                    t.from == Some((*level, module.clone()))
                        && (t.names.iter().any(|(n, l)| (n, l) == (name, local))
                            || name == "*" && t.star)
                }
                crate::frontend::python::Import::Module { module, local } => {
                    t.from.is_none() && t.names.iter().any(|(n, l)| (n, l) == (module, local))
                }
            });
            assert!(found, "{import:?} not in {texts:?}");
        }
    }

    /// The names of the top-level classes of `source`, each with whether
    /// it may be followed.
    fn classes(source: &str) -> Vec<(String, bool)> {
        top_level_classes(source)
            .into_iter()
            .map(|c| (c.name, c.may_follow))
            .collect()
    }

    #[test]
    fn top_level_class_names() {
        let source = "class Trainer(Base):\n    class Inner: ...\nclass \\\n  Other: pass\nsubclass = 1\nclassify(x)\n\x0cclass Fed: ...\n";
        let names: Vec<String> = classes(source).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Trainer", "Other", "Fed"]);
        assert_eq!(classes("\u{feff}class Marked: ...")[0].0, "Marked");
    }

    #[test]
    fn classes_that_may_be_followed() {
        let base = "class Base:\n    def train_step(self, batch):\n        raise NotImplementedError\n\n    def fit(self, loader):\n        for batch in loader:\n            self.train_step(batch)\n";
        assert_eq!(classes(base), [("Base".to_string(), true)]);
        for left in [
            "pass",
            "...",
            "\"\"\"Subclasses say.\"\"\"",
            "r'Raw.'",
            "(\"Doc\")",
            "# a comment first\n        pass",
        ] {
            let source = base.replace("raise NotImplementedError", left);
            assert!(classes(&source)[0].1, "{source}");
        }
        // A one-line body; a header with a string (not read: may be).
        let one_line =
            "class A:\n    def m(self): ...\n    def run(self):\n        while True: self.m()\n";
        assert!(classes(one_line)[0].1);
        let string = "class A:\n    def m(self, sep=\")\"):\n        return sep\n    def run(self):\n        for x in y: self.m()\n";
        assert!(classes(string)[0].1);
        // Every method does something, or nothing calls the empty one, or
        // there is no loop: not followed.
        let model = "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.layers = [nn.Linear(2, 2) for _ in range(3)]\n\n    def forward(self, x: Tensor) -> Tensor:\n        for layer in self.layers:\n            x = layer(x)\n        return x\n";
        assert_eq!(classes(model), [("Net".to_string(), false)]);
        let unused = "class A:\n    def hook(self):\n        pass\n\n    def run(self, xs):\n        for x in xs:\n            print(x)\n";
        assert!(!classes(unused)[0].1);
        let no_loop = "class A:\n    def hook(self):\n        pass\n\n    def run(self):\n        self.hook()\n";
        assert!(!classes(no_loop)[0].1);
        // What comes before the class does not count.
        let before = "def hook():\n    pass\nfor x in y:\n    z.hook()\nclass A:\n    def run(self):\n        return 1\n";
        assert!(!classes(before)[0].1);
    }

    #[test]
    fn no_fixture_with_a_finding_is_left_unparsed() {
        // Every Rust fixture with a finding names `backward`: the files
        // the pre-filter leaves unparsed would have none.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut stack = vec![root];
        let mut checked = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let language = crate::Language::of(&path);
                if language != Some(crate::Language::Rust) {
                    continue;
                }
                let source = std::fs::read_to_string(&path).unwrap();
                let found = crate::lint_source("f.rs", &source, crate::Language::Rust).unwrap();
                assert!(
                    found.is_empty() || rust_needs_parse(&source),
                    "{}",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn rust_needs_a_backward_pass() {
        assert!(rust_needs_parse("let grads = loss.backward()?;"));
        assert!(rust_needs_parse("opt.backward_step(&loss)?;"));
        assert!(!rust_needs_parse(
            "fn main() { let mut opt = AdamW::new(vars)?; opt.step(&grads)?; }"
        ));
    }
}
