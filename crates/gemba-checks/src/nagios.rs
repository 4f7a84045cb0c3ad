//! The Nagios plugin interface: exit codes 0/1/2/3 and the output format
//! `TEXT | 'label'=value[UOM];[warn];[crit];[min];[max] ...`, where
//! further lines are long text and may carry more performance data after
//! a `|`.

use serde::{Deserialize, Serialize};

/// A check's status as a Nagios plugin reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    pub fn from_exit(code: i32) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::Warning,
            2 => Status::Critical,
            _ => Status::Unknown,
        }
    }

    pub fn code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Severity order for "the worst of several", as Nagios ranks them:
    /// CRITICAL > WARNING > UNKNOWN > OK.
    pub fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warning => 2,
            Status::Critical => 3,
        }
    }
}

/// One performance-data item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Perf {
    pub label: String,
    pub value: f64,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub uom: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max: Option<f64>,
}

/// Splits plugin output into its text and performance data.
pub fn parse_output(raw: &str) -> (String, Vec<Perf>) {
    let mut text = Vec::new();
    let mut perf = Vec::new();
    let mut lines = raw.lines();
    if let Some(first) = lines.next() {
        let (t, p) = split_pipe(first);
        text.push(t.trim().to_string());
        perf.extend(parse_perfdata(p));
    }
    // Long text; after the first `|` in it, the rest is perfdata.
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf.extend(parse_perfdata(line));
            continue;
        }
        let (t, p) = split_pipe(line);
        text.push(t.trim_end().to_string());
        if !p.is_empty() {
            in_perf = true;
            perf.extend(parse_perfdata(p));
        }
    }
    while text.last().is_some_and(|t| t.is_empty()) {
        text.pop();
    }
    (text.join("\n"), perf)
}

fn split_pipe(line: &str) -> (&str, &str) {
    match line.split_once('|') {
        Some((t, p)) => (t, p),
        None => (line, ""),
    }
}

/// Parses `'label'=value[UOM];warn;crit;min;max` items separated by
/// spaces; labels may be quoted and then contain spaces. Malformed items
/// are skipped.
pub fn parse_perfdata(s: &str) -> Vec<Perf> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (label, after) = if let Some(r) = rest.strip_prefix('\'') {
            match r.find("'=") {
                Some(end) => (&r[..end], &r[end + 2..]),
                None => break,
            }
        } else {
            match rest.find('=') {
                Some(eq) => (&rest[..eq], &rest[eq + 1..]),
                None => break,
            }
        };
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let spec = &after[..end];
        rest = after[end..].trim_start();
        let mut fields = spec.split(';');
        let value_uom = fields.next().unwrap_or("");
        let num_end = value_uom
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(value_uom.len());
        let Ok(value) = value_uom[..num_end].parse::<f64>() else {
            continue;
        };
        let opt = |f: Option<&str>| f.filter(|s| !s.is_empty()).map(str::to_string);
        let warn = opt(fields.next());
        let crit = opt(fields.next());
        let min = fields.next().and_then(|s| s.parse().ok());
        let max = fields.next().and_then(|s| s.parse().ok());
        out.push(Perf {
            label: label.trim().to_string(),
            value,
            uom: value_uom[num_end..].to_string(),
            warn,
            crit,
            min,
            max,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_tcp_output_gives_text_and_time() {
        let (t, p) = parse_output(
            "TCP OK - 0.000 second response time on 127.0.0.1 port 22|time=0.000123s;;;0.000000;10.000000\n",
        );
        assert_eq!(
            t,
            "TCP OK - 0.000 second response time on 127.0.0.1 port 22"
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].label, "time");
        assert_eq!(p[0].uom, "s");
        assert!((p[0].value - 0.000123).abs() < 1e-9);
        assert_eq!(p[0].min, Some(0.0));
        assert_eq!(p[0].max, Some(10.0));
    }

    #[test]
    fn quoted_labels_and_long_text_perfdata() {
        let (t, p) = parse_output(
            "DISK OK - free space: / 3326 MB (56%); | '/ used'=2643MB;5948;5958;0;5968\n/ 15272 MB (77%);\n/boot 68 MB (69%); | /boot=68MB;88;93;0;98\n/home=69357MB;253404;253409;0;253414",
        );
        assert_eq!(
            t,
            "DISK OK - free space: / 3326 MB (56%);\n/ 15272 MB (77%);\n/boot 68 MB (69%);"
        );
        let labels: Vec<&str> = p.iter().map(|x| x.label.as_str()).collect();
        assert_eq!(labels, ["/ used", "/boot", "/home"]);
        assert_eq!(p[0].warn.as_deref(), Some("5948"));
        assert_eq!(p[0].crit.as_deref(), Some("5958"));
    }

    #[test]
    fn exit_codes_map_like_nagios() {
        assert_eq!(Status::from_exit(0), Status::Ok);
        assert_eq!(Status::from_exit(2), Status::Critical);
        assert_eq!(Status::from_exit(3), Status::Unknown);
        assert_eq!(Status::from_exit(127), Status::Unknown);
        assert!(Status::Critical.severity() > Status::Warning.severity());
        assert!(Status::Warning.severity() > Status::Unknown.severity());
    }
}
