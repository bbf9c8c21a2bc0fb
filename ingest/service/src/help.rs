//! The `--help` list of settings, read from a binary's `Config::default()`, so it cannot
//! drift from the configuration type: every table and key the type serializes is listed.
//!
//! ```text
//!   [[feeds]] authors_allow, authors_deny, …   one line per table (wrapped), tables
//!   [relay]   future_cursor_limit, …            and keys in alphabetical order; a hint
//!   [stream]  compression (s2|none), …         after a key where one is given
//! ```

use figment::value::{Dict, Value};
use serde::Serialize;

/// Width the key lists wrap at.
const WIDTH: usize = 92;

/// A binary's `--help` epilogue: where settings come from (`env_prefix`, e.g.
/// `BSKY_INGEST_`), every key of `defaults` ([`keys`], with `hints`), how durations are
/// written, then `notes` (the binary's own, may be empty).
pub fn settings<T: Serialize>(
    env_prefix: &str,
    defaults: &T,
    hints: &[(&str, &str)],
    notes: &str,
) -> String {
    let keys = keys(defaults, hints)
        .unwrap_or_else(|e| format!("  (the settings cannot be listed: {e})\n"));
    format!(
        "Every setting can also come from a TOML file (--config) or the environment \
(prefix {env_prefix}, nesting with __, e.g. {env_prefix}NATS__URL). Precedence: defaults < file < \
environment < flags. Settings (file keys):\n{keys}\
Durations are written like \"500ms\", \"5s\", \"2m\", \"72h\".\n{notes}"
    )
}

/// The settings' keys of `defaults`, table by table. `hints` adds a note after a key,
/// e.g. `("stream.compression", "s2|none")`. An array of tables is listed as `[[name]]`
/// with its first element's keys (give a default with one element).
pub fn keys<T: Serialize>(
    defaults: &T,
    hints: &[(&str, &str)],
) -> Result<String, Box<figment::Error>> {
    let Value::Dict(_, top) = Value::serialize(defaults)? else {
        return Ok(String::new());
    };
    let mut tables = Vec::new();
    collect(&top, "", false, &mut tables);
    let label_width = tables.iter().map(|t| t.0.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, path, keys) in tables {
        let keys: Vec<String> = keys
            .iter()
            .map(|k| {
                let dotted = format!("{path}{k}");
                match hints.iter().find(|(h, _)| *h == dotted) {
                    Some((_, hint)) => format!("{k} ({hint})"),
                    None => k.clone(),
                }
            })
            .collect();
        let mut line = format!("  {label:label_width$} ");
        let indent = line.len();
        let mut at_start = true;
        for (i, k) in keys.iter().enumerate() {
            let piece = if i + 1 < keys.len() {
                format!("{k},")
            } else {
                k.clone()
            };
            let last_line = line.rsplit('\n').next().unwrap_or("");
            if !at_start && last_line.len() + 1 + piece.len() > WIDTH {
                line.push('\n');
                line.push_str(&" ".repeat(indent));
            } else if !at_start {
                line.push(' ');
            }
            line.push_str(&piece);
            at_start = false;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// (label, dotted path prefix, keys) of each table under `dict`, the tables in order.
fn collect(dict: &Dict, path: &str, array: bool, out: &mut Vec<(String, String, Vec<String>)>) {
    let name = path.trim_end_matches('.');
    let keys: Vec<String> = dict
        .iter()
        .filter(|(_, v)| !is_table(v))
        .map(|(k, _)| k.clone())
        .collect();
    if !keys.is_empty() {
        let label = if array {
            format!("[[{name}]]")
        } else {
            format!("[{name}]")
        };
        out.push((label, path.to_string(), keys));
    }
    for (k, v) in dict {
        let sub = format!("{path}{k}.");
        match v {
            Value::Dict(_, d) => collect(d, &sub, false, out),
            Value::Array(_, items) => {
                if let Some(Value::Dict(_, d)) = items.first() {
                    collect(d, &sub, true, out);
                }
            }
            _ => {}
        }
    }
}

/// A table, or an array of tables (listed on its own).
fn is_table(v: &Value) -> bool {
    match v {
        Value::Dict(..) => true,
        Value::Array(_, items) => matches!(items.first(), Some(Value::Dict(..))),
        _ => false,
    }
}

/// Parses the command line of `F`, its `--help` ending with `after` (built at run time,
/// e.g. around [`keys`]); exits as clap does on `--help` or a bad flag.
pub fn parse_flags<F: clap::Parser>(after: String) -> F {
    let matches = <F as clap::CommandFactory>::command()
        .after_help(after)
        .get_matches();
    <F as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The dotted keys of `defaults` that `help` (a whole `--help` text) does not list under
/// their table: empty when the list is complete. For the binaries' tests.
pub fn missing<T: Serialize>(help: &str, defaults: &T) -> Result<Vec<String>, Box<figment::Error>> {
    let Value::Dict(_, top) = Value::serialize(defaults)? else {
        return Ok(Vec::new());
    };
    let mut tables = Vec::new();
    collect(&top, "", false, &mut tables);
    // What the text lists: a table line `  [name] k, k (hint),` and its continuations.
    let mut listed: Vec<(String, Vec<String>)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        let (label, rest) = match t.strip_prefix('[') {
            Some(_) => match t.find(char::is_whitespace) {
                Some(i) => (Some(&t[..i]), &t[i..]),
                None => (Some(t), ""),
            },
            None => (None, t),
        };
        match (label, listed.last_mut()) {
            (Some(l), _) => listed.push((l.to_string(), Vec::new())),
            (None, None) => continue,
            (None, Some(_)) if !line.starts_with("   ") => continue,
            (None, Some(_)) => {}
        }
        if let Some((_, keys)) = listed.last_mut() {
            keys.extend(
                rest.split(',')
                    .filter_map(|k| k.split_whitespace().next())
                    .map(str::to_string),
            );
        }
    }
    let mut missing = Vec::new();
    for (label, path, keys) in tables {
        let have = listed.iter().find(|(l, _)| *l == label).map(|(_, k)| k);
        for k in keys {
            if !have.is_some_and(|h| h.contains(&k)) {
                missing.push(format!("{path}{k}"));
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Config {
        nats: Nats,
        feeds: Vec<Feed>,
        stream: Stream,
    }
    #[derive(Serialize)]
    struct Nats {
        url: String,
        password: Option<String>,
    }
    #[derive(Serialize)]
    struct Stream {
        name: String,
        compression: String,
        mirror: Mirror,
    }
    #[derive(Serialize)]
    struct Mirror {
        upstream: Option<String>,
    }
    #[derive(Serialize)]
    struct Feed {
        name: String,
        langs: Vec<String>,
    }

    #[test]
    fn every_table_and_key_is_listed_with_its_hint() -> Result<(), Box<figment::Error>> {
        let c = Config {
            nats: Nats {
                url: "nats://x".into(),
                password: None,
            },
            feeds: vec![Feed {
                name: "f".into(),
                langs: vec![],
            }],
            stream: Stream {
                name: "BSKY".into(),
                compression: "s2".into(),
                mirror: Mirror { upstream: None },
            },
        };
        let text = keys(&c, &[("stream.compression", "s2|none")])?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "  [[feeds]]       langs, name",
                "  [nats]          password, url",
                "  [stream]        compression (s2|none), name",
                "  [stream.mirror] upstream",
            ],
            "{text}"
        );
        assert!(missing(&text, &c)?.is_empty());
        let without_name = text.replace("langs, name", "langs");
        assert_eq!(missing(&without_name, &c)?, ["feeds.name"]);
        Ok(())
    }
}
