//! Times as the page shows them: how long ago ("3 min ago"), with the exact
//! UTC time on hover, read from the RFC 3339 texts the status board writes;
//! and those texts made comparable, to tell whether the last error came
//! after the last answer.

use std::time::SystemTime;

use super::html::esc;

/// An RFC 3339 time in UTC that compares as text: its fraction of a second
/// padded to nine digits (the status board writes as many as it needs).
pub(super) fn sortable(t: &str) -> String {
    let Some((head, rest)) = t.split_once('.') else {
        return t.strip_suffix('Z').map_or_else(|| t.to_owned(), |h| format!("{h}.000000000Z"));
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    format!("{head}.{:0<9}{}", &rest[..digits], &rest[digits..])
}

/// An RFC 3339 UTC time (as the status board writes it) as a `SystemTime`.
fn parse_utc(t: &str) -> Option<SystemTime> {
    let (date, rest) = t.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i32>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let clock = rest.strip_suffix('Z')?;
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.splitn(3, ':').map(|p| p.parse::<u8>().ok());
    let (h, min, sec) = (c.next()??, c.next()??, c.next()??);
    let nanos: u32 = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").get(..9)?.parse().ok()? };
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    let date = time::Date::from_calendar_date(y, month, u8::try_from(day).ok()?).ok()?;
    let at = date.with_hms_nano(h, min, sec, nanos).ok()?.assume_utc();
    Some(SystemTime::from(at))
}

/// `at` to a person: "3 min ago" (or "in 2 s" for a clock a little ahead).
pub fn ago(now: SystemTime, at: SystemTime) -> String {
    let (secs, future) = match now.duration_since(at) {
        Ok(d) => (d.as_secs(), false),
        Err(e) => (e.duration().as_secs(), true),
    };
    if secs < 2 {
        return "just now".to_owned();
    }
    let amount = match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// The exact time shown on hover: `2026-01-01 10:00:02 UTC`.
pub(super) fn exact(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A time as the page shows it: how long ago, the exact UTC time on hover.
pub(super) fn when(now: SystemTime, t: Option<&str>) -> String {
    match t.and_then(|t| parse_utc(t).map(|at| (t, at))) {
        Some((raw, at)) => {
            format!("<time datetime=\"{}\" title=\"{}\">{}</time>", esc(raw), esc(&exact(at)), esc(&ago(now, at)))
        }
        None => match t {
            Some(raw) => esc(raw),
            None => "<span class=\"muted\">never</span>".to_owned(),
        },
    }
}

pub(super) fn duration_ms(ms: Option<u64>) -> String {
    match ms {
        None => "<span class=\"muted\">no answer timed</span>".to_owned(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_how_long_ago_with_the_exact_time_on_hover() {
        let at = parse_utc("2026-01-01T10:00:02.5Z").expect("parses");
        assert_eq!(
            parse_utc("2026-01-01T10:00:02Z").map(|t| at.duration_since(t).ok()),
            Some(Some(std::time::Duration::from_millis(500)))
        );
        assert!(parse_utc("yesterday").is_none() && parse_utc("2026-13-01T10:00:00Z").is_none());
        let now = at + std::time::Duration::from_secs(185);
        assert_eq!(ago(now, at), "3 min ago");
        assert_eq!(ago(at, at), "just now");
        assert_eq!(ago(at, now), "in 3 min");
        assert_eq!(ago(now + std::time::Duration::from_secs(3 * 86_400), at), "3 days ago");
        let shown = when(now, Some("2026-01-01T10:00:02.5Z"));
        assert!(shown.contains("title=\"2026-01-01 10:00:02 UTC\"") && shown.contains(">3 min ago</time>"), "{shown}");
        assert!(when(now, None).contains("never"));
        assert_eq!(when(now, Some("<b>")), "&lt;b&gt;", "an unreadable time is shown escaped");
    }
}
