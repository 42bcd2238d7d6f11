//! What differs between a stream as JetStream has it and as the configuration
//! wants it (settings follow the configuration). The
//! differences fall in two kinds: what JetStream changes in place with a
//! stream update (replicas, limits, discard policy, ...), applied at start,
//! and what it cannot change (retention, storage, and turning protections
//! off), which stops the start with an error naming the field and what to do.
//!
//! Only the settings the bridge declares are compared; values the server
//! fills in when none is given (a 2-minute duplicate window, `-1` for "no
//! limit") are read as the declaration meant them.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

/// One setting that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The JetStream name of the setting (`num_replicas`, `max_bytes`, ...).
    pub field: &'static str,
    pub have: String,
    pub want: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.field, self.have, self.want)
    }
}

/// All differences of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// JetStream applies these with a stream update.
    pub in_place: Vec<Change>,
    /// JetStream refuses to change these on an existing stream.
    pub fixed: Vec<Change>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.in_place.is_empty() && self.fixed.is_empty()
    }
}

/// Joins changes for a log line or an error: `max_bytes 1024 -> 2048, ...`.
pub fn describe(changes: &[Change]) -> String {
    changes.iter().map(Change::to_string).collect::<Vec<_>>().join(", ")
}

/// The differences between `have` (from the server) and `want`.
pub fn diff(have: &Config, want: &Config) -> Diff {
    let mut d = Diff::default();
    let mut in_place = |field, have: String, want: String| {
        if have != want {
            d.in_place.push(Change { field, have, want });
        }
    };
    let mut subjects_have = have.subjects.clone();
    let mut subjects_want = want.subjects.clone();
    subjects_have.sort();
    subjects_want.sort();
    in_place("subjects", subjects_have.join(" "), subjects_want.join(" "));
    in_place("num_replicas", have.num_replicas.max(1).to_string(), want.num_replicas.max(1).to_string());
    in_place("max_bytes", limit(have.max_bytes), limit(want.max_bytes));
    in_place("max_msgs", limit(have.max_messages), limit(want.max_messages));
    in_place("max_msgs_per_subject", limit(have.max_messages_per_subject), limit(want.max_messages_per_subject));
    in_place("max_age", age(have.max_age), age(want.max_age));
    in_place("discard", discard(have.discard).into(), discard(want.discard).into());
    if !want.duplicate_window.is_zero() {
        in_place("duplicate_window", age(have.duplicate_window), age(want.duplicate_window));
    }
    in_place("allow_direct", have.allow_direct.to_string(), want.allow_direct.to_string());
    in_place("allow_rollup_hdrs", have.allow_rollup.to_string(), want.allow_rollup.to_string());
    if want.description.is_some() {
        in_place("description", format!("{:?}", have.description), format!("{:?}", want.description));
    }
    if have.deny_delete && !want.deny_delete {
        d.fixed.push(Change { field: "deny_delete", have: "true".into(), want: "false".into() });
    } else if have.deny_delete != want.deny_delete {
        d.in_place.push(Change { field: "deny_delete", have: "false".into(), want: "true".into() });
    }
    if have.retention != want.retention {
        d.fixed.push(Change {
            field: "retention",
            have: retention(have.retention).into(),
            want: retention(want.retention).into(),
        });
    }
    if have.storage != want.storage {
        d.fixed.push(Change {
            field: "storage",
            have: storage(have.storage).into(),
            want: storage(want.storage).into(),
        });
    }
    d
}

/// A count or size limit: JetStream writes "none" as -1, a declaration as 0.
fn limit(v: i64) -> String {
    if v <= 0 {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn age(d: Duration) -> String {
    if d.is_zero() {
        "unlimited".into()
    } else {
        format!("{}s", d.as_secs())
    }
}

fn discard(p: DiscardPolicy) -> &'static str {
    match p {
        DiscardPolicy::Old => "old",
        DiscardPolicy::New => "new",
    }
}

fn retention(p: RetentionPolicy) -> &'static str {
    match p {
        RetentionPolicy::Limits => "limits",
        RetentionPolicy::Interest => "interest",
        RetentionPolicy::WorkQueue => "workqueue",
    }
}

fn storage(s: StorageType) -> &'static str {
    match s {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Config {
        Config {
            name: "ns_events".into(),
            subjects: vec!["ns.events.>".into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: 3,
            max_bytes: 2048,
            discard: DiscardPolicy::New,
            duplicate_window: Duration::from_secs(600),
            allow_direct: true,
            ..Default::default()
        }
    }

    /// The stream as nats-server reports back what it was created with.
    fn as_the_server_reports(c: &Config) -> Config {
        let mut c = c.clone();
        for v in [&mut c.max_messages, &mut c.max_messages_per_subject] {
            if *v == 0 {
                *v = -1;
            }
        }
        if c.max_bytes == 0 {
            c.max_bytes = -1;
        }
        c.max_consumers = -1;
        c
    }

    #[test]
    fn the_same_settings_as_the_server_reports_them_do_not_differ() {
        let d = diff(&as_the_server_reports(&wanted()), &wanted());
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn replicas_and_limits_change_in_place() {
        let old = Config {
            num_replicas: 1,
            max_bytes: -1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            discard: DiscardPolicy::Old,
            ..wanted()
        };
        let d = diff(&old, &wanted());
        assert!(d.fixed.is_empty(), "{d:?}");
        let fields: Vec<_> = d.in_place.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["num_replicas", "max_bytes", "max_age", "discard"]);
        assert_eq!(
            describe(&d.in_place),
            "num_replicas 1 -> 3, max_bytes unlimited -> 2048, max_age 604800s -> unlimited, discard old -> new"
        );
    }

    #[test]
    fn retention_and_storage_cannot_change_in_place() {
        let old = Config { retention: RetentionPolicy::Limits, storage: StorageType::Memory, ..wanted() };
        let d = diff(&old, &wanted());
        assert!(d.in_place.is_empty(), "{d:?}");
        assert_eq!(describe(&d.fixed), "retention limits -> workqueue, storage memory -> file");
    }

    #[test]
    fn a_protection_may_be_turned_on_but_not_off() {
        let on = Config { deny_delete: true, ..wanted() };
        assert_eq!(diff(&on, &wanted()).fixed.len(), 1);
        assert_eq!(diff(&wanted(), &on).in_place.len(), 1);
    }

    #[test]
    fn a_default_the_server_fills_in_is_no_difference() {
        // No duplicate window declared: the server's 2 minutes are fine.
        let want = Config { duplicate_window: Duration::ZERO, ..wanted() };
        let have = Config { duplicate_window: Duration::from_secs(120), ..wanted() };
        assert!(diff(&have, &want).is_empty());
        // Subjects in another order are the same subjects.
        let want = Config { subjects: vec!["a.>".into(), "b.>".into()], ..wanted() };
        let have = Config { subjects: vec!["b.>".into(), "a.>".into()], ..wanted() };
        assert!(diff(&have, &want).is_empty());
    }
}
