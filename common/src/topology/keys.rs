//! The key formats of the KV buckets ([`super::Topology`]'s `*_bucket`),
//! one function each: every reader and writer of a bucket builds its keys
//! here.

use crate::conversation::short_hash;

/// `{ns}_sessions`: the Reset generation of one conversation.
pub fn session(channel: &str, conversation_token: &str) -> String {
    format!("{channel}.{conversation_token}")
}

/// `{ns}_handled`: an event already answered, by its de-duplication
/// source (hashed: the source is long and may hold any character).
pub fn handled(channel: &str, source: &str) -> String {
    format!("{channel}.{}", short_hash(&[source.as_bytes()]))
}

/// `{ns}_sessions`: the app's welcome was sent to Lark chat `chat_id`
/// (hashed: it comes from Lark). Kept for good, as the generations are.
pub fn welcomed(channel: &str, chat_id: &str) -> String {
    format!("{channel}.welcome.{}", short_hash(&[chat_id.as_bytes()]))
}

/// `{ns}_leases`: replica `id` of `service` is alive.
pub fn lease_member(service: &str, id: &str) -> String {
    format!("{service}.member.{id}")
}

/// `{ns}_leases`: who holds partition `partition` of `service`'s queue.
pub fn lease(service: &str, partition: u16) -> String {
    format!("{service}.p{partition}")
}

/// What a `{ns}_leases` key of `service` says: a member's id, or a partition.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseKey<'a> {
    Member(&'a str),
    Partition(u16),
}

/// Reads a `{ns}_leases` key of `service` ([`lease_member`], [`lease`]).
pub fn parse_lease<'a>(service: &str, key: &'a str) -> Option<LeaseKey<'a>> {
    let rest = key.strip_prefix(service)?.strip_prefix('.')?;
    if let Some(id) = rest.strip_prefix("member.") {
        return Some(LeaseKey::Member(id));
    }
    rest.strip_prefix('p').and_then(|p| p.parse().ok()).map(LeaseKey::Partition)
}

/// `{ns}_status`: what one service (`stage`) last saw of a channel.
pub fn status(channel: &str, stage: &str) -> String {
    format!("{channel}.{stage}")
}

/// `{ns}_status`: the Lark API calls of app `app_id` in `month`
/// (`YYYY-MM`), counted by every service (`common::lark::calls`).
pub fn lark_calls(app_id: &str, month: &str) -> String {
    let safe = app_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if safe && !app_id.is_empty() {
        format!("calls.{app_id}.{month}")
    } else {
        format!("calls.{}.{month}", short_hash(&[app_id.as_bytes()]))
    }
}

/// `{ns}_status`: one replica's counts of the last hour for a channel
/// and service (`crate::activity`). Under a prefix of its own, so it
/// never meets a [`status`] key (a stage is never `activity`).
pub fn activity(channel: &str, stage: &str, replica: &str) -> String {
    format!("{}{replica}", activity_prefix(channel, stage))
}

/// What every replica's [`activity`] key of a channel and service starts with.
pub fn activity_prefix(channel: &str, stage: &str) -> String {
    format!("{ACTIVITY}{channel}.{stage}.")
}

const ACTIVITY: &str = "activity.";

/// An [`activity`] key read back: (channel, stage, replica).
pub fn parse_activity(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.strip_prefix(ACTIVITY)?.rsplitn(3, '.');
    let (replica, stage, channel) = (parts.next()?, parts.next()?, parts.next()?);
    Some((channel, stage, replica))
}

/// `{ns}_questions`: the question waiting in one conversation.
pub fn question(channel: &str, conversation_token: &str) -> String {
    format!("{channel}.{conversation_token}")
}

/// `{ns}_cards`: the streaming card of the answer to `source`.
pub fn card(channel: &str, source: &str) -> String {
    format!("{channel}.{}", short_hash(&[source.as_bytes()]))
}

/// `{ns}_attempts`: failed attempts of the message at `sequence` of a
/// consumer.
pub fn attempts(consumer: &str, sequence: u64) -> String {
    format!("{consumer}.{sequence}")
}

/// Hex digits of a files-bucket object name ([`file_object`]).
pub const FILE_OBJECT_LEN: usize = 32;

/// `{ns}_files`: the object of one resource (image or file key) of one
/// message. Derived, never taken from the user: a redelivered event
/// stores the same name again, which replaces the object instead of
/// adding a second one. 128 bits of SHA-256, in hex: safe in a URL path
/// and a NATS subject.
pub fn file_object(channel: &str, message_id: &str, resource_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [channel, message_id, resource_key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..FILE_OBJECT_LEN / 2])
}

/// Whether `s` has the shape of a [`file_object`] name (what the ingress
/// accepts in a link, before anything else is looked at).
pub fn is_file_object(s: &str) -> bool {
    s.len() == FILE_OBJECT_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use crate::topology::keys;

    #[test]
    fn lease_keys_read_back() {
        use keys::{lease, lease_member, parse_lease, LeaseKey};
        assert_eq!(parse_lease("relay", &lease_member("relay", "12-ab")), Some(LeaseKey::Member("12-ab")));
        assert_eq!(parse_lease("relay", &lease("relay", 15)), Some(LeaseKey::Partition(15)));
        assert_eq!(parse_lease("relay", &lease("responder", 3)), None, "another service's");
        assert_eq!(parse_lease("relay", "relay.px"), None);
    }

    #[test]
    fn file_objects_are_derived_and_url_safe() {
        let a = keys::file_object("support", "om_1", "img_1");
        assert!(keys::is_file_object(&a), "{a}");
        assert_eq!(a, keys::file_object("support", "om_1", "img_1"), "a re-store replaces");
        assert_ne!(a, keys::file_object("support", "om_1", "img_2"));
        assert_ne!(keys::file_object("ab", "c", "k"), keys::file_object("a", "bc", "k"), "parts cannot run together");
        for bad in ["", "../etc/passwd", &a.to_uppercase(), &a[1..], &format!("{a}0")] {
            assert!(!keys::is_file_object(bad), "{bad}");
        }
    }

    #[test]
    fn activity_keys_read_back_and_never_meet_status_keys() {
        let key = keys::activity("support-eu", "responder", "00ff");
        assert_eq!(keys::parse_activity(&key), Some(("support-eu", "responder", "00ff")));
        assert!(key.starts_with(&keys::activity_prefix("support-eu", "responder")));
        assert_eq!(keys::parse_activity(&keys::status("support", "relay")), None);
        assert_eq!(keys::parse_activity(&keys::status("activity", "relay")), None, "even of a channel named so");
    }
}
