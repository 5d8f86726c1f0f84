//! A small walker over parsed TOML that collects *every* problem with its key
//! path (`route[1].upstream`), instead of stopping at the first as serde does.

use std::fmt;
use std::time::Duration;

use toml::{Table, Value};

/// One problem in a config file, with the key path it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, `server.listen[0]`; empty for the file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects errors and warnings while a config is validated.
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// `parent.key`, or `key` at the top.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The TOML type name of a value, for "expected a string, found an integer".
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// Reports every key of `table` that is not in `allowed`, suggesting a near miss.
pub fn check_keys(report: &mut Report, table: &Table, path: &str, allowed: &[&str]) {
    for key in table.keys() {
        if !allowed.contains(&key.as_str()) {
            let hint = allowed
                .iter()
                .find(|a| edit_distance(a, key) <= 2)
                .map(|a| format!(" (did you mean {a:?}?)"))
                .unwrap_or_else(|| format!("; expected one of: {}", allowed.join(", ")));
            report.error(join(path, key), format!("unknown key{hint}"));
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Typed accessors over one table; each reports a wrong type at its key path.
pub struct Section<'a> {
    pub table: &'a Table,
    pub path: String,
}

impl<'a> Section<'a> {
    pub fn new(table: &'a Table, path: impl Into<String>) -> Self {
        Section {
            table,
            path: path.into(),
        }
    }

    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    pub fn str(&self, report: &mut Report, key: &str) -> Option<&'a str> {
        match self.table.get(key)? {
            Value::String(s) => Some(s),
            other => {
                report.error(
                    self.key_path(key),
                    format!("expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn bool(&self, report: &mut Report, key: &str) -> Option<bool> {
        match self.table.get(key)? {
            Value::Boolean(b) => Some(*b),
            other => {
                report.error(
                    self.key_path(key),
                    format!("expected true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn table(&self, report: &mut Report, key: &str) -> Option<Section<'a>> {
        match self.table.get(key)? {
            Value::Table(t) => Some(Section::new(t, self.key_path(key))),
            other => {
                report.error(
                    self.key_path(key),
                    format!("expected a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A humantime duration such as `"40s"` or `"1m 30s"`; must be above zero.
    pub fn duration(&self, report: &mut Report, key: &str) -> Option<Duration> {
        let s = self.str(report, key)?;
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() => {
                report.error(self.key_path(key), "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                report.error(
                    self.key_path(key),
                    format!("invalid duration {s:?} ({e}); write e.g. \"40s\" or \"2m\""),
                );
                None
            }
        }
    }

    /// A duration that may be zero (`"0s"`: off).
    pub fn duration_or_zero(&self, report: &mut Report, key: &str) -> Option<Duration> {
        let s = self.str(report, key)?;
        match humantime::parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                report.error(
                    self.key_path(key),
                    format!("invalid duration {s:?} ({e}); write e.g. \"0s\" or \"5s\""),
                );
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn integer(&self, report: &mut Report, key: &str, min: i64, max: i64) -> Option<i64> {
        match self.table.get(key)? {
            Value::Integer(n) if (min..=max).contains(n) => Some(*n),
            Value::Integer(n) => {
                report.error(
                    self.key_path(key),
                    format!("{n} is out of range; must be between {min} and {max}"),
                );
                None
            }
            other => {
                report.error(
                    self.key_path(key),
                    format!("expected an integer, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A byte size such as `"12MiB"` (or a plain integer of bytes); must be above zero.
    pub fn size(&self, report: &mut Report, key: &str) -> Option<u64> {
        let bytes = match self.table.get(key)? {
            Value::Integer(n) if *n > 0 => *n as u64,
            Value::String(s) => match s.trim().parse::<bytesize::ByteSize>() {
                Ok(b) => b.as_u64(),
                Err(e) => {
                    report.error(
                        self.key_path(key),
                        format!("invalid size {s:?} ({e}); write e.g. \"12MiB\""),
                    );
                    return None;
                }
            },
            other => {
                report.error(
                    self.key_path(key),
                    format!(
                        "expected a size such as \"12MiB\", found {}",
                        type_name(other)
                    ),
                );
                return None;
            }
        };
        if bytes == 0 {
            report.error(self.key_path(key), "must be larger than zero");
            return None;
        }
        Some(bytes)
    }

    /// Runs `get`, and reports `key` as required when it is absent.
    pub fn require<T>(
        &self,
        report: &mut Report,
        key: &str,
        get: impl FnOnce(&mut Report) -> Option<T>,
    ) -> Option<T> {
        let value = get(report);
        if value.is_none() && !self.table.contains_key(key) {
            report.error(self.key_path(key), "is required");
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_suggest_the_nearest_known_key() {
        let t: Table = toml::from_str("lisen = 1\nbogus = 2").unwrap();
        let mut r = Report::default();
        check_keys(&mut r, &t, "server", &["listen", "timeout"]);
        let msgs: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "server.bogus: unknown key; expected one of: listen, timeout",
                "server.lisen: unknown key (did you mean \"listen\"?)",
            ]
        );
    }

    #[test]
    fn sizes_and_durations_parse_with_units() {
        let t: Table =
            toml::from_str("a = \"12MiB\"\nb = \"40s\"\nc = \"12 parsecs\"\nd = \"0s\"\ne = 1024")
                .unwrap();
        let s = Section::new(&t, "server");
        let mut r = Report::default();
        assert_eq!(s.size(&mut r, "a"), Some(12 * 1024 * 1024));
        assert_eq!(s.duration(&mut r, "b"), Some(Duration::from_secs(40)));
        assert_eq!(s.size(&mut r, "c"), None);
        assert_eq!(s.duration(&mut r, "d"), None);
        assert_eq!(s.size(&mut r, "e"), Some(1024));
        let paths: Vec<&str> = r.errors.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["server.c", "server.d"]);
    }
}
