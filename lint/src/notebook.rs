//! Jupyter notebooks (`.ipynb`), linted as ruff lints them: the code cells,
//! in order, form one Python module. IPython magics (`%time`, `%%bash`) and
//! shell escapes (`!pip install`) are not Python: their lines become `pass`
//! (a cell magic blanks its whole cell) so that every other line keeps its
//! position. Findings are placed back in their cell: `cell N` is the cell's
//! 1-based position among all cells of the notebook (markdown included), as
//! Jupyter front ends count them, and lines are counted from the cell's top.

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A notebook's code cells as one module.
#[derive(Debug, Clone)]
pub struct Notebook {
    /// The module: every code cell's lines, magics replaced, in order.
    pub source: String,
    /// For each code cell that contributes lines: its first line in `source`
    /// (1-based) and its cell number (1-based, among all cells).
    starts: Vec<(usize, usize)>,
    /// Each code cell's original text, by cell number.
    cells: Vec<(usize, String)>,
}

impl Notebook {
    /// Reads a notebook (nbformat 4). Notebooks of another language than
    /// Python give an empty module.
    pub fn parse(text: &str) -> Result<Self, String> {
        let json: Json<Top> =
            serde_json::from_str(text).map_err(|e| format!("not a valid notebook: {e}"))?;
        let Json::Object(top) = json else {
            return Err("not a valid notebook: the top level is not a JSON object".into());
        };
        if let Some(v) = top.nbformat.as_ref().and_then(Value::as_u64) {
            if v < 4 {
                return Err(format!(
                    "unsupported notebook format {v} (nbformat 4 is read)"
                ));
            }
        }
        let Some(Cells::List(cells)) = &top.cells else {
            return Err("not a valid notebook: no `cells` list".into());
        };
        let mut notebook = Notebook {
            source: String::new(),
            starts: Vec::new(),
            cells: Vec::new(),
        };
        if !is_python(top.metadata.as_ref()) {
            return Ok(notebook);
        }
        let mut line = 1;
        for (i, cell) in cells.iter().enumerate() {
            let number = i + 1;
            let Json::Object(cell) = cell else {
                return Err(format!(
                    "not a valid notebook: cell {number} is not an object"
                ));
            };
            if cell.cell_type.as_ref().and_then(Value::as_str) != Some("code") {
                continue;
            }
            let text = match &cell.source {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        let Some(p) = p.as_str() else {
                            return Err(format!(
                                "not a valid notebook: cell {number} has a source line that is not a string"
                            ));
                        };
                        s.push_str(p);
                    }
                    s
                }
                None => String::new(),
                Some(_) => {
                    return Err(format!(
                        "not a valid notebook: cell {number} has a source that is not text"
                    ))
                }
            };
            let code = without_magics(&text);
            if !code.is_empty() {
                notebook.starts.push((line, number));
                line += code.lines().count();
                notebook.source.push_str(&code);
                if !code.ends_with('\n') {
                    notebook.source.push('\n');
                }
            }
            notebook.cells.push((number, text));
        }
        Ok(notebook)
    }

    /// The cell number and 1-based line in that cell of a 1-based line of
    /// [`Notebook::source`].
    pub fn locate(&self, line: usize) -> (usize, usize) {
        let at = self.starts.partition_point(|&(start, _)| start <= line);
        match at.checked_sub(1).and_then(|i| self.starts.get(i)) {
            Some(&(start, cell)) => (cell, line - start + 1),
            None => (self.starts.first().map_or(1, |&(_, c)| c), line),
        }
    }

    /// The original text of code cell `number`.
    pub fn cell(&self, number: usize) -> Option<&str> {
        self.cells
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, t)| t.as_str())
    }
}

/// What [`Notebook::parse`] reads of a notebook's JSON. The JSON is read
/// whole (a syntax error anywhere is one), but only these fields are kept:
/// the rest (outputs, often images or long logs) is read without being
/// stored. A key given twice counts with its last value.
#[derive(Default)]
struct Top {
    nbformat: Option<Value>,
    metadata: Option<Value>,
    cells: Option<Cells>,
}

/// The top level's `cells`: a list, or something else.
enum Cells {
    List(Vec<Json<Cell>>),
    Other,
}

/// What is kept of a cell.
#[derive(Default)]
struct Cell {
    cell_type: Option<Value>,
    source: Option<Value>,
}

