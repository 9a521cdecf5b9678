//! `virtform fmt`: the canonical layout of `*.vf.hcl` and `*.vfvars` files.
//!
//! The layout is `terraform fmt`'s (`hclwrite`'s formatter), applied to a
//! token stream so that every comment survives:
//!
//! 1. The source (CRLF normalized to LF) is parsed with `hcl_edit`; invalid
//!    input is an error carrying the parser's 1-based line and column.
//! 2. The source is split into tokens. String literals, string templates,
//!    string block labels and heredocs are single opaque tokens, located by
//!    the spans `hcl_edit` reports, so their content is never touched.
//! 3. Only whitespace between tokens changes, line by line:
//!    - indentation: 2 spaces per net open bracket level of the lines above
//!      (`hclwrite`'s indent stack, so `foo = [{` indents one level);
//!    - spacing between tokens on a line (`a = b + c`, `f(a, b)`, `x[0].y`,
//!      `!x`, `-1`, `{ a = 1 }`, `[1, 2]`, `{}`);
//!    - `=` of consecutive single-line attributes or object items is aligned,
//!      and so are trailing `#`/`//` comments of consecutive lines;
//!    - blank lines: none at the start or end of the file, none right after
//!      an opening or before a closing bracket, runs collapse to one;
//!    - a bracket pair holding only line breaks becomes `{}`, `[]` or `()`;
//!    - trailing whitespace goes (except inside heredocs and strings) and the
//!      file ends with exactly one newline;
//!    - the continuation lines of a `/* */` comment that starts a line move
//!      with it when it is re-indented.
//!
//!    Line breaks are never added, so one-line blocks (`a { b = 1 }`) and
//!    one-line objects stay on one line.
//! 4. The result is parsed again and must be structurally equal to the input
//!    with every comment in the same place. Otherwise (a formatter bug) the
//!    conservative layout (indentation and blank lines only) is tried, and as
//!    a last resort the input is returned unchanged.

use hcl_edit::expr::{
    Array, BinaryOperator, Expression, ForCond, ForIntro, FuncArgs, Object, ObjectKey,
    ObjectKeyMut, ObjectValue, Splat, Traversal,
};
use hcl_edit::parser::{self, parse_body};
use hcl_edit::structure::{Attribute, AttributeMut, Block, BlockLabel, Body, StructureMut};
use hcl_edit::visit::{self, Visit};
use hcl_edit::visit_mut::{self, VisitMut};
use hcl_edit::{Decor, Decorate, Decorated, Ident, RawString, Span};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};

/// Why a file could not be formatted: it does not parse.
#[derive(Debug, Clone, PartialEq)]
pub struct FmtError {
    pub message: String,
    /// 1-based line of the parse error.
    pub line: usize,
    /// 1-based column (in characters) of the parse error.
    pub column: usize,
}

impl FmtError {
    fn from_parse(err: &parser::Error) -> FmtError {
        FmtError {
            message: err.message().to_string(),
            line: err.location().line(),
            column: err.location().column(),
        }
    }
}

impl fmt::Display for FmtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for FmtError {}

/// Formats a configuration file in the canonical layout (see the module
/// documentation). Comments are kept; strings and heredocs are untouched.
///
/// # Errors
///
/// Returns the parser's error (1-based line and column) for invalid input.
pub fn format_source(src: &str) -> Result<String, FmtError> {
    format_with_mode(src).map(|(out, _)| out)
}

/// How a result was produced: `Canonical` unless the self-check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The full layout.
    Canonical,
    /// Only indentation, trailing whitespace and blank lines are changed.
    Reindent,
    /// The input, unchanged (after CRLF normalization).
    Verbatim,
}

fn format_with_mode(src: &str) -> Result<(String, Mode), FmtError> {
    if src.contains('\r') {
        // Errors refer to the file as it is (a stray CR stays an error).
        parse_guarded(src)?;
    }
    let text = normalize_line_endings(src);
    let body = parse_guarded(&text)?;
    let reference = panic::catch_unwind(AssertUnwindSafe(|| Fingerprint::of(&text, &body)));
    let Ok(Some(reference)) = reference else { return Ok((text, Mode::Verbatim)) };
    for mode in [Mode::Canonical, Mode::Reindent] {
        let attempt = panic::catch_unwind(AssertUnwindSafe(|| {
            render(&text, &body, mode).filter(|out| reference.matches(out))
        }));
        if let Ok(Some(out)) = attempt {
            return Ok((out, mode));
        }
    }
    Ok((text, Mode::Verbatim))
}

/// CRLF (and any run of CRs before a LF) becomes LF.
fn normalize_line_endings(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut crs = 0;
    for c in src.chars() {
        match c {
            '\r' => crs += 1,
            '\n' => {
                crs = 0;
                out.push('\n');
            }
            _ => {
                out.extend(std::iter::repeat_n('\r', crs));
                crs = 0;
                out.push(c);
            }
        }
    }
    out.extend(std::iter::repeat_n('\r', crs));
    out
}

fn parse_guarded(text: &str) -> Result<Body, FmtError> {
    match panic::catch_unwind(AssertUnwindSafe(|| parse_body(text))) {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(err)) => Err(FmtError::from_parse(&err)),
        Err(_) => Err(FmtError { message: PARSER_PANIC.to_string(), line: 1, column: 1 }),
    }
}

const PARSER_PANIC: &str = "the HCL parser failed on this input";

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Number,
    /// A quoted string or string template, or a string block label (opaque).
    Str,
    /// A heredoc from `<<` to its closing delimiter (opaque).
    Heredoc,
    /// `#` or `//` up to (excluding) the line break.
    LineComment,
    /// `/* ... */`, possibly over several lines.
    BlockComment,
    OBrace,
    CBrace,
    OBrack,
    CBrack,
    OParen,
    CParen,
    Comma,
    Dot,
    Ellipsis,
    Colon,
    DoubleColon,
    Question,
    /// `=` (attribute or object item).
    Assign,
    /// `=>` in `for` object expressions.
    FatArrow,
    /// A binary operator other than `-`.
    Op,
    Minus,
    Bang,
}

impl Kind {
    fn bracket_change(self) -> i32 {
        match self {
            Kind::OBrace | Kind::OBrack | Kind::OParen => 1,
            Kind::CBrace | Kind::CBrack | Kind::CParen => -1,
            _ => 0,
        }
    }

    fn is_open(self) -> bool {
        self.bracket_change() > 0
    }

    fn is_close(self) -> bool {
        self.bracket_change() < 0
    }

    fn is_comment(self) -> bool {
        matches!(self, Kind::LineComment | Kind::BlockComment)
    }
}

#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    kind: Kind,
    text: &'a str,
    /// Byte offset in the source.
    start: usize,
    /// The whitespace before the token on its line.
    ws: &'a str,
}

impl Tok<'_> {
    fn is_keyword(&self, words: &[&str]) -> bool {
        self.kind == Kind::Ident && words.contains(&self.text)
    }

    fn is_multiline(&self) -> bool {
        self.text.contains('\n')
    }
}

/// The tokens of one line; an empty line is a blank line. Opaque tokens and
/// block comments may span several physical lines.
type Line<'a> = Vec<Tok<'a>>;

fn is_id_start(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic() || c == '_'
    } else {
        Ident::try_new(c.to_string()).is_ok()
    }
}

fn is_id_continue(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    } else {
        Ident::try_new(format!("a{c}")).is_ok()
    }
}

/// Splits `text` into lines of tokens. `opaque` holds the sorted spans of the
/// string-like tokens. `None` if the text does not tokenize as expected.
fn lex<'a>(text: &'a str, opaque: &[Range<usize>]) -> Option<Vec<Line<'a>>> {
    let bytes = text.as_bytes();
    let mut lines: Vec<Line<'a>> = vec![Vec::new()];
    let mut opaque = opaque.iter().peekable();
    let (mut pos, mut ws_start) = (0, 0);
    while pos < text.len() {
        while opaque.next_if(|r| r.start < pos).is_some() {}
        let start = pos;
        let kind = if let Some(span) = opaque.next_if(|r| r.start == pos) {
            if span.end <= pos || !text.is_char_boundary(span.end) || span.end > text.len() {
                return None;
            }
            pos = span.end;
            if text[start..].starts_with("<<") { Kind::Heredoc } else { Kind::Str }
        } else {
            let c = text[pos..].chars().next()?;
            match c {
                // A CR not ending a line is whitespace to the parser too.
                ' ' | '\t' | '\r' => {
                    pos += 1;
                    continue;
                }
                '\n' => {
                    lines.push(Vec::new());
                    pos += 1;
                    ws_start = pos;
                    continue;
                }
                '#' => {
                    pos = line_end(text, pos);
                    Kind::LineComment
                }
                '/' if bytes.get(pos + 1) == Some(&b'/') => {
                    pos = line_end(text, pos);
                    Kind::LineComment
                }
                '/' if bytes.get(pos + 1) == Some(&b'*') => {
                    pos += 2 + text[pos + 2..].find("*/")? + 2;
                    Kind::BlockComment
                }
                '"' => return None,
                c if is_id_start(c) => {
                    pos += c.len_utf8();
                    while let Some(c) = text[pos..].chars().next().filter(|&c| is_id_continue(c)) {
                        pos += c.len_utf8();
                    }
                    Kind::Ident
                }
                '0'..='9' => {
                    pos = number_end(bytes, pos);
                    Kind::Number
                }
                _ => {
                    let (kind, len) = punct(&text[pos..])?;
                    pos += len;
                    kind
                }
            }
        };
        let tok = Tok { kind, text: &text[start..pos], start, ws: &text[ws_start..start] };
        lines.last_mut()?.push(tok);
        ws_start = pos;
    }
    Some(lines)
}

