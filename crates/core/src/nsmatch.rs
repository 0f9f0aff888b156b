//! Namespace patterns of `--nsInclude`, `--nsExclude` and `--nsFrom`/`--nsTo`.
//!
//! A pattern is matched against the whole `db.coll` string. `*` matches any run of characters
//! (dots included), `\*` is a literal `*` and `\\` a literal backslash. In renames, either every
//! `*` of the source pattern maps in order to a `*` of the target pattern, or named variables
//! `$name$` are used (each at most once in the source, reusable in the target). Several renames
//! are tried from the last given to the first, and the first match wins (mongorestore's rules).

use regex::Regex;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(String),
    Star,
    Var(String),
}

fn tokenize(pattern: &str, allow_vars: bool) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut chars = pattern.chars();
    let flush = |literal: &mut String, tokens: &mut Vec<Token>| {
        if !literal.is_empty() {
            tokens.push(Token::Literal(std::mem::take(literal)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => literal.push(next),
                None => {
                    return Err(Error::Options(format!(
                        "pattern '{pattern}' ends with an escape character"
                    )));
                }
            },
            '*' => {
                flush(&mut literal, &mut tokens);
                tokens.push(Token::Star);
            }
            '$' if allow_vars => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('$') => break,
                        Some(ch) => name.push(ch),
                        None => return Err(Error::Options(format!("unterminated variable in pattern '{pattern}'"))),
                    }
                }
                if name.is_empty() {
                    return Err(Error::Options(format!("empty variable name in pattern '{pattern}'")));
                }
                flush(&mut literal, &mut tokens);
                tokens.push(Token::Var(name));
            }
            '$' => {
                return Err(Error::Options(format!(
                    "'$' is not allowed in include/exclude patterns: '{pattern}'"
                )));
            }
            other => literal.push(other),
        }
    }
    flush(&mut literal, &mut tokens);
    Ok(tokens)
}

fn to_regex(tokens: &[Token]) -> Result<Regex> {
    let mut re = String::from("^");
    for t in tokens {
        match t {
            Token::Literal(s) => re.push_str(&regex::escape(s)),
            Token::Star | Token::Var(_) => re.push_str("(.*?)"),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| Error::Options(format!("invalid namespace pattern: {e}")))
}

/// A set of include/exclude patterns.
#[derive(Debug, Clone, Default)]
pub struct NamespaceMatcher {
    patterns: Vec<Regex>,
}

impl NamespaceMatcher {
    /// Compiles the patterns.
    ///
    /// # Errors
    /// [`Error::Options`] for a `$`, a trailing `\` or an invalid pattern.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let patterns = patterns
            .iter()
            .map(|p| to_regex(&tokenize(p.as_ref(), false)?))
            .collect::<Result<_>>()?;
        Ok(Self { patterns })
    }

    /// Whether there are no patterns.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern matches the namespace.
    #[must_use]
    pub fn matches(&self, namespace: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(namespace))
    }
}

#[derive(Debug, Clone)]
struct Rename {
    from: Regex,
    from_tokens: Vec<Token>,
    to: Vec<Token>,
}

/// `--nsFrom`/`--nsTo` pairs.
#[derive(Debug, Clone, Default)]
pub struct NamespaceRenamer {
    renames: Vec<Rename>,
}