/// A JSON object read as `T`, or another JSON value (read, not kept).
enum Json<T> {
    Object(T),
    Other,
}

/// Reads the fields of an object that `T` keeps.
trait Fields: Default {
    /// Reads the value of `key` into `self`, or skips it.
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

impl Fields for Top {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "nbformat" => self.nbformat = Some(map.next_value()?),
            "metadata" => self.metadata = Some(map.next_value()?),
            "cells" => self.cells = Some(map.next_value()?),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl Fields for Cell {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "cell_type" => self.cell_type = Some(map.next_value()?),
            "source" => self.source = Some(map.next_value()?),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A JSON value other than the one wanted: read to its end, not kept.
macro_rules! other_values {
    ($other:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}

impl<'de, T: Fields> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Fields> Visitor<'de> for Object<T> {
            type Value = Json<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut object = T::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    object.field(&key, &mut map)?;
                }
                Ok(Json::Object(object))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Json::Other)
            }
            other_values!(Json::Other);
        }
        deserializer.deserialize_any(Object(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Cells {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Cells;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut cells = Vec::new();
                while let Some(cell) = seq.next_element()? {
                    cells.push(cell);
                }
                Ok(Cells::List(cells))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Cells::Other)
            }
            other_values!(Cells::Other);
        }
        deserializer.deserialize_any(List)
    }
}

/// Whether the notebook's kernel runs Python (or says nothing).
fn is_python(meta: Option<&Value>) -> bool {
    let language = meta
        .and_then(|m| m.get("language_info"))
        .and_then(|l| l.get("name"))
        .or_else(|| {
            meta.and_then(|m| m.get("kernelspec"))
                .and_then(|k| k.get("language"))
        })
        .and_then(Value::as_str);
    language.is_none_or(|l| l.eq_ignore_ascii_case("python"))
}