fn line_end(text: &str, pos: usize) -> usize {
    text[pos..].find('\n').map_or(text.len(), |i| pos + i)
}

/// The end of the number starting at `pos`: digits, an optional fraction
/// and an optional exponent, as `hcl_edit` reads them.
fn number_end(bytes: &[u8], pos: usize) -> usize {
    let digits = |mut p: usize| {
        while bytes.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
        p
    };
    let mut end = digits(pos);
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end = digits(end + 1);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut p = end + 1;
        if matches!(bytes.get(p), Some(b'+' | b'-')) {
            p += 1;
        }
        if bytes.get(p).is_some_and(u8::is_ascii_digit) {
            end = digits(p);
        }
    }
    end
}

fn punct(s: &str) -> Option<(Kind, usize)> {
    const MULTI: [(&str, Kind); 9] = [
        ("...", Kind::Ellipsis),
        ("::", Kind::DoubleColon),
        ("=>", Kind::FatArrow),
        ("==", Kind::Op),
        ("!=", Kind::Op),
        ("<=", Kind::Op),
        (">=", Kind::Op),
        ("&&", Kind::Op),
        ("||", Kind::Op),
    ];
    if let Some(&(p, kind)) = MULTI.iter().find(|(p, _)| s.starts_with(p)) {
        return Some((kind, p.len()));
    }
    if s.starts_with("<<") {
        // A heredoc the parser did not report: do not guess.
        return None;
    }
    let kind = match s.as_bytes().first()? {
        b'{' => Kind::OBrace,
        b'}' => Kind::CBrace,
        b'[' => Kind::OBrack,
        b']' => Kind::CBrack,
        b'(' => Kind::OParen,
        b')' => Kind::CParen,
        b',' => Kind::Comma,
        b'.' => Kind::Dot,
        b':' => Kind::Colon,
        b'?' => Kind::Question,
        b'=' => Kind::Assign,
        b'!' => Kind::Bang,
        b'-' => Kind::Minus,
        b'+' | b'*' | b'/' | b'%' | b'<' | b'>' => Kind::Op,
        _ => return None,
    };
    Some((kind, 1))
}

/// The spans of all string-like expressions and string labels (outermost
/// only): these are emitted verbatim.
#[derive(Default)]
struct OpaqueSpans(Vec<Range<usize>>);

impl Visit for OpaqueSpans {
    fn visit_expr(&mut self, node: &Expression) {
        match node {
            Expression::String(_) | Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => {
                self.0.extend(node.span());
            }
            _ => visit::visit_expr(self, node),
        }
    }

    fn visit_block_label(&mut self, node: &BlockLabel) {
        if let BlockLabel::String(s) = node {
            self.0.extend(s.span());
        }
    }
}

// ---------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------

/// The sorted spans of the opaque tokens of `body`.
fn opaque_spans(body: &Body) -> Vec<Range<usize>> {
    let mut spans = OpaqueSpans::default();
    spans.visit_body(body);
    let mut spans = spans.0;
    spans.sort_by_key(|r| r.start);
    spans
}

fn render(text: &str, body: &Body, mode: Mode) -> Option<String> {
    let mut lines = lex(text, &opaque_spans(body))?;
    if mode == Mode::Canonical {
        lines = join_empty_brackets(lines);
    }
    let lines = normalize_blank_lines(lines);
    let indents = indentation(&lines);
    let rows: Vec<Row> = lines
        .iter()
        .zip(&indents)
        .map(|(line, &indent)| match mode {
            Mode::Canonical => Row::canonical(text, line, indent),
            _ => Row::reindent(line, indent),
        })
        .collect();
    let rows = align(rows);
    let mut out = String::with_capacity(text.len() + 64);
    for row in &rows {
        row.write(&mut out);
        out.push('\n');
    }
    if rows.is_empty() {
        out.clear();
    }
    Some(out)
}