impl NamespaceRenamer {
    /// Compiles the pairs.
    ///
    /// # Errors
    /// [`Error::Options`] when the lists differ in length, star counts differ, a variable repeats
    /// in a source pattern or is unknown in a target pattern.
    pub fn new<S: AsRef<str>>(from: &[S], to: &[S]) -> Result<Self> {
        if from.len() != to.len() {
            return Err(Error::Options(
                "--nsFrom and --nsTo arguments must be specified an equal number of times".into(),
            ));
        }
        let mut renames = Vec::new();
        for (f, t) in from.iter().zip(to) {
            let (f, t) = (f.as_ref(), t.as_ref());
            let from_tokens = tokenize(f, true)?;
            let to_tokens = tokenize(t, true)?;
            let stars = |ts: &[Token]| ts.iter().filter(|t| **t == Token::Star).count();
            if stars(&from_tokens) != stars(&to_tokens) {
                return Err(Error::Options(format!(
                    "--nsFrom '{f}' and --nsTo '{t}' must contain the same number of asterisks"
                )));
            }
            let mut seen = Vec::new();
            for tok in &from_tokens {
                if let Token::Var(name) = tok {
                    if seen.contains(name) {
                        return Err(Error::Options(format!(
                            "variable ${name}$ appears more than once in --nsFrom '{f}'"
                        )));
                    }
                    seen.push(name.clone());
                }
            }
            for tok in &to_tokens {
                if let Token::Var(name) = tok
                    && !seen.contains(name)
                {
                    return Err(Error::Options(format!(
                        "variable ${name}$ of --nsTo '{t}' is not defined in --nsFrom '{f}'"
                    )));
                }
            }
            renames.push(Rename {
                from: to_regex(&from_tokens)?,
                from_tokens,
                to: to_tokens,
            });
        }
        Ok(Self { renames })
    }

    /// Whether there are no renames.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.renames.is_empty()
    }

    /// The renamed namespace (the input itself when no rename matches).
    #[must_use]
    pub fn rename(&self, namespace: &str) -> String {
        for r in self.renames.iter().rev() {
            let Some(caps) = r.from.captures(namespace) else {
                continue;
            };
            let mut stars = Vec::new();
            let mut vars = Vec::new();
            let mut group = 1;
            for tok in &r.from_tokens {
                match tok {
                    Token::Star => {
                        stars.push(caps.get(group).map_or("", |m| m.as_str()));
                        group += 1;
                    }
                    Token::Var(name) => {
                        vars.push((name.as_str(), caps.get(group).map_or("", |m| m.as_str())));
                        group += 1;
                    }
                    Token::Literal(_) => {}
                }
            }
            let mut stars = stars.into_iter();
            let mut out = String::new();
            for tok in &r.to {
                match tok {
                    Token::Literal(s) => out.push_str(s),
                    Token::Star => out.push_str(stars.next().unwrap_or_default()),
                    Token::Var(name) => {
                        out.push_str(vars.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v));
                    }
                }
            }
            return out;
        }
        namespace.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_patterns() {
        let m = NamespaceMatcher::new(&["db1.c*", "a\\*b.x"]).unwrap();
        assert!(m.matches("db1.c1") && m.matches("db1.c") && m.matches("db1.c.d"));
        assert!(!m.matches("db1.d1") && !m.matches("xdb1.c1"));
        assert!(m.matches("a*b.x") && !m.matches("azb.x"));
        assert!(NamespaceMatcher::new(&["*"]).unwrap().matches("anything.at.all"));
        assert!(NamespaceMatcher::new(&["a$b"]).is_err());
    }

    #[test]
    fn renames_with_stars_and_variables() {
        // FORMATS.md 6.2 testdirs: db1.* → db4.test.*
        let r = NamespaceRenamer::new(&["db1.*"], &["db4.test.*"]).unwrap();
        assert_eq!(r.rename("db1.c1"), "db4.test.c1");
        assert_eq!(r.rename("db2.c1"), "db2.c1");
        let r = NamespaceRenamer::new(&["$db$.$coll$"], &["$coll$.$db$"]).unwrap();
        assert_eq!(r.rename("a.b"), "b.a");
        // Last rename first.
        let r = NamespaceRenamer::new(&["a.*", "a.x"], &["b.*", "c.y"]).unwrap();
        assert_eq!(r.rename("a.x"), "c.y");
        assert_eq!(r.rename("a.z"), "b.z");
        assert!(NamespaceRenamer::new(&["a.*"], &["b.c"]).is_err());
        let err = NamespaceRenamer::new(&["a.*"], &[] as &[&str]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--nsFrom and --nsTo arguments must be specified an equal number of times"
        );
    }
}