/// A cell's text with IPython syntax replaced, one line for one line.
fn without_magics(text: &str) -> String {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if first.trim_start().starts_with("%%") {
        // A cell magic: the whole cell is another language (or timed code,
        // which the magic runs: lint it anyway would misplace nothing, but
        // `%%bash` and `%%writefile` are not Python).
        return text.lines().map(|_| "\n").collect();
    }
    let mut out = String::with_capacity(text.len());
    let mut continued = false;
    // Where the Python lines leave off: inside brackets, a string or after
    // a backslash the next line continues them (`% (a, b)` formats).
    let mut python = Continuation::default();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let magic = continued || (!python.open() && is_magic(trimmed));
        if magic {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(indent);
            out.push_str("pass");
            continued = line.trim_end().ends_with('\\');
        } else {
            python.feed(line);
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// How a run of Python lines ends: open brackets, an open triple-quoted
/// string, a trailing backslash.
#[derive(Default)]
struct Continuation {
    depth: usize,
    triple: Option<char>,
    backslash: bool,
}

impl Continuation {
    /// Whether the next line continues the last one.
    fn open(&self) -> bool {
        self.depth > 0 || self.triple.is_some() || self.backslash
    }

    fn feed(&mut self, line: &str) {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            let tripled = |q: char| {
                chars
                    .get(i..i + 3)
                    .is_some_and(|t| t.iter().all(|&x| x == q))
            };
            if let Some(q) = self.triple {
                if c == '\\' {
                    i += 2;
                    continue;
                }
                if c == q && tripled(q) {
                    self.triple = None;
                    i += 3;
                    continue;
                }
            } else if let Some(q) = quote {
                if c == '\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            } else {
                match c {
                    '#' => break,
                    '"' | '\'' if tripled(c) => {
                        self.triple = Some(c);
                        i += 3;
                        continue;
                    }
                    '"' | '\'' => quote = Some(c),
                    '(' | '[' | '{' => self.depth += 1,
                    ')' | ']' | '}' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            i += 1;
        }
        self.backslash = self.triple.is_none() && line.trim_end().ends_with('\\');
    }
}

/// `%magic`, `!shell`, `?help`, `help?`, and `x = %magic` / `x = !shell`.
fn is_magic(trimmed: &str) -> bool {
    if trimmed.starts_with(['%', '!', '?']) {
        return true;
    }
    let line = trimmed.trim_end();
    if line.ends_with('?') && !line.contains('#') && !line.contains(['"', '\'']) {
        return true;
    }
    // Assignment from a magic: `files = !ls`, `t = %timeit -o f()`.
    if let Some((target, value)) = line.split_once('=') {
        let target_ok = !target.is_empty()
            && target.trim().chars().all(|c| {
                c.is_alphanumeric() || c == '_' || c == ',' || c == '.' || c.is_whitespace()
            });
        let value = value.trim_start();
        return target_ok && !value.starts_with('=') && value.starts_with(['%', '!']);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nb(cells: &[(&str, &str)]) -> String {
        let cells: Vec<Value> = cells
            .iter()
            .map(
                |(kind, src)| serde_json::json!({"cell_type": kind, "metadata": {}, "source": src}),
            )
            .collect();
        serde_json::json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells})
            .to_string()
    }

    #[test]
    fn code_cells_form_one_module_and_lines_map_back() {
        let text = nb(&[
            ("markdown", "# Title"),
            ("code", "import torch\nx = 1"),
            ("code", "for b in loader:\n    loss.backward()\n"),
        ]);
        let n = Notebook::parse(&text).unwrap();
        assert_eq!(
            n.source,
            "import torch\nx = 1\nfor b in loader:\n    loss.backward()\n"
        );
        assert_eq!(n.locate(1), (2, 1));
        assert_eq!(n.locate(2), (2, 2));
        assert_eq!(n.locate(3), (3, 1));
        assert_eq!(n.locate(4), (3, 2));
        assert_eq!(n.cell(3), Some("for b in loader:\n    loss.backward()\n"));
    }

    #[test]
    fn magics_and_shell_lines_keep_positions() {
        let text = nb(&[
            (
                "code",
                "!pip install torch\n%matplotlib inline\nimport torch",
            ),
            ("code", "%%bash\necho hi\nls"),
            (
                "code",
                "files = !ls\nfor x in y:\n    %time f(x)\n    g(x)\nmodel?",
            ),
        ]);
        let n = Notebook::parse(&text).unwrap();
        let lines: Vec<&str> = n.source.lines().collect();
        assert_eq!(lines[..3], ["pass", "pass", "import torch"]);
        assert_eq!(lines[3..6], ["", "", ""]);
        assert_eq!(
            lines[6..],
            ["pass", "for x in y:", "    pass", "    g(x)", "pass"]
        );
        assert_eq!(n.locate(9), (3, 3));
    }

    #[test]
    fn continuation_lines_are_not_magics() {
        let text = nb(&[(
            "code",
            "print('%d/%d'\n      % (a, b))\ns = '''\n!not shell\n'''\nx = [1,\n%2]\n%time f()",
        )]);
        let n = Notebook::parse(&text).unwrap();
        let lines: Vec<&str> = n.source.lines().collect();
        assert_eq!(lines[1], "      % (a, b))");
        assert_eq!(lines[3], "!not shell");
        assert_eq!(lines[6], "%2]");
        assert_eq!(lines[7], "pass");
    }

    #[test]
    fn comparisons_and_strings_are_not_magics() {
        assert!(!is_magic("a = b != c"));
        assert!(!is_magic("x == !y"));
        assert!(!is_magic("print('why?')"));
        assert!(!is_magic("d['k'] = 1"));
        assert!(is_magic("out = %timeit -o f()"));
    }

    #[test]
    fn malformed_notebooks_are_errors() {
        assert!(Notebook::parse("{")
            .unwrap_err()
            .contains("not a valid notebook"));
        assert!(Notebook::parse("[]").is_err());
        assert!(Notebook::parse(r#"{"nbformat": 4}"#).is_err());
        assert!(Notebook::parse(r#"{"nbformat": 3, "worksheets": []}"#)
            .unwrap_err()
            .contains("format 3"));
        let bad = r#"{"nbformat": 4, "cells": [{"cell_type": "code", "source": [1]}]}"#;
        assert!(Notebook::parse(bad).unwrap_err().contains("cell 1"));
    }

    #[test]
    fn other_languages_are_empty() {
        let text = r#"{"nbformat": 4, "metadata": {"kernelspec": {"language": "R"}},
            "cells": [{"cell_type": "code", "source": "x <- 1"}]}"#;
        assert_eq!(Notebook::parse(text).unwrap().source, "");
    }
}