/// Joins `{`, `[` or `(` ending a line with the matching closer starting a
/// later line when only line breaks are between them: `{}`.
fn join_empty_brackets(lines: Vec<Line<'_>>) -> Vec<Line<'_>> {
    let mut out: Vec<Line> = Vec::with_capacity(lines.len());
    for line in lines {
        if let Some(first) = line.first().filter(|t| t.kind.is_close()) {
            let prev = out.iter().rposition(|l| !l.is_empty());
            if let Some(k) = prev
                && out[k].last().is_some_and(|t| matching(t.kind, first.kind))
            {
                out.truncate(k + 1);
                out[k].extend(line);
                continue;
            }
        }
        out.push(line);
    }
    out
}

fn matching(open: Kind, close: Kind) -> bool {
    matches!(
        (open, close),
        (Kind::OBrace, Kind::CBrace) | (Kind::OBrack, Kind::CBrack) | (Kind::OParen, Kind::CParen)
    )
}

/// No blank lines at the start or the end, after an opening bracket or
/// before a closing one; runs of blank lines collapse to one.
fn normalize_blank_lines(lines: Vec<Line<'_>>) -> Vec<Line<'_>> {
    let mut out: Vec<Line> = Vec::with_capacity(lines.len());
    for line in lines {
        if line.is_empty() {
            let keep = out.last().is_some_and(|prev| {
                !prev.is_empty()
                    && !prev.iter().rev().find(|t| !t.kind.is_comment()).is_some_and(|t| t.kind.is_open())
            });
            if keep {
                out.push(line);
            }
            continue;
        }
        let closes = line.iter().find(|t| !t.kind.is_comment()).is_some_and(|t| t.kind.is_close());
        if closes && out.last().is_some_and(Vec::is_empty) {
            out.pop();
        }
        out.push(line);
    }
    while out.last().is_some_and(Vec::is_empty) {
        out.pop();
    }
    out
}

/// `hclwrite`'s indentation: a line with more openers than closers indents
/// the following lines by one level (however many openers it has), and
/// closers pop the levels they close.
fn indentation(lines: &[Line<'_>]) -> Vec<usize> {
    let mut stack: Vec<i32> = Vec::new();
    lines
        .iter()
        .map(|line| {
            if line.is_empty() {
                return 0;
            }
            let net: i32 = line.iter().map(|t| t.kind.bracket_change()).sum();
            if net > 0 {
                let indent = stack.len();
                stack.push(net);
                return 2 * indent;
            }
            let mut closed = -net;
            while closed > 0 {
                let Some(top) = stack.last_mut() else { break };
                if closed >= *top {
                    closed -= *top;
                    stack.pop();
                } else {
                    *top -= closed;
                    closed = 0;
                }
            }
            2 * stack.len()
        })
        .collect()
}

/// Whether a space separates `subject` and `after` on a line; `before` is
/// the token before `subject` (comments skipped). After `hclwrite`'s rules.
fn space_after(before: Option<&Tok<'_>>, subject: &Tok<'_>, after: &Tok<'_>) -> bool {
    use Kind::*;
    let (s, a) = (subject.kind, after.kind);
    if a == LineComment {
        return true;
    }
    if s == Dot || a == Dot {
        // `1 .5` must not become the number `1.5`.
        return s == Number && a == Dot && before.is_none_or(|b| b.kind != Dot);
    }
    if matches!(a, Comma | Ellipsis) {
        return false;
    }
    if s == Comma {
        return true;
    }
    if matches!(a, OParen | OBrack)
        && subject.is_keyword(&["in", "if"])
        && before.is_none_or(|b| !matches!(b.kind, Dot | DoubleColon))
    {
        // `for x in [1, 2]`, `if (x)`: keywords, not calls or indexes.
        return true;
    }
    if s == Ident && a == OParen {
        return false;
    }
    if (s == Ident && a == DoubleColon) || (s == DoubleColon && a == Ident) {
        return false;
    }
    if a == OBrack && (matches!(s, Ident | Number | Str) || s.is_close()) {
        return false;
    }
    if s == Bang {
        return false;
    }
    if s == Minus {
        // A negation has no space after it; guess from the token before.
        return before.is_some_and(|b| {
            !(b.kind.is_open()
                || matches!(b.kind, Assign | Colon | Comma | Question | Op | Minus | Bang | FatArrow))
        });
    }
    if s == OBrace || a == CBrace {
        return !(s == OBrace && a == CBrace);
    }
    if s.is_open() || a.is_close() {
        return false;
    }
    true
}

/// One output line: `lead`, then optionally the `assign` cell (from the
/// `=` of an attribute on one line) and a trailing line comment, each with
/// the spaces before it.
#[derive(Debug, Default)]
struct Row {
    lead: String,
    assign: Option<String>,
    comment: Option<String>,
    assign_pad: usize,
    comment_pad: usize,
    /// The trailing comment may be aligned with its neighbours.
    comment_aligns: bool,
}

impl Row {
    fn canonical(text: &str, line: &[Tok<'_>], indent: usize) -> Row {
        let n = line.len();
        if n == 0 {
            return Row::default();
        }
        let comment_at = (n > 1 && line[n - 1].kind == Kind::LineComment).then_some(n - 1);
        let body_end = comment_at.unwrap_or(n);
        let multiline = |r: Range<usize>| line[r].iter().any(Tok::is_multiline);
        let assign_at = line[..body_end].iter().position(|t| t.kind == Kind::Assign).filter(|&i| {
            i > 0
                && line[i..body_end].iter().map(|t| t.kind.bracket_change()).sum::<i32>() == 0
                && !multiline(0..i)
        });
        let lead_end = assign_at.unwrap_or(body_end);

        let spaces = |i: usize| -> usize {
            let before = line[..i - 1].iter().rev().find(|t| !t.kind.is_comment());
            usize::from(space_after(before, &line[i - 1], &line[i]))
        };
        let cell = |out: &mut String, range: Range<usize>| {
            for i in range {
                out.extend(std::iter::repeat_n(' ', spaces(i)));
                out.push_str(&token_text(&line[i], None));
            }
        };

        let mut lead = " ".repeat(indent);
        let old_col = text[..line[0].start].rsplit('\n').next().map_or(0, |s| s.chars().count());
        lead.push_str(&token_text(&line[0], Some((old_col, indent))));
        cell(&mut lead, 1..lead_end);
        let assign = assign_at.map(|a| {
            let mut s = line[a].text.to_string();
            cell(&mut s, a + 1..body_end);
            s
        });
        Row {
            lead,
            assign,
            comment: comment_at.map(|c| token_text(&line[c], None).into_owned()),
            assign_pad: 1,
            comment_pad: 1,
            comment_aligns: comment_at.is_some() && !multiline(0..body_end),
        }
    }

    fn reindent(line: &[Tok<'_>], indent: usize) -> Row {
        let mut lead = String::new();
        for (i, tok) in line.iter().enumerate() {
            if i == 0 {
                lead.push_str(&" ".repeat(indent));
            } else {
                lead.extend(tok.ws.chars().map(|c| if c == '\r' { ' ' } else { c }));
            }
            lead.push_str(&token_text(tok, None));
        }
        Row { lead, ..Row::default() }
    }

    fn write(&self, out: &mut String) {
        out.push_str(&self.lead);
        if let Some(assign) = &self.assign {
            out.extend(std::iter::repeat_n(' ', self.assign_pad));
            out.push_str(assign);
        }
        if let Some(comment) = &self.comment {
            out.extend(std::iter::repeat_n(' ', self.comment_pad));
            out.push_str(comment);
        }
    }

    fn width_before_comment(&self) -> usize {
        let assign = self.assign.as_ref().map_or(0, |a| self.assign_pad + width(a));
        width(&self.lead) + assign
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Aligns the `=` of consecutive lines with an assign cell, then the
/// trailing comments of consecutive lines with an alignable comment.
fn align(mut rows: Vec<Row>) -> Vec<Row> {
    for (start, end) in runs(&rows, |r| r.assign.is_some()) {
        let max = rows[start..end].iter().map(|r| width(&r.lead)).max().unwrap_or(0);
        for row in &mut rows[start..end] {
            row.assign_pad = max - width(&row.lead) + 1;
        }
    }
    for (start, end) in runs(&rows, |r| r.comment_aligns) {
        let max = rows[start..end].iter().map(Row::width_before_comment).max().unwrap_or(0);
        for row in &mut rows[start..end] {
            row.comment_pad = max - row.width_before_comment() + 1;
        }
    }
    rows
}

/// The maximal runs of consecutive rows satisfying `pred`.
fn runs(rows: &[Row], pred: impl Fn(&Row) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        if pred(&rows[i]) {
            let start = i;
            while i < rows.len() && pred(&rows[i]) {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

/// The text of a token as emitted: comments lose trailing whitespace. A
/// multi-line block comment that starts a line moved from column `.0` to
/// column `.1` (`reflow`) takes its continuation lines along when possible.
fn token_text<'a>(tok: &Tok<'a>, reflow: Option<(usize, usize)>) -> Cow<'a, str> {
    match tok.kind {
        Kind::LineComment => Cow::Borrowed(tok.text.trim_end()),
        Kind::BlockComment if tok.is_multiline() => {
            let mut lines = tok.text.split('\n').map(str::trim_end);
            let first = lines.next().unwrap_or_default();
            let rest: Vec<&str> = lines.collect();
            let shift = reflow.map_or(0, |(old, new)| new as isize - old as isize);
            let dedent_ok = rest
                .iter()
                .filter(|l| !l.is_empty())
                .all(|l| l.len() - l.trim_start_matches(' ').len() >= shift.unsigned_abs());
            let mut out = first.to_string();
            for line in rest {
                out.push('\n');
                if line.is_empty() {
                    continue;
                }
                if shift > 0 {
                    out.extend(std::iter::repeat_n(' ', shift.unsigned_abs()));
                    out.push_str(line);
                } else if shift < 0 && dedent_ok {
                    out.push_str(&line[shift.unsigned_abs()..]);
                } else {
                    out.push_str(line);
                }
            }
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(tok.text),
    }
}

// ---------------------------------------------------------------------------
// Self-check: same structure, same comments in the same places
// ---------------------------------------------------------------------------

/// What formatting must not change about a file.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    /// The structure without whitespace and comments.
    body: Body,
    /// The comments with the decor slot holding each.
    slots: Vec<(usize, String)>,
    /// All comments in textual order. (`hcl_edit` drops a few comments from
    /// its tree, e.g. the ones around binary operators; the tokens have all.)
    comments: Vec<String>,
}

impl Fingerprint {
    fn of(text: &str, body: &Body) -> Option<Fingerprint> {
        let lines = lex(text, &opaque_spans(body))?;
        let comments = lines.iter().flatten().filter(|t| t.kind.is_comment()).map(|t| normalize_comment(t.text));
        Some(Fingerprint { body: normalized(body), slots: comment_slots(body), comments: comments.collect() })
    }

    fn matches(&self, formatted: &str) -> bool {
        match panic::catch_unwind(AssertUnwindSafe(|| parse_body(formatted))) {
            Ok(Ok(body)) => Fingerprint::of(formatted, &body).is_some_and(|fp| fp == *self),
            _ => false,
        }
    }
}

/// A comment compared with its lines trimmed (continuation lines of block
/// comments may be re-indented).
fn normalize_comment(comment: &str) -> String {
    comment.lines().map(str::trim).collect::<Vec<_>>().join("\n")
}

/// A copy of `body` without decor (whitespace and comments), layout
/// preferences or number spellings: what remains is the meaning.
fn normalized(body: &Body) -> Body {
    let mut body = body.clone();
    Normalizer.visit_body_mut(&mut body);
    body
}

struct Normalizer;

impl VisitMut for Normalizer {
    fn visit_body_mut(&mut self, node: &mut Body) {
        node.decor_mut().clear();
        node.set_prefer_oneline(false);
        node.set_prefer_omit_trailing_newline(false);
        visit_mut::visit_body_mut(self, node);
    }

    fn visit_structure_mut(&mut self, mut node: StructureMut) {
        node.decor_mut().clear();
        visit_mut::visit_structure_mut(self, node);
    }

    fn visit_attr_mut(&mut self, mut node: AttributeMut) {
        node.decor_mut().clear();
        node.key_decor_mut().clear();
        visit_mut::visit_attr_mut(self, node);
    }

    fn visit_block_mut(&mut self, node: &mut Block) {
        node.decor_mut().clear();
        visit_mut::visit_block_mut(self, node);
    }

    fn visit_block_label_mut(&mut self, node: &mut BlockLabel) {
        node.decor_mut().clear();
    }

    fn visit_ident_mut(&mut self, node: &mut Decorated<Ident>) {
        node.decor_mut().clear();
    }

    fn visit_splat_mut(&mut self, node: &mut Decorated<Splat>) {
        node.decor_mut().clear();
    }

    fn visit_u64_mut(&mut self, node: &mut Decorated<u64>) {
        node.decor_mut().clear();
    }

    fn visit_binary_operator_mut(&mut self, node: &mut Decorated<BinaryOperator>) {
        node.decor_mut().clear();
    }

    fn visit_expr_mut(&mut self, node: &mut Expression) {
        node.decor_mut().clear();
        if let Expression::Number(n) = node {
            n.format();
        }
        visit_mut::visit_expr_mut(self, node);
    }

    fn visit_array_mut(&mut self, node: &mut Array) {
        node.set_trailing("");
        visit_mut::visit_array_mut(self, node);
    }

    fn visit_object_mut(&mut self, node: &mut Object) {
        // Keys are immutable in place: rebuild the object to reach them.
        let mut rebuilt = Object::new();
        for (key, value) in node.iter() {
            let (mut key, mut value) = (key.clone(), value.clone());
            key.decor_mut().clear();
            if let ObjectKey::Expression(expr) = &mut key {
                self.visit_expr_mut(expr);
            }
            self.visit_object_value_mut(&mut value);
            rebuilt.insert(key, value);
        }
        rebuilt.set_trailing("");
        *node = rebuilt;
    }

    fn visit_object_key_mut(&mut self, mut node: ObjectKeyMut) {
        node.decor_mut().clear();
    }

    fn visit_object_value_mut(&mut self, node: &mut ObjectValue) {
        visit_mut::visit_object_value_mut(self, node);
    }

    fn visit_traversal_mut(&mut self, node: &mut Traversal) {
        self.visit_expr_mut(&mut node.expr);
        for op in &mut node.operators {
            op.decor_mut().clear();
            self.visit_traversal_operator_mut(op);
        }
    }

    fn visit_func_args_mut(&mut self, node: &mut FuncArgs) {
        node.decor_mut().clear();
        node.set_trailing("");
        visit_mut::visit_func_args_mut(self, node);
    }

    fn visit_for_intro_mut(&mut self, node: &mut ForIntro) {
        node.decor_mut().clear();
        visit_mut::visit_for_intro_mut(self, node);
    }

    fn visit_for_cond_mut(&mut self, node: &mut ForCond) {
        node.decor_mut().clear();
        visit_mut::visit_for_cond_mut(self, node);
    }
}

/// Every comment of `body` with the number of the decor slot (in visiting
/// order) holding it: equal lists mean the same comments, in the same order,
/// attached to the same items. Comment lines are compared trimmed.
fn comment_slots(body: &Body) -> Vec<(usize, String)> {
    let mut slots = CommentSlots::default();
    slots.visit_body(body);
    slots.found
}

#[derive(Default)]
struct CommentSlots {
    slot: usize,
    found: Vec<(usize, String)>,
}

impl CommentSlots {
    fn raw(&mut self, raw: Option<&RawString>) {
        self.slot += 1;
        if let Some(raw) = raw {
            for comment in comments_in(raw) {
                self.found.push((self.slot, comment));
            }
        }
    }

    fn decor(&mut self, decor: &Decor) {
        self.raw(decor.prefix());
        self.raw(decor.suffix());
    }
}

impl Visit for CommentSlots {
    fn visit_body(&mut self, node: &Body) {
        self.decor(node.decor());
        visit::visit_body(self, node);
    }

    fn visit_attr(&mut self, node: &Attribute) {
        self.decor(node.decor());
        visit::visit_attr(self, node);
    }

    fn visit_block(&mut self, node: &Block) {
        self.decor(node.decor());
        visit::visit_block(self, node);
    }

    fn visit_block_label(&mut self, node: &BlockLabel) {
        self.decor(node.decor());
    }

    fn visit_ident(&mut self, node: &Decorated<Ident>) {
        self.decor(node.decor());
    }

    fn visit_splat(&mut self, node: &Decorated<Splat>) {
        self.decor(node.decor());
    }

    fn visit_u64(&mut self, node: &Decorated<u64>) {
        self.decor(node.decor());
    }

    fn visit_binary_operator(&mut self, node: &Decorated<BinaryOperator>) {
        self.decor(node.decor());
    }

    fn visit_expr(&mut self, node: &Expression) {
        self.decor(node.decor());
        match node {
            Expression::Null(_)
            | Expression::Bool(_)
            | Expression::Number(_)
            | Expression::String(_)
            | Expression::StringTemplate(_)
            | Expression::HeredocTemplate(_)
            | Expression::Variable(_) => {}
            _ => visit::visit_expr(self, node),
        }
    }

    fn visit_array(&mut self, node: &Array) {
        self.raw(Some(node.trailing()));
        visit::visit_array(self, node);
    }

    fn visit_object(&mut self, node: &Object) {
        self.raw(Some(node.trailing()));
        visit::visit_object(self, node);
    }

    fn visit_traversal(&mut self, node: &Traversal) {
        self.visit_expr(&node.expr);
        for op in &node.operators {
            self.decor(op.decor());
            visit::visit_traversal_operator(self, op.value());
        }
    }

    fn visit_func_args(&mut self, node: &FuncArgs) {
        self.decor(node.decor());
        self.raw(Some(node.trailing()));
        visit::visit_func_args(self, node);
    }

    fn visit_for_intro(&mut self, node: &ForIntro) {
        self.decor(node.decor());
        visit::visit_for_intro(self, node);
    }

    fn visit_for_cond(&mut self, node: &ForCond) {
        self.decor(node.decor());
        visit::visit_for_cond(self, node);
    }
}

/// The comments in a decor string (whitespace and comments only).
fn comments_in(decor: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = decor;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else { break };
        let end = if rest.starts_with('#') || rest.starts_with("//") {
            rest.find('\n').unwrap_or(rest.len())
        } else if let Some(body) = rest.strip_prefix("/*") {
            body.find("*/").map_or(rest.len(), |i| i + 4)
        } else {
            rest = &rest[c.len_utf8()..];
            continue;
        };
        out.push(normalize_comment(&rest[..end]));
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // -- helpers ------------------------------------------------------------

    fn fmt(src: &str) -> String {
        match format_with_mode(src) {
            Ok((out, Mode::Canonical)) => out,
            Ok((out, mode)) => panic!("self-check failed, fell back to {mode:?}:\n{src}\n---\n{out}"),
            Err(e) => panic!("unexpected error {e:?} for:\n{src}"),
        }
    }

    fn show_diff(expected: &str, actual: &str) -> String {
        let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
        let mut out = String::new();
        for i in 0..e.len().max(a.len()) {
            let (x, y) = (e.get(i).copied(), a.get(i).copied());
            let mark = if x == y { ' ' } else { '!' };
            out.push_str(&format!("{mark}{i:>3} expected |{}|\n", x.unwrap_or("<none>")));
            if x != y {
                out.push_str(&format!("{mark}{i:>3} actual   |{}|\n", y.unwrap_or("<none>")));
            }
        }
        out
    }

    /// `input` formats to `expected`, which is canonical, and all properties hold.
    fn check(input: &str, expected: &str) {
        let out = fmt(input);
        assert!(out == expected, "wrong layout:\n{}", show_diff(expected, &out));
        assert_eq!(fmt(expected), expected, "expected output is not a fixed point");
        check_properties(input);
    }

    /// Meaning: both parse to the same structure, compared as values with
    /// decor ignored and as re-encoded text with decor stripped.
    fn assert_same_meaning(a: &str, b: &str) {
        let a = normalize_line_endings(a);
        let (pa, pb) = (parse_body(&a).unwrap(), parse_body(b).unwrap());
        let (na, nb) = (normalized(&pa), normalized(&pb));
        assert!(na == nb, "structure differs:\n{a}\n---\n{b}");
        assert_eq!(na.to_string(), nb.to_string(), "re-encoded structure differs");
    }

    /// Comments: the same comments, in the same order, in the same decor
    /// slot (so attached to the same item); and present in the text in order.
    fn assert_same_comments(a: &str, b: &str) {
        let a = normalize_line_endings(a);
        let (ca, cb) = (comment_slots(&parse_body(&a).unwrap()), comment_slots(&parse_body(b).unwrap()));
        assert_eq!(ca, cb, "comments moved:\n{a}\n---\n{b}");
        assert_eq!(comments_in_text(&a), comments_in_text(b), "comment order changed");
    }

    /// The comments of a source text in textual order (lines trimmed).
    fn comments_in_text(src: &str) -> Vec<String> {
        let body = parse_body(src).unwrap();
        let lines = lex(src, &opaque_spans(&body)).expect("lexes");
        let comments: Vec<String> =
            lines.iter().flatten().filter(|t| t.kind.is_comment()).map(|t| normalize_comment(t.text)).collect();
        // Every comment the parser placed is one the lexer found.
        let mut pool = comments.clone();
        for (_, c) in comment_slots(&body) {
            let at = pool.iter().position(|x| *x == c).unwrap_or_else(|| panic!("{c:?} not lexed in\n{src}"));
            pool.swap_remove(at);
        }
        comments
    }

    fn check_properties(input: &str) {
        let out = fmt(input);
        assert_eq!(fmt(&out), out, "not idempotent for:\n{input}");
        assert_same_meaning(input, &out);
        assert_same_comments(input, &out);
        assert!(out.is_empty() || (out.ends_with('\n') && !out.ends_with("\n\n")));
        assert!(!out.contains("\r\n"));
    }

    // -- corpus ------------------------------------------------------------

    const DEMO_IN: &str = r#"virtform { stack = "demo" }
variable "workers" { default = 2 }
network "lan" {
  type = "bridge"   # bridge | ovs | nat | isolated
  bridge  = "vf-lan0"
  address = "10.77.0.1/24"
}
disk "root" {
  count = var.workers
  image = image.base
  size = "1G"
}
instance "worker" {
  count  = var.workers
  disks  = [disk.root[count.index]]
  ports = [port.eth0[count.index]]
  wait_for {
    console = "login:"
    timeout = "120s"
  }
  cloud_init {
    user_data = <<-EOT
      #cloud-config
      packages: [nginx]
    EOT
  }
}
output "ips" { value = port.eth0[*].ip }
"#;

    const DEMO_OUT: &str = r#"virtform { stack = "demo" }
variable "workers" { default = 2 }
network "lan" {
  type    = "bridge" # bridge | ovs | nat | isolated
  bridge  = "vf-lan0"
  address = "10.77.0.1/24"
}
disk "root" {
  count = var.workers
  image = image.base
  size  = "1G"
}
instance "worker" {
  count = var.workers
  disks = [disk.root[count.index]]
  ports = [port.eth0[count.index]]
  wait_for {
    console = "login:"
    timeout = "120s"
  }
  cloud_init {
    user_data = <<-EOT
      #cloud-config
      packages: [nginx]
    EOT
  }
}
output "ips" { value = port.eth0[*].ip }
"#;

    /// The example of the design brief verbatim: `wait_for { a = 1, b = 2 }`
    /// is not HCL (a one-line block holds at most one attribute).
    const BRIEF_EXAMPLE: &str = r#"virtform { stack = "demo" }
variable "workers" { default = 2 }
network "lan" {
  type = "bridge"   # bridge | ovs | nat | isolated
  bridge  = "vf-lan0"
  address = "10.77.0.1/24"
}
disk "root" {
  count = var.workers
  image = image.base
  size = "1G"
}
instance "worker" {
  count  = var.workers
  disks  = [disk.root[count.index]]
  ports = [port.eth0[count.index]]
  wait_for { console = "login:", timeout = "120s" }
  cloud_init {
    user_data = <<-EOT
      #cloud-config
      packages: [nginx]
    EOT
  }
}
output "ips" { value = port.eth0[*].ip }
"#;

    const MESSY_IN: &str = concat!(
        "# virtform stack: demo   \n",
        "// second header comment\n",
        "\n",
        "\n",
        "virtform {\n",
        "stack=\"demo\" # the stack name\n",
        "}\n",
        "\n",
        "/* variables */\n",
        "variable \"workers\" {\n",
        "\tdefault=2\n",
        "\tdescription   =   \"how many workers\"\n",
        "}\n",
        "\n",
        "\n",
        "\n",
        "network \"lan\" {     # the LAN\n",
        "\n",
        "    type = \"bridge\"   # bridge | ovs | nat | isolated\n",
        "    bridge  = \"vf-lan0\"  // the bridge\n",
        "    # a comment line breaks the alignment\n",
        "    address = \"10.77.0.1/24\"\n",
        "\n",
        "}\n",
        "instance \"worker\" {\n",
        "  count=var.workers\n",
        "  disks  = [\n",
        "      disk.root[count.index],   # root disk\n",
        "    disk.data[ count.index ] ,\n",
        "  ]\n",
        "  metadata = {\n",
        "    role=\"worker\"\n",
        "      \"vf/zone\" = \"a\" # zone\n",
        "    index = count.index\n",
        "  }\n",
        "}\n",
        "# end of file",
    );

    const MESSY_OUT: &str = r#"# virtform stack: demo
// second header comment

virtform {
  stack = "demo" # the stack name
}

/* variables */
variable "workers" {
  default     = 2
  description = "how many workers"
}

network "lan" {      # the LAN
  type   = "bridge"  # bridge | ovs | nat | isolated
  bridge = "vf-lan0" // the bridge
  # a comment line breaks the alignment
  address = "10.77.0.1/24"
}
instance "worker" {
  count = var.workers
  disks = [
    disk.root[count.index], # root disk
    disk.data[count.index],
  ]
  metadata = {
    role      = "worker"
    "vf/zone" = "a" # zone
    index     = count.index
  }
}
# end of file
"#;

    const EXPR_IN: &str = r#"locals {
  sum    = 1+2*3
  neg    = -1
  diff   = var.a -1
  not    = ! var.enabled
  cmp    = var.a>=10&&var.b!=null||var.c<2
  idx    = var.list [0]
  splat  = var.ports[ * ].ip
  attr   = var.ports.*.ip
  legacy = var.list.0
  call   = join( ",", var.names )
  expand = min(var.values ...)
  ns     = provider :: virtform :: ip(var.x)
  paren  = ( var.a + var.b ) / 2
  cond   = var.x==null?"none":var.x
  list   = [ for s in var.list : upper(s) if s != "" ]
  map    = {for k , v in var.m : k => v ... if v != null}
  tuple  = [for x in [1,2,3]: x*2]
  kw     = [for x in(var.y): x if(x > 1)]
  tmpl   = "${var.a}-%{ if var.b }yes%{ else }no%{ endif }"
  spaced = "  keep   this  "
  nested = {a={b={c=1}}}
  dashed = var.a-b
  mod    = 7%3
}
"#;

    const EXPR_OUT: &str = r#"locals {
  sum    = 1 + 2 * 3
  neg    = -1
  diff   = var.a - 1
  not    = !var.enabled
  cmp    = var.a >= 10 && var.b != null || var.c < 2
  idx    = var.list[0]
  splat  = var.ports[*].ip
  attr   = var.ports.*.ip
  legacy = var.list.0
  call   = join(",", var.names)
  expand = min(var.values...)
  ns     = provider::virtform::ip(var.x)
  paren  = (var.a + var.b) / 2
  cond   = var.x == null ? "none" : var.x
  list   = [for s in var.list : upper(s) if s != ""]
  map    = { for k, v in var.m : k => v... if v != null }
  tuple  = [for x in [1, 2, 3] : x * 2]
  kw     = [for x in (var.y) : x if (x > 1)]
  tmpl   = "${var.a}-%{ if var.b }yes%{ else }no%{ endif }"
  spaced = "  keep   this  "
  nested = { a = { b = { c = 1 } } }
  dashed = var.a-b
  mod    = 7 % 3
}
"#;

    // Heredoc bodies (and the spaces ending `echo "hello"`) are verbatim.
    const HEREDOC_IN: &str = concat!(
        "resource \"x\" {\n",
        "  name = \"a\"\n",
        "  script = <<EOT\n",
        "  echo \"hello\"   \n",
        "    indented\n",
        "EOT\n",
        "  after = 1\n",
        "  indented_heredoc = <<-EOF\n",
        "      line one\n",
        "\n",
        "        line two\n",
        "      EOF\n",
        "  z = 2\n",
        "  list = [<<A\n",
        "x\n",
        "A\n",
        "  , \"b\"]\n",
        "}\n",
    );

    const HEREDOC_OUT: &str = concat!(
        "resource \"x\" {\n",
        "  name             = \"a\"\n",
        "  script           = <<EOT\n",
        "  echo \"hello\"   \n",
        "    indented\n",
        "EOT\n",
        "  after            = 1\n",
        "  indented_heredoc = <<-EOF\n",
        "      line one\n",
        "\n",
        "        line two\n",
        "      EOF\n",
        "  z                = 2\n",
        "  list = [<<A\n",
        "x\n",
        "A\n",
        "  , \"b\"]\n",
        "}\n",
    );

    const NESTED_IN: &str = r#"instance "db" {
  networks = [
    {
    name = "lan"
    ip = "10.77.0.10"
    mac = null
    },
    {name = "wan", ip = "dhcp"},
  ]
  labels = merge(var.common_labels, {
  role = "db"
  tier="backend"
  })
  disks = [disk.root.id,
           disk.data.id]
  settings = {
    cpu = {
      cores = 4
      threads_per_core = 2
    }
    memory = "8G"
  }
}
"#;

    const NESTED_OUT: &str = r#"instance "db" {
  networks = [
    {
      name = "lan"
      ip   = "10.77.0.10"
      mac  = null
    },
    { name = "wan", ip = "dhcp" },
  ]
  labels = merge(var.common_labels, {
    role = "db"
    tier = "backend"
  })
  disks = [disk.root.id,
  disk.data.id]
  settings = {
    cpu = {
      cores            = 4
      threads_per_core = 2
    }
    memory = "8G"
  }
}
"#;

    const TEMPLATES_IN: &str = r#"locals {
  greeting = "Hello, %{ if var.name != "" }${var.name}%{ else }stranger%{ endif }!"
  hosts = <<-EOT
    %{ for h in var.hosts ~}
    ${h.name} ansible_host=${h.ip}
    %{ endfor ~}
  EOT
  escaped = "$${not_interpolated} %%{ nor_this }"
  unicode = "caf\u00e9 \"quoted\" \\ back"
  multi = "${join(",",
    var.list)}"
}
"#;

    const TEMPLATES_OUT: &str = r#"locals {
  greeting = "Hello, %{ if var.name != "" }${var.name}%{ else }stranger%{ endif }!"
  hosts    = <<-EOT
    %{ for h in var.hosts ~}
    ${h.name} ansible_host=${h.ip}
    %{ endfor ~}
  EOT
  escaped  = "$${not_interpolated} %%{ nor_this }"
  unicode  = "caf\u00e9 \"quoted\" \\ back"
  multi    = "${join(",",
    var.list)}"
}
"#;

    const COMMENTS_IN: &str = r#"/*
 * Header block comment
 */

