//! Expression text → AST with byte spans (lexer + precedence-climbing parser).
//!
//! Spans are byte offsets into the expression string; `file.rs` shifts them
//! into the enclosing rule file so every error points at the analyst's text.
//! The parser is recursive, so depth and length are bounded before recursion
//! can hurt: untrusted rule text must never overflow the stack.

use std::fmt;

/// Longest accepted expression, in bytes.
pub const MAX_EXPR_LEN: usize = 8 * 1024;
/// Deepest accepted nesting (parentheses, unary operators, operator chains).
pub const MAX_EXPR_DEPTH: usize = 64;

/// Half-open byte range `[start, end)` into the source it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    fn to(self, other: Span) -> Span {
        Span::new(self.start, other.end.max(self.start))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    In,
}

impl fmt::Display for BinaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::In => "in",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Num(f64),
    Str(String),
    Bool(bool),
    /// Dotted identifier, e.g. `payee.distinct_payers_1h`, `params.x`, `lists.y`.
    Ident(String),
    List(Vec<Expr>),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Call(String, Span, Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub span: Span,
    pub message: String,
}

fn err<T>(span: Span, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        span,
        message: message.into(),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    True,
    False,
    In,
    Op(&'static str),
    Eof,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("number `{n}`"),
        Tok::Str(s) => format!("string `\"{s}\"`"),
        Tok::Ident(s) => format!("name `{s}`"),
        Tok::True => "`true`".into(),
        Tok::False => "`false`".into(),
        Tok::In => "`in`".into(),
        Tok::Op(o) => format!("`{o}`"),
        Tok::Eof => "end of expression".into(),
    }
}

fn lex(src: &str) -> Result<Vec<(Tok, Span)>, ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()))
        {
            while i < bytes.len()
                && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_')
            {
                i += 1;
            }
            // Optional exponent: 1e6, 2.5E-3.
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let span = Span::new(start, i);
            if i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
                return err(Span::new(start, i + 1), "invalid number literal");
            }
            let text: String = src[start..i].chars().filter(|&c| c != '_').collect();
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => out.push((Tok::Num(n), span)),
                _ => return err(span, format!("invalid number literal `{}`", &src[start..i])),
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() {
                let b = bytes[i];
                // A dot continues the name only before a letter: `payee.kind`.
                let dotted = b == b'.'
                    && bytes
                        .get(i + 1)
                        .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_');
                if !(b.is_ascii_alphanumeric() || b == b'_' || dotted) {
                    break;
                }
                i += 1;
            }
            let word = &src[start..i];
            let tok = match word {
                "true" => Tok::True,
                "false" => Tok::False,
                "in" => Tok::In,
                "and" => return err(Span::new(start, i), "unknown operator `and`, use `&&`"),
                "or" => return err(Span::new(start, i), "unknown operator `or`, use `||`"),
                "not" => return err(Span::new(start, i), "unknown operator `not`, use `!`"),
                _ => Tok::Ident(word.to_string()),
            };
            out.push((tok, Span::new(start, i)));
            continue;
        }
        if c == b'"' || c == b'\'' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&b) = bytes.get(i) else {
                    return err(Span::new(start, src.len()), "unterminated string literal");
                };
                if b == quote {
                    i += 1;
                    break;
                }
                if b == b'\\' {
                    match bytes.get(i + 1) {
                        Some(b'\\') => s.push('\\'),
                        Some(b'"') => s.push('"'),
                        Some(b'\'') => s.push('\''),
                        Some(b'n') => s.push('\n'),
                        Some(b't') => s.push('\t'),
                        _ => {
                            return err(
                                Span::new(i, (i + 2).min(src.len())),
                                "unknown escape in string literal",
                            )
                        }
                    }
                    i += 2;
                    continue;
                }
                // Copy one whole UTF-8 character.
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                s.push(ch);
                i += ch.len_utf8().max(1);
            }
            out.push((Tok::Str(s), Span::new(start, i)));
            continue;
        }
        let two = src.get(i..i + 2).unwrap_or("");
        let op2 = match two {
            "||" => Some("||"),
            "&&" => Some("&&"),
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(op) = op2 {
            out.push((Tok::Op(op), Span::new(i, i + 2)));
            i += 2;
            continue;
        }
        let op1 = match c {
            b'!' => "!",
            b'<' => "<",
            b'>' => ">",
            b'+' => "+",
            b'-' => "-",
            b'*' => "*",
            b'/' => "/",
            b'%' => "%",
            b'(' => "(",
            b')' => ")",
            b'[' => "[",
            b']' => "]",
            b',' => ",",
            b'=' => return err(Span::new(i, i + 1), "unexpected `=`, use `==` to compare"),
            b'&' => return err(Span::new(i, i + 1), "unexpected `&`, use `&&`"),
            b'|' => return err(Span::new(i, i + 1), "unexpected `|`, use `||`"),
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return err(
                    Span::new(i, i + ch.len_utf8()),
                    format!("unexpected character `{ch}`"),
                );
            }
        };
        out.push((Tok::Op(op1), Span::new(i, i + 1)));
        i += 1;
    }
    out.push((Tok::Eof, Span::new(src.len(), src.len())));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, Span)>,
    pos: usize,
    depth: usize,
}

