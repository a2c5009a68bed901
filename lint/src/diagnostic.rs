//! Findings placed in files: line/column positions and suppressions.

use serde::Serialize;

use crate::assumptions::{Confidence, Guess};
use crate::ir::Span;

/// Byte offsets to lines and columns and back.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
    source: String,
}

impl LineIndex {
    /// Indexes `source`.
    pub fn new(source: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            starts,
            source: source.to_string(),
        }
    }

    /// 1-based line and 1-based column (in characters) of a byte offset.
    pub fn location(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let col = self
            .source
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    /// The byte offset of a 1-based line and 0-based character column.
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.starts.get(line.saturating_sub(1)) else {
            return self.source.len();
        };
        let rest = &self.source[start..];
        rest.char_indices()
            .nth(column)
            .map_or(self.source.len().min(start + rest.len()), |(i, _)| {
                start + i
            })
    }

    /// The text of a byte range (empty when out of range).
    pub fn text(&self, span: Span) -> &str {
        self.source.get(span.start..span.end).unwrap_or("")
    }

    /// The text of a 1-based line, without its newline.
    pub fn line(&self, line: usize) -> &str {
        let start = self
            .starts
            .get(line.wrapping_sub(1))
            .copied()
            .unwrap_or(self.source.len());
        let end = self.starts.get(line).copied().unwrap_or(self.source.len());
        self.source[start..end].trim_end_matches(['\n', '\r'])
    }
}

/// One finding in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// `GL001` ...
    pub code: &'static str,
    /// `missing-zero-grad` ...
    pub rule: &'static str,
    /// The file, as given or found.
    pub path: String,
    /// In a notebook: the 1-based cell (among all cells); `line` and
    /// `end_line` then count from the cell's first line, and `span` is a
    /// range of the code cells joined into one module, not of the file (a
    /// notebook cannot be edited through it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<usize>,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// 1-based.
    pub end_line: usize,
    /// 1-based, in characters.
    pub end_column: usize,
    /// What is wrong.
    pub message: String,
    /// The fix.
    pub help: String,
    /// Byte range.
    #[serde(skip)]
    pub span: Span,
    /// What a fix needs beyond the span (see [`crate::fix`]).
    #[serde(skip)]
    pub anchors: crate::anchors::Anchors,
    /// How sure the finding is (see [`crate::assumptions`]).
    pub confidence: Confidence,
    /// The guesses it rests on (none when `high`).
    pub assumptions: Vec<Assumption>,
}

/// A guess a finding rests on, placed in its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assumption {
    /// `opaque-call`, `unclassified-condition`, `per-batch-name`,
    /// `framework-flag`, `opaque-step`.
    pub kind: &'static str,
    /// The 1-based line it was made on, if at one place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What was read, in words.
    pub note: String,
}

impl Assumption {
    /// A guess of the analysis, placed by `index` (the source text at its
    /// span fills the note's `{}`, shortened to one line).
    pub fn placed(guess: &Guess, index: &LineIndex) -> Self {
        let (line, text) = match guess.span {
            Some(s) if s.start < crate::ir::FOREIGN_BASE => {
                let text = index.text(s);
                let first = text.lines().next().unwrap_or("").trim();
                let short: String = first.chars().take(60).collect();
                let short = if short.len() < text.trim().len() {
                    format!("{short}...")
                } else {
                    short
                };
                (Some(index.location(s.start).0), short)
            }
            _ => (None, String::new()),
        };
        let note = if text.is_empty() {
            // A call in a method inherited from another file.
            guess.note.replace("`{}`", "a call in another file")
        } else {
            guess.note.replace("{}", &text)
        };
        Assumption {
            kind: guess.kind.as_str(),
            line,
            note,
        }
    }
}

/// Whether a `gradlint: ignore` comment on `line` or the line above covers `code`:
/// `# gradlint: ignore[GL001]`, `// gradlint: ignore[GL001, GL002]`, or
/// `# gradlint: ignore` for every rule.
pub fn is_suppressed(index: &LineIndex, line: usize, code: &str) -> bool {
    [line, line.saturating_sub(1)]
        .into_iter()
        .filter(|&l| l >= 1)
        .any(|l| suppresses(index.line(l), code))
}

fn suppresses(text: &str, code: &str) -> bool {
    let Some(at) = text.find("gradlint: ignore") else {
        return false;
    };
    let before = &text[..at];
    if !(before.trim_end().ends_with('#') || before.trim_end().ends_with("//")) {
        return false;
    }
    let rest = &text[at + "gradlint: ignore".len()..];
    match rest.strip_prefix('[') {
        Some(list) => list
            .split(']')
            .next()
            .unwrap_or("")
            .split(',')
            .any(|c| c.trim().eq_ignore_ascii_case(code)),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_characters() {
        let idx = LineIndex::new("ab\nçé x\n");
        assert_eq!(idx.location(0), (1, 1));
        assert_eq!(idx.location(3), (2, 1));
        let x = "ab\nçé x\n".find('x').unwrap();
        assert_eq!(idx.location(x), (2, 4));
        assert_eq!(idx.offset(2, 3), x);
        assert_eq!(idx.line(2), "çé x");
    }

    #[test]
    fn suppression_comments() {
        assert!(suppresses(
            "    opt.step()  # gradlint: ignore[GL001]",
            "GL001"
        ));
        assert!(suppresses(
            "opt.step()?; // gradlint: ignore[GL002, GL001]",
            "GL001"
        ));
        assert!(suppresses("# gradlint: ignore", "GL004"));
        assert!(!suppresses("# gradlint: ignore[GL002]", "GL001"));
        assert!(!suppresses("x = 'gradlint: ignore'", "GL001"));
    }
}