# leading comment for variable
variable "image" { # after brace
  // inside block
  default = "debian-12" /* inline */ # trailing
  type = string
  /* before closing brace */
}

network "lan" {
  addresses = [
    "10.0.0.1", # first
    # between items
    "10.0.0.2" /* second */,
    // last
  ]
  options = {
    # before key
    mtu = 1500 # trailing mtu
    stp = false
    # before closing
  }
  dns = [ /* empty-ish */ ]
  port = 22 /* a */ + /* b */ 1
}
# trailing comment 1

// trailing comment 2"#;

    const COMMENTS_OUT: &str = r#"/*
 * Header block comment
 */

# leading comment for variable
variable "image" { # after brace
  // inside block
  default = "debian-12" /* inline */ # trailing
  type    = string
  /* before closing brace */
}

network "lan" {
  addresses = [
    "10.0.0.1", # first
    # between items
    "10.0.0.2" /* second */,
    // last
  ]
  options = {
    # before key
    mtu = 1500 # trailing mtu
    stp = false
    # before closing
  }
  dns  = [/* empty-ish */]
  port = 22 /* a */ + /* b */ 1
}
# trailing comment 1

// trailing comment 2
"#;

    const BLANKS_IN: &str = "\n\n\n\na = 1\n\n\nb = 2\nblock {\n\n\n  c = 3\n\n\n}\n\n\n\n";
    const BLANKS_OUT: &str = "a = 1\n\nb = 2\nblock {\n  c = 3\n}\n";

    const EMPTY_IN: &str = concat!(
        "empty_block {\n",
        "}\n",
        "empty_block_labeled \"x\" {\n",
        "\n",
        "\n",
        "}\n",
        "obj = {\n",
        "}\n",
        "list = [\n",
        "\n",
        "]\n",
        "call = f(\n",
        ")\n",
        "spaced {   }\n",
        "obj2 = {   }\n",
        "nested = [{\n",
        "}, [\n",
        "]]\n",
    );
    const EMPTY_OUT: &str = concat!(
        "empty_block {}\n",
        "empty_block_labeled \"x\" {}\n",
        "obj  = {}\n",
        "list = []\n",
        "call = f()\n",
        "spaced {}\n",
        "obj2   = {}\n",
        "nested = [{}, []]\n",
    );

    const ONELINE_IN: &str = concat!(
        "virtform {stack=\"demo\"}\n",
        "variable \"x\" {   default = 1   }\n",
        "wait_for {console=\"login:\"}\n",
        "empty{}\n",
        "disk root {size=\"1G\"}\n",
    );
    const ONELINE_OUT: &str = concat!(
        "virtform { stack = \"demo\" }\n",
        "variable \"x\" { default = 1 }\n",
        "wait_for { console = \"login:\" }\n",
        "empty {}\n",
        "disk root { size = \"1G\" }\n",
    );

    const CRLF_IN: &str = "network \"lan\" {\r\n\ttype = \"nat\"   \r\n\t\taddress = \"10.0.0.1/24\"\t\r\n}\r\n";
    const CRLF_OUT: &str = "network \"lan\" {\n  type    = \"nat\"\n  address = \"10.0.0.1/24\"\n}\n";

    const VFVARS_IN: &str = concat!(
        "workers=3\n",
        "image_url=\"https://example.com/debian-12.qcow2\"   # pinned\n",
        "ssh_keys=[\n",
        "\"ssh-ed25519 AAAA... alice\",\n",
        "\"ssh-ed25519 BBBB... bob\",\n",
        "]\n",
    );
    const VFVARS_OUT: &str = concat!(
        "workers   = 3\n",
        "image_url = \"https://example.com/debian-12.qcow2\" # pinned\n",
        "ssh_keys = [\n",
        "  \"ssh-ed25519 AAAA... alice\",\n",
        "  \"ssh-ed25519 BBBB... bob\",\n",
        "]\n",
    );

    const REFLOW_IN: &str = concat!(
        "instance \"a\" {\n",
        "        /* a long\n",
        "           explanation\n",
        "             with nesting */\n",
        "        count = 1\n",
        "}\n",
        "a {\n",
        "b {\n",
        "/* x\n",
        "   y */\n",
        "c = 1\n",
        "}\n",
        "}\n",
    );
    const REFLOW_OUT: &str = concat!(
        "instance \"a\" {\n",
        "  /* a long\n",
        "     explanation\n",
        "       with nesting */\n",
        "  count = 1\n",
        "}\n",
        "a {\n",
        "  b {\n",
        "    /* x\n",
        "       y */\n",
        "    c = 1\n",
        "  }\n",
        "}\n",
    );

    const FULL_STACK: &str = r#"# A three-tier lab.
