//! Timestamps as configuration-management tools write them: RFC 3339
//! (Puppet 4+, PuppetDB, Chef), Ruby's `Time#to_s` of old Puppet YAML
//! (`2010-07-22 12:17:49.762707 -07:00`) and Chef's JsonFile handler
//! (`2019-12-10 20:15:10 +0000`).

use jiff::Timestamp;

/// Unix milliseconds of `text`, or why it is not a timestamp.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let ts = t
        .parse::<Timestamp>()
        .or_else(|_| ruby_time(t).parse::<Timestamp>())
        .map_err(|_| format!("{:?} is not a timestamp", crate::run::cut_to(t, 64)))?;
    let ms = ts.as_millisecond();
    if ms < 0 {
        return Err(format!("{t:?} is before 1970"));
    }
    Ok(ms as u64)
}

/// `2010-07-22 12:17:49.7 -07:00` → `2010-07-22T12:17:49.7-07:00`;
/// `+0000` → `+00:00`.
fn ruby_time(t: &str) -> String {
    let mut s = t.replacen(' ', "T", 1);
    if let Some(i) = s.rfind(' ') {
        let (head, zone) = s.split_at(i);
        let zone = zone.trim();
        let zone = if zone.len() == 5 && zone.is_char_boundary(3) && !zone.contains(':') {
            format!("{}:{}", &zone[..3], &zone[3..])
        } else if zone == "UTC" {
            "Z".to_string()
        } else {
            zone.to_string()
        };
        s = format!("{head}{zone}");
    }
    s
}

/// RFC 3339 text of unix milliseconds, in UTC.
pub fn format_ms(ms: u64) -> String {
    Timestamp::from_millisecond(ms as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shapes_tools_write_parse() {
        let a = parse_ms("2010-07-22 12:17:49.762707 -07:00").unwrap();
        let b = parse_ms("2010-07-22T19:17:49.762707Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            parse_ms("2019-12-10 20:15:10 +0000").unwrap(),
            parse_ms("2019-12-10T20:15:10Z").unwrap()
        );
        assert!(parse_ms("2026-11-22T01:11:57.726690504+00:00").is_ok());
        assert!(parse_ms("yesterday")
            .unwrap_err()
            .contains("not a timestamp"));
    }
}