/// Parse one expression. Never panics; every failure carries a span.
pub fn parse_expr(src: &str) -> Result<Expr, ParseError> {
    if src.len() > MAX_EXPR_LEN {
        return err(
            Span::new(0, 0),
            format!(
                "expression is {} bytes, the limit is {MAX_EXPR_LEN}",
                src.len()
            ),
        );
    }
    if src.trim().is_empty() {
        return err(Span::new(0, src.len()), "empty expression");
    }
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr_or()?;
    let (t, span) = p.peek();
    if *t != Tok::Eof {
        return err(
            *span,
            format!("unexpected {} after the end of the expression", describe(t)),
        );
    }
    Ok(e)
}

impl Parser {
    fn peek(&self) -> &(Tok, Span) {
        // The token list always ends with Eof and `pos` never passes it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }
    fn bump(&mut self) -> (Tok, Span) {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }
    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(&self.peek().0, Tok::Op(o) if *o == op) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn enter(&mut self, span: Span) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return err(
                span,
                format!("expression nests deeper than {MAX_EXPR_DEPTH} levels"),
            );
        }
        Ok(())
    }

    fn bin(op: BinaryOp, l: Expr, r: Expr) -> Expr {
        let span = l.span.to(r.span);
        Expr {
            kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
            span,
        }
    }

    // Left-associative chains are built iteratively, yet every link adds one
    // tree level that compile/eval recurse over, so links count towards depth.
    fn expr_or(&mut self) -> Result<Expr, ParseError> {
        let entry = self.depth;
        let mut l = self.expr_and()?;
        while self.eat_op("||") {
            self.enter(l.span)?;
            let r = self.expr_and()?;
            l = Self::bin(BinaryOp::Or, l, r);
        }
        self.depth = entry;
        Ok(l)
    }
    fn expr_and(&mut self) -> Result<Expr, ParseError> {
        let entry = self.depth;
        let mut l = self.expr_cmp()?;
        while self.eat_op("&&") {
            self.enter(l.span)?;
            let r = self.expr_cmp()?;
            l = Self::bin(BinaryOp::And, l, r);
        }
        self.depth = entry;
        Ok(l)
    }
    fn expr_cmp(&mut self) -> Result<Expr, ParseError> {
        let l = self.expr_add()?;
        let op = match &self.peek().0 {
            Tok::Op("==") => BinaryOp::Eq,
            Tok::Op("!=") => BinaryOp::Ne,
            Tok::Op("<") => BinaryOp::Lt,
            Tok::Op("<=") => BinaryOp::Le,
            Tok::Op(">") => BinaryOp::Gt,
            Tok::Op(">=") => BinaryOp::Ge,
            Tok::In => BinaryOp::In,
            _ => return Ok(l),
        };
        self.bump();
        let r = self.expr_add()?;
        // Comparisons do not chain: `a < b < c` is almost always a mistake.
        if let (t @ (Tok::Op("==" | "!=" | "<" | "<=" | ">" | ">=") | Tok::In), span) = self.peek()
        {
            return err(
                *span,
                format!(
                    "comparisons cannot be chained, found {} after a comparison; use `&&`",
                    describe(t)
                ),
            );
        }
        Ok(Self::bin(op, l, r))
    }
    fn expr_add(&mut self) -> Result<Expr, ParseError> {
        let entry = self.depth;
        let mut l = self.expr_mul()?;
        loop {
            let op = match &self.peek().0 {
                Tok::Op("+") => BinaryOp::Add,
                Tok::Op("-") => BinaryOp::Sub,
                _ => break,
            };
            self.bump();
            self.enter(l.span)?;
            let r = self.expr_mul()?;
            l = Self::bin(op, l, r);
        }
        self.depth = entry;
        Ok(l)
    }
    fn expr_mul(&mut self) -> Result<Expr, ParseError> {
        let entry = self.depth;
        let mut l = self.expr_unary()?;
        loop {
            let op = match &self.peek().0 {
                Tok::Op("*") => BinaryOp::Mul,
                Tok::Op("/") => BinaryOp::Div,
                Tok::Op("%") => BinaryOp::Rem,
                _ => break,
            };
            self.bump();
            self.enter(l.span)?;
            let r = self.expr_unary()?;
            l = Self::bin(op, l, r);
        }
        self.depth = entry;
        Ok(l)
    }
    fn expr_unary(&mut self) -> Result<Expr, ParseError> {
        let (t, span) = self.peek().clone();
        let op = match t {
            Tok::Op("!") => UnaryOp::Not,
            Tok::Op("-") => UnaryOp::Neg,
            _ => return self.primary(),
        };
        self.bump();
        self.enter(span)?;
        let inner = self.expr_unary()?;
        self.depth -= 1;
        // Fold `-<number>` so `-1` is a literal, not an operation.
        if let (UnaryOp::Neg, ExprKind::Num(n)) = (op, &inner.kind) {
            return Ok(Expr {
                kind: ExprKind::Num(-n),
                span: span.to(inner.span),
            });
        }
        let s = span.to(inner.span);
        Ok(Expr {
            kind: ExprKind::Unary(op, Box::new(inner)),
            span: s,
        })
    }
    fn primary(&mut self) -> Result<Expr, ParseError> {
        let (t, span) = self.bump();
        match t {
            Tok::Num(n) => Ok(Expr {
                kind: ExprKind::Num(n),
                span,
            }),
            Tok::Str(s) => Ok(Expr {
                kind: ExprKind::Str(s),
                span,
            }),
            Tok::True => Ok(Expr {
                kind: ExprKind::Bool(true),
                span,
            }),
            Tok::False => Ok(Expr {
                kind: ExprKind::Bool(false),
                span,
            }),
            Tok::Ident(name) => {
                if self.eat_op("(") {
                    self.enter(span)?;
                    let mut args = Vec::new();
                    if !self.eat_op(")") {
                        loop {
                            args.push(self.expr_or()?);
                            if self.eat_op(")") {
                                break;
                            }
                            if !self.eat_op(",") {
                                let (t, s) = self.peek();
                                return err(
                                    *s,
                                    format!(
                                        "expected `,` or `)` in call to `{name}`, found {}",
                                        describe(t)
                                    ),
                                );
                            }
                        }
                    }
                    self.depth -= 1;
                    let end = self.toks[self.pos.saturating_sub(1)].1;
                    return Ok(Expr {
                        kind: ExprKind::Call(name, span, args),
                        span: span.to(end),
                    });
                }
                Ok(Expr {
                    kind: ExprKind::Ident(name),
                    span,
                })
            }
            Tok::Op("(") => {
                self.enter(span)?;
                let inner = self.expr_or()?;
                self.depth -= 1;
                let (t, s) = self.peek().clone();
                if !self.eat_op(")") {
                    // At the end of the text the place to fix is the `(` left open, not
                    // the end of the line.
                    if t == Tok::Eof {
                        return err(span, "this `(` is never closed: add a `)`");
                    }
                    return err(
                        s,
                        format!(
                            "expected `)` to close the `(` before, found {}",
                            describe(&t)
                        ),
                    );
                }
                Ok(inner)
            }
            Tok::Op("[") => {
                self.enter(span)?;
                let mut items = Vec::new();
                if !self.eat_op("]") {
                    loop {
                        items.push(self.expr_or()?);
                        if self.eat_op("]") {
                            break;
                        }
                        if !self.eat_op(",") {
                            let (t, s) = self.peek();
                            return err(
                                *s,
                                format!("expected `,` or `]` in list, found {}", describe(t)),
                            );
                        }
                        // Allow a trailing comma.
                        if self.eat_op("]") {
                            break;
                        }
                    }
                }
                self.depth -= 1;
                let end = self.toks[self.pos.saturating_sub(1)].1;
                Ok(Expr {
                    kind: ExprKind::List(items),
                    span: span.to(end),
                })
            }
            other => err(
                span,
                format!("expected a value, found {}", describe(&other)),
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_spans() {
        let e = parse_expr("a.b > 1 + 2 * 3 && !c").unwrap();
        let ExprKind::Binary(BinaryOp::And, l, r) = &e.kind else {
            panic!("{e:?}")
        };
        assert!(matches!(r.kind, ExprKind::Unary(UnaryOp::Not, _)));
        let ExprKind::Binary(BinaryOp::Gt, a, sum) = &l.kind else {
            panic!()
        };
        assert_eq!(a.span, Span::new(0, 3));
        assert!(matches!(sum.kind, ExprKind::Binary(BinaryOp::Add, _, _)));
        assert_eq!(e.span, Span::new(0, 21));
    }

    #[test]
    fn lists_calls_literals() {
        let e =
            parse_expr(r#"scene in ["P2P", 'RED',] && max(x, 1) > -2.5e1 && s == "a\"b""#).unwrap();
        assert!(matches!(e.kind, ExprKind::Binary(BinaryOp::And, _, _)));
        assert!(parse_expr("1_000_000 == 1000000").is_ok());
    }

    #[test]
    fn errors_have_spans() {
        let e = parse_expr("a == ").unwrap_err();
        assert_eq!(e.span, Span::new(5, 5));
        let e = parse_expr("a = 1").unwrap_err();
        assert_eq!(e.span, Span::new(2, 3));
        let e = parse_expr("x > 1 && (a && b").unwrap_err();
        assert!(e.message.contains("never closed"), "{e}");
        assert_eq!(e.span, Span::new(9, 10), "at the unclosed `(`");
        let e = parse_expr("(a && b c").unwrap_err();
        assert!(
            e.message.contains("`)`") && e.message.contains("`c`"),
            "{e}"
        );
        let e = parse_expr("a < b < c").unwrap_err();
        assert!(e.message.contains("chained"));
        let e = parse_expr("x and y").unwrap_err();
        assert!(e.message.contains("&&"));
        assert!(parse_expr("\"abc").is_err());
        assert!(parse_expr("").is_err());
        assert!(parse_expr("1 2").is_err());
    }

    #[test]
    fn depth_limit() {
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(parse_expr(&deep).unwrap_err().message.contains("deeper"));
        let bangs = format!("{}true", "!".repeat(1000));
        assert!(parse_expr(&bangs).is_err());
        let chain = vec!["a"; 500].join(" && ");
        assert!(parse_expr(&chain).is_err());
        let ok = vec!["a"; 30].join(" && ");
        assert!(parse_expr(&ok).is_ok());
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        const TOKENS: &[&str] = &[
            "a",
            "payee.kind",
            "1",
            "-",
            "+",
            "*",
            "/",
            "%",
            "(",
            ")",
            "[",
            "]",
            ",",
            "&&",
            "||",
            "!",
            "==",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "in",
            "\"x\"",
            "'",
            "\"",
            "true",
            "max(",
            "lists.l",
            " ",
            ".",
            "1e9",
            "_",
        ];

        proptest! {
            #[test]
            fn never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
                let _ = parse_expr(&s);
            }

            #[test]
            fn never_panics_on_token_soup(toks in proptest::collection::vec(0..TOKENS.len(), 0..300)) {
                let s: String = toks.iter().map(|i| TOKENS[*i]).collect::<Vec<_>>().join(" ");
                if let Err(e) = parse_expr(&s) {
                    prop_assert!(e.span.start <= e.span.end && e.span.end <= s.len());
                }
            }
        }
    }
}