virtform {
  stack   = "lab"
  backend = "local"
}

variable "workers" {
  type    = number
  default = 3
}

variable "ssh_keys" {
  type    = list(string)
  default = []
}

locals {
  prefix       = "vf-${var.stack}"
  worker_names = [for i in range(var.workers) : format("worker-%02d", i + 1)]
  tags = {
    owner   = "ops"
    purpose = "lab" # free text
  }
}

image "base" {
  url    = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
  sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
}

network "lan" {
  type    = "nat"
  address = "10.77.0.1/24"
  dhcp {
    range = ["10.77.0.100", "10.77.0.200"]
  }
}

port "eth0" {
  count   = var.workers
  network = network.lan
  ip      = cidrhost(network.lan.address, 10 + count.index)
}

instance "worker" {
  count  = var.workers
  name   = local.worker_names[count.index]
  cpus   = var.workers > 2 ? 2 : 4
  memory = "2G"
  disks  = [disk.root[count.index]]
  ports  = [port.eth0[count.index]]

  wait_for {
    console = "login:"
    timeout = "120s"
  }

  cloud_init {
    user_data = templatefile("${path.module}/user-data.yaml", {
      hostname = local.worker_names[count.index]
      keys     = var.ssh_keys
    })
  }
}

output "ips" {
  value = { for i, p in port.eth0 : local.worker_names[i] => p.ip }
}
"#;

    const MULTILINE_IN: &str = r#"locals {
  names = [
  for i in range(var.workers) :
      format("w-%d", i)
  if i > 0
  ]
  size = (
    var.big
       ? "8G"
    : "2G"
  )
  by_name = {
    for p in var.ports :
    p.name => p.ip...
  }
  café = [for x in var.xs : x
  ]
}
"#;

    const MULTILINE_OUT: &str = r#"locals {
  names = [
    for i in range(var.workers) :
    format("w-%d", i)
    if i > 0
  ]
  size = (
    var.big
    ? "8G"
    : "2G"
  )
  by_name = {
    for p in var.ports :
    p.name => p.ip...
  }
  café = [for x in var.xs : x
  ]
}
"#;

    /// Inputs with the layout they must get.
    const CORPUS: &[(&str, &str)] = &[
        (DEMO_IN, DEMO_OUT),
        (MESSY_IN, MESSY_OUT),
        (EXPR_IN, EXPR_OUT),
        (HEREDOC_IN, HEREDOC_OUT),
        (NESTED_IN, NESTED_OUT),
        (TEMPLATES_IN, TEMPLATES_OUT),
        (COMMENTS_IN, COMMENTS_OUT),
        (BLANKS_IN, BLANKS_OUT),
        (EMPTY_IN, EMPTY_OUT),
        (ONELINE_IN, ONELINE_OUT),
        (CRLF_IN, CRLF_OUT),
        (VFVARS_IN, VFVARS_OUT),
        (REFLOW_IN, REFLOW_OUT),
        (MULTILINE_IN, MULTILINE_OUT),
        (FULL_STACK, FULL_STACK),
    ];

    // -- layout ------------------------------------------------------------

    #[test]
    fn demo_config() {
        check(DEMO_IN, DEMO_OUT);
    }

    #[test]
    fn misaligned_and_comment_heavy() {
        check(MESSY_IN, MESSY_OUT);
    }

    #[test]
    fn expression_spacing() {
        check(EXPR_IN, EXPR_OUT);
    }

    #[test]
    fn heredocs_are_verbatim_and_align_like_attributes() {
        check(HEREDOC_IN, HEREDOC_OUT);
    }

    #[test]
    fn nested_objects_and_multiline_arrays() {
        check(NESTED_IN, NESTED_OUT);
    }

    #[test]
    fn templates_and_strings_are_untouched() {
        check(TEMPLATES_IN, TEMPLATES_OUT);
    }

    #[test]
    fn comments_everywhere() {
        check(COMMENTS_IN, COMMENTS_OUT);
    }

    #[test]
    fn blank_lines() {
        check(BLANKS_IN, BLANKS_OUT);
    }

    #[test]
    fn empty_brackets_collapse() {
        check(EMPTY_IN, EMPTY_OUT);
    }

    #[test]
    fn one_line_blocks_stay_on_one_line() {
        check(ONELINE_IN, ONELINE_OUT);
    }

    #[test]
    fn crlf_tabs_and_trailing_whitespace() {
        check(CRLF_IN, CRLF_OUT);
    }

    #[test]
    fn multiline_expressions() {
        check(MULTILINE_IN, MULTILINE_OUT);
    }

    #[test]
    fn vfvars_file() {
        check(VFVARS_IN, VFVARS_OUT);
    }

    #[test]
    fn block_comments_move_with_their_indentation() {
        check(REFLOW_IN, REFLOW_OUT);
        // Continuation lines that cannot be dedented stay as they are.
        check("a {\n        /* x\n  y */\n  b = 1\n}\n", "a {\n  /* x\n  y */\n  b = 1\n}\n");
    }

    #[test]
    fn canonical_input_is_returned_byte_identical() {
        for (_, expected) in CORPUS {
            assert_eq!(format_source(expected).unwrap(), *expected);
        }
        check(FULL_STACK, FULL_STACK);
    }

    #[test]
    fn hclwrite_cases() {
        // Adapted from hclwrite's own formatter tests (`terraform fmt`).
        let cases = [
            ("a=1", "a = 1\n"),
            ("a=b.c", "a = b.c\n"),
            ("a=b[c]", "a = b[c]\n"),
            ("a=b()[c]", "a = b()[c]\n"),
            ("a=[\"hello\"][0]", "a = [\"hello\"][0]\n"),
            ("a=( a+2 )", "a = (a + 2)\n"),
            ("a=( a*2 )", "a = (a * 2)\n"),
            ("a=( a+-2 )", "a = (a + -2)\n"),
            ("a=( a*-2 )", "a = (a * -2)\n"),
            ("a=(-2+1)", "a = (-2 + 1)\n"),
            ("a=foo(1, -2,a*b, b,c)", "a = foo(1, -2, a * b, b, c)\n"),
            ("b{}", "b {}\n"),
            ("a = foo(\n1,\n- 2,\na*b,\nb,\nc,\n)\n", "a = foo(\n  1,\n  -2,\n  a * b,\n  b,\n  c,\n)\n"),
            ("a=[ [ ] ]", "a = [[]]\n"),
            ("a=[for x in y: x]", "a = [for x in y : x]\n"),
            ("a=[for x in [y]: x]", "a = [for x in [y] : x]\n"),
            ("a = [\n[\na\n]\n]\n", "a = [\n  [\n    a\n  ]\n]\n"),
            ("a = [[\na\n]]\n", "a = [[\n  a\n]]\n"),
            ("a = [[\n[\na\n]\n]]\n", "a = [[\n  [\n    a\n  ]\n]]\n"),
            ("b {\na = 1\n}\n", "b {\n  a = 1\n}\n"),
            ("b {a = 1}\n", "b { a = 1 }\n"),
            ("a = 1\nbungle = 2\n", "a      = 1\nbungle = 2\n"),
            ("a = 1\n\nbungle = 2\n", "a = 1\n\nbungle = 2\n"),
            ("a = 1 # foo\nbungle = 2\n", "a      = 1 # foo\nbungle = 2\n"),
            ("a = 1 # foo\nbungle = \"bonce\" # baz\n", "a      = 1       # foo\nbungle = \"bonce\" # baz\n"),
            (
                "# here we go\na = 1 # foo\nbungle = \"bonce\" # baz\n",
                "# here we go\na      = 1       # foo\nbungle = \"bonce\" # baz\n",
            ),
            (
                "foo {} # here we go\na = 1 # foo\nbungle = \"bonce\" # baz\n",
                "foo {}           # here we go\na      = 1       # foo\nbungle = \"bonce\" # baz\n",
            ),
            (
                "a = 1 # foo\nbungle = \"bonce\" # baz\nzebra = \"striped\" # baz\n",
                "a      = 1         # foo\nbungle = \"bonce\"   # baz\nzebra  = \"striped\" # baz\n",
            ),
            (
                "a = 1 # foo\nbungle = (\n    \"bonce\"\n) # baz\nzebra = \"striped\" # baz\n",
                "a = 1 # foo\nbungle = (\n  \"bonce\"\n)                 # baz\nzebra = \"striped\" # baz\n",
            ),
            (
                "a=\"apple\"# foo\nbungle=(# woo parens\n\"bonce\"\n)# baz\nzebra=\"striped\"# baz\n",
                "a = \"apple\" # foo\nbungle = (  # woo parens\n  \"bonce\"\n)                 # baz\nzebra = \"striped\" # baz\n",
            ),
            (
                "𝒜 = 1 # foo\nbungle = \"x\" # baz\nzebra = \"striped\" # baz\n",
                "𝒜      = 1         # foo\nbungle = \"x\"       # baz\nzebra  = \"striped\" # baz\n",
            ),
            ("foo {\n# ...\n}\n", "foo {\n  # ...\n}\n"),
            ("foo = {\n# ...\n}\n", "foo = {\n  # ...\n}\n"),
            ("foo = [\n# ...\n]\n", "foo = [\n  # ...\n]\n"),
            ("foo = [{\n# ...\n}]\n", "foo = [{\n  # ...\n}]\n"),
            ("foo {\nbar {\n# ...\n}\n}\n", "foo {\n  bar {\n    # ...\n  }\n}\n"),
            ("foo {\nbar = {\n# ...\n}\n}\n", "foo {\n  bar = {\n    # ...\n  }\n}\n"),
            ("foo {\nbar = [\n# ...\n]\n}\n", "foo {\n  bar = [\n    # ...\n  ]\n}\n"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn small_rules() {
        let cases = [
            // Negation and subtraction.
            ("a = - 1\nb = [- 1, - x]\nc = 5 - - 2\n", "a = -1\nb = [-1, -x]\nc = 5 - -2\n"),
            // Odd whitespace inside expressions.
            ("a =\t[1 ,2 ,  3 ]\n", "a = [1, 2, 3]\n"),
            // Object items with `:` and `,`.
            ("a = {x: 1, \"y\": 2}\n", "a = { x : 1, \"y\" : 2 }\n"),
            // `1 .5` must not turn into the number 1.5.
            ("a = [1 .5]\n", "a = [1 .5]\n"),
            // Strings, labels and interpolations keep their spaces.
            (
                "a = \"  x  +  y  \"\nb = \"${ var.x  +  1 }\"\nblock \"my  label\" {}\n",
                "a = \"  x  +  y  \"\nb = \"${ var.x  +  1 }\"\nblock \"my  label\" {}\n",
            ),
            // A closing line indents like the line that opened it.
            ("a = merge({\nx = 1\n}, {\ny = 2\n})\n", "a = merge({\n  x = 1\n  }, {\n  y = 2\n})\n"),
            // Comments after an opening bracket, in one-line blocks.
            ("a = [ # items\n1,\n]\nb { /* c */ }\n", "a = [ # items\n  1,\n]\nb { /* c */ }\n"),
            // A comment between the attributes of an alignment run breaks it.
            ("a = 1\n# c\nbbb = 2\ncc = 3\n", "a = 1\n# c\nbbb = 2\ncc  = 3\n"),
            // A block breaks the run too.
            ("a = 1\nb {}\nccc = 3\n", "a = 1\nb {}\nccc = 3\n"),
            // `<<-` heredoc whose closing marker is followed by a comment.
            ("x {\na = <<-EOT\n  hi\n  EOT # done\nbb = 1\n}\n", "x {\n  a  = <<-EOT\n  hi\n  EOT # done\n  bb = 1\n}\n"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn degenerate_inputs() {
        check("", "");
        check("\n\n  \n\t\n", "");
        check("# only a comment", "# only a comment\n");
        check("  // c1  \n\n\n/* c2 */  ", "// c1\n\n/* c2 */\n");
        check("a = 1", "a = 1\n");
        check("a = <<EOT\nx  \nEOT", "a = <<EOT\nx  \nEOT\n");
    }

    #[test]
    fn reindent_mode_keeps_spacing() {
        let text = "a {\nb  =  1 +2 # c  \n\n\n}\n";
        let body = parse_body(text).unwrap();
        let out = render(text, &body, Mode::Reindent).unwrap();
        assert_eq!(out, "a {\n  b  =  1 +2 # c\n}\n");
        assert!(Fingerprint::of(text, &body).unwrap().matches(&out));
    }

    #[test]
    fn self_check_rejects_changed_meaning_and_moved_comments() {
        let src = "a = 1 # c\nb = 2 /* x */ + /* y */ 1\n";
        let fp = Fingerprint::of(src, &parse_body(src).unwrap()).unwrap();
        assert!(fp.matches("a = 1 # c\nb = 2 /* x */ + /* y */ 1\n"));
        assert!(fp.matches("a   =   1     # c\n\nb=2/* x */+/* y */1"));
        assert!(!fp.matches("a = 1\nb = 2 /* x */ + /* y */ 1 # c\n"), "comment moved to another item");
        assert!(!fp.matches("a = 1 # c\nb = 3 /* x */ + /* y */ 1\n"), "value changed");
        assert!(!fp.matches("a = 1 # d\nb = 2 /* x */ + /* y */ 1\n"), "comment changed");
        assert!(!fp.matches("a = 1 # c\nb = 2 /* y */ + /* x */ 1\n"), "comments swapped");
        assert!(!fp.matches("a = 1 # c\nb = 2 + /* y */ 1\n"), "comment dropped");
        assert!(!fp.matches("a = 1 # c\nb = 2 /* x */ + /* y */ 1\nc = 3\n"), "attribute added");
        assert!(!fp.matches("a = {"), "does not parse");
    }

    // -- errors ------------------------------------------------------------

    fn parser_error(src: &str) -> FmtError {
        FmtError::from_parse(&parse_body(src).unwrap_err())
    }

    #[test]
    fn brief_example_is_rejected_with_position() {
        let err = format_source(BRIEF_EXAMPLE).unwrap_err();
        assert_eq!((err.line, err.column), (17, 32), "{err}");
        assert!(err.message.contains("block body"), "{err}");
        assert_eq!(err, parser_error(BRIEF_EXAMPLE));
    }

    #[test]
    fn invalid_input_reports_parser_position() {
        let cases = [
            ("a = {\n", None),
            ("a = 1\na = 2\n", Some(2)),
            ("x = \"unterminated\n", Some(1)),
            ("block \"l\" {\n  a = [1, 2\n}\n", None),
            ("a = 1 +\n", Some(1)),
            ("network \"lan\" {\n  type = \"nat\"\n  = 1\n}\n", Some(3)),
            ("a = <<EOT\nno end\n", None),
            ("a = 1 b = 2\n", Some(1)),
        ];
        for (src, line) in cases {
            let err = format_source(src).unwrap_err();
            assert_eq!(err, parser_error(src), "{src:?}");
            assert!(err.line >= 1 && err.column >= 1);
            if let Some(line) = line {
                assert_eq!(err.line, line, "{src:?}: {err}");
            }
            assert!(!err.to_string().is_empty());
        }
        // CRLF input reports the same position as its LF form.
        let crlf = "a = 1\r\nb = {\r\nc = [\r\n}\r\n";
        let e1 = format_source(crlf).unwrap_err();
        let e2 = format_source(&crlf.replace("\r\n", "\n")).unwrap_err();
        assert_eq!((e1.line, e1.column), (e2.line, e2.column));
    }

    // -- properties over the corpus ---------------------------------------

    #[test]
    fn corpus_properties() {
        for (input, expected) in CORPUS {
            check_properties(input);
            check_properties(expected);
        }
    }

    /// A tiny deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn boundaries(s: &str) -> Vec<usize> {
        (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect()
    }

    fn mutate(rng: &mut Rng, s: &str) -> String {
        const ALPHABET: &[&str] = &[
            "{", "}", "[", "]", "(", ")", "=", ",", ".", "\"", "\n", " ", "\t", "#", "/", "*", "-", "!",
            "<", "<<EOT\n", "\nEOT\n", "$", "${", "%{", "a", "1", ":", "?", "\r\n", "~", "\\", "/*", "*/",
            "//", "...", "=>", "for ", " in ", "if ", "-1", "é",
        ];
        let b = boundaries(s);
        let at = b[rng.below(b.len())];
        let to = b[(b.iter().position(|&x| x == at).unwrap() + 1 + rng.below(8)).min(b.len() - 1)];
        match rng.below(5) {
            0 => format!("{}{}", &s[..at], &s[to..]),
            1 => format!("{}{}{}", &s[..at], ALPHABET[rng.below(ALPHABET.len())], &s[at..]),
            2 => format!("{}{}{}", &s[..to], &s[at..to], &s[to..]),
            3 => format!("{}{}{}", &s[..at], ALPHABET[rng.below(ALPHABET.len())], &s[to..]),
            _ => {
                let lines: Vec<&str> = s.split('\n').collect();
                let drop = rng.below(lines.len());
                lines.iter().enumerate().filter(|(i, _)| *i != drop).map(|(_, l)| *l).collect::<Vec<_>>().join("\n")
            }
        }
    }

    /// Whitespace and comment noise: mostly still valid, in odd layouts.
    fn perturb(rng: &mut Rng, s: &str) -> String {
        const NOISE: &[&str] = &[" ", "  ", "\t", "\n", "\n\n", "\r\n", " /* c */ ", "/*x\n  y*/", " # n\n", "// n\n"];
        let b = boundaries(s);
        let at = b[rng.below(b.len())];
        if rng.below(3) == 0 {
            // Delete a run of whitespace.
            let end = at + s[at..].len() - s[at..].trim_start_matches([' ', '\t', '\n']).len();
            format!("{}{}", &s[..at], &s[end..])
        } else {
            format!("{}{}{}", &s[..at], NOISE[rng.below(NOISE.len())], &s[at..])
        }
    }

    /// Never panics; whatever formats satisfies every property, in the
    /// canonical mode (a fallback would reveal a spacing rule bug).
    fn fuzz_one(src: &str, stats: &mut (usize, usize)) {
        let result = panic::catch_unwind(AssertUnwindSafe(|| format_with_mode(src)));
        let Ok(result) = result else { panic!("panicked on {src:?}") };
        match result {
            Err(e) => {
                assert_ne!(e.message, PARSER_PANIC, "parser panicked on {src:?}");
                assert!(e.line >= 1 && e.column >= 1);
                stats.1 += 1;
            }
            Ok((out, mode)) => {
                assert_eq!(mode, Mode::Canonical, "fell back for {src:?}:\n{out}");
                assert_eq!(fmt(&out), out, "not idempotent for {src:?}");
                assert_same_meaning(src, &out);
                assert_same_comments(src, &out);
                stats.0 += 1;
            }
        }
    }

    #[test]
    fn fuzz_truncations() {
        let mut stats = (0, 0);
        for (input, _) in CORPUS {
            for (n, i) in boundaries(input).into_iter().enumerate() {
                if n % 2 == 0 {
                    fuzz_one(&input[..i], &mut stats);
                }
                if n % 5 == 0 {
                    fuzz_one(&input[i..], &mut stats);
                }
            }
        }
        assert!(stats.0 > 100 && stats.1 > 100, "{stats:?}");
    }

    #[test]
    fn fuzz_whitespace_and_comments() {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let rounds = env("VF_FMT_FUZZ_ROUNDS").unwrap_or(80);
        let mut rng = Rng(env("VF_FMT_FUZZ_SEED").unwrap_or(0x0DDB_A115_7E57_0002) | 1);
        let mut stats = (0, 0);
        for (input, _) in CORPUS {
            for _ in 0..rounds {
                let mut src = input.to_string();
                for _ in 0..=rng.below(6) {
                    src = perturb(&mut rng, &src);
                }
                fuzz_one(&src, &mut stats);
            }
        }
        eprintln!("formatted {}, rejected {}", stats.0, stats.1);
        assert!(stats.0 * 4 > stats.0 + stats.1, "{stats:?}");
    }

    #[test]
    fn fuzz_mutations() {
        // VF_FMT_FUZZ_ROUNDS / VF_FMT_FUZZ_SEED scale the run up for soak tests.
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let rounds = env("VF_FMT_FUZZ_ROUNDS").unwrap_or(80);
        let mut rng = Rng(env("VF_FMT_FUZZ_SEED").unwrap_or(0x5EED_1234_ABCD_0001) | 1);
        let mut stats = (0, 0);
        for (input, _) in CORPUS {
            for _ in 0..rounds {
                let mut src = input.to_string();
                for _ in 0..=rng.below(3) {
                    src = mutate(&mut rng, &src);
                }
                fuzz_one(&src, &mut stats);
            }
        }
        eprintln!("formatted {}, rejected {}", stats.0, stats.1);
        assert!(stats.0 > 100 && stats.1 > 100, "{stats:?}");
    }
}
