//! Joining an event Lark split over several data frames (`sum` > 1): the
//! parts share a `message_id` and are joined in `seq` order; only the frame
//! that completes the event is acknowledged (the SDKs do the same), and a
//! part whose siblings do not come within the time to live is dropped (Lark
//! pushes the event again, since it was never acknowledged).
//!
//! Memory is bounded whatever a peer sends: at most `max_events` events in
//! flight and `max_bytes` bytes held; past either, the oldest incomplete event
//! is dropped first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the parts of an event wait for the rest (Lark's SDKs: 5 to 10 s).
pub const TTL: Duration = Duration::from_secs(10);

/// A part that cannot be held.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("fragment {seq} of {sum}: seq out of range")]
    OutOfRange { seq: usize, sum: usize },
    #[error("an event in {sum} parts is more than this client accepts ({max})")]
    TooManyParts { sum: usize, max: usize },
    #[error("fragment of {len} bytes for an event already over the size limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("fragment {seq} of {sum} disagrees with the parts before it (sum {earlier})")]
    Inconsistent { seq: usize, sum: usize, earlier: usize },
}

struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
    first_seen: Instant,
}

/// The parts received so far, per `message_id`.
pub struct Fragments {
    partial: HashMap<String, Partial>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    max_parts: usize,
    /// The largest one event may grow to (at most `max_bytes`).
    max_event: usize,
    ttl: Duration,
}

impl Fragments {
    /// `max_bytes` bounds every part held together, and so one event's size.
    pub fn new(max_events: usize, max_bytes: usize, ttl: Duration) -> Self {
        Self {
            partial: HashMap::new(),
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes,
            max_parts: 1024,
            max_event: max_bytes,
            ttl,
        }
    }

    /// Refuses an event as soon as its parts pass `max_event` bytes, instead
    /// of assembling it to throw it away.
    pub fn with_max_event_bytes(mut self, max_event: usize) -> Self {
        self.max_event = max_event.min(self.max_bytes);
        self
    }

    /// Events waiting for parts.
    pub fn in_flight(&self) -> usize {
        self.partial.len()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds part `seq` of `sum` of event `message_id`; returns the whole event
    /// when this part completes it. A part seen twice replaces the first.
    pub fn add(
        &mut self,
        message_id: &str,
        sum: usize,
        seq: usize,
        part: Vec<u8>,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        if seq >= sum {
            return Err(FragmentError::OutOfRange { seq, sum });
        }
        if sum > self.max_parts {
            return Err(FragmentError::TooManyParts { sum, max: self.max_parts });
        }
        if part.len() > self.max_event {
            self.remove(message_id);
            return Err(FragmentError::TooLarge { len: part.len(), max: self.max_event });
        }
        self.expire(now);
        let own = self.partial.get(message_id).map(|p| p.bytes).unwrap_or(0);
        if own + part.len() > self.max_event {
            self.remove(message_id);
            return Err(FragmentError::TooLarge { len: own + part.len(), max: self.max_event });
        }
        if let Some(p) = self.partial.get(message_id) {
            if p.parts.len() != sum {
                let earlier = p.parts.len();
                self.remove(message_id);
                return Err(FragmentError::Inconsistent { seq, sum, earlier });
            }
        } else {
            while self.partial.len() >= self.max_events {
                self.drop_oldest();
            }
            self.partial.insert(message_id.to_owned(), Partial { parts: vec![None; sum], bytes: 0, first_seen: now });
        }
        while self.bytes + part.len() > self.max_bytes && !self.partial.is_empty() {
            let own = self.partial.get(message_id).map(|p| p.bytes).unwrap_or(0);
            if own + part.len() > self.max_bytes {
                self.remove(message_id);
                return Err(FragmentError::TooLarge { len: part.len(), max: self.max_bytes });
            }
            self.drop_oldest_except(message_id);
        }
        let Some(p) = self.partial.get_mut(message_id) else { return Ok(None) };
        let len = part.len();
        if let Some(old) = p.parts[seq].replace(part) {
            p.bytes -= old.len();
            self.bytes -= old.len();
        }
        p.bytes += len;
        self.bytes += len;
        if p.parts.iter().all(Option::is_some) {
            let done = self.remove(message_id).unwrap_or_default();
            return Ok(Some(done.into_iter().flatten().flatten().collect()));
        }
        Ok(None)
    }

    /// Drops events whose parts waited longer than the time to live; returns
    /// how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let ttl = self.ttl;
        let old: Vec<String> = self
            .partial
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.first_seen) > ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.remove(k);
        }
        old.len()
    }

    fn remove(&mut self, message_id: &str) -> Option<Vec<Option<Vec<u8>>>> {
        let p = self.partial.remove(message_id)?;
        self.bytes -= p.bytes;
        Some(p.parts)
    }

    fn drop_oldest(&mut self) {
        self.drop_oldest_except("");
    }

    fn drop_oldest_except(&mut self, keep: &str) {
        let oldest = self
            .partial
            .iter()
            .filter(|(k, _)| k.as_str() != keep)
            .min_by_key(|(_, p)| p.first_seen)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                self.remove(&k);
            }
            None => {
                self.remove(keep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragments() -> Fragments {
        Fragments::new(4, 100, TTL)
    }

    #[test]
    fn parts_are_joined_in_seq_order_whatever_their_arrival() {
        let mut f = fragments();
        let t = Instant::now();
        assert_eq!(f.add("m", 3, 2, b"c".to_vec(), t), Ok(None));
        assert_eq!(f.add("m", 3, 0, b"a".to_vec(), t), Ok(None));
        assert_eq!(f.add("m", 3, 1, b"b".to_vec(), t), Ok(Some(b"abc".to_vec())));
        assert_eq!((f.in_flight(), f.bytes()), (0, 0));
    }

    #[test]
    fn a_part_seen_twice_replaces_the_first() {
        let mut f = fragments();
        let t = Instant::now();
        f.add("m", 2, 0, b"xx".to_vec(), t).expect("held");
        f.add("m", 2, 0, b"a".to_vec(), t).expect("held");
        assert_eq!(f.bytes(), 1);
        assert_eq!(f.add("m", 2, 1, b"b".to_vec(), t), Ok(Some(b"ab".to_vec())));
    }

    #[test]
    fn incomplete_events_are_dropped_after_the_ttl() {
        let mut f = fragments();
        let t = Instant::now();
        f.add("m", 2, 0, b"a".to_vec(), t).expect("held");
        assert_eq!(f.expire(t + TTL + Duration::from_millis(1)), 1);
        assert_eq!((f.in_flight(), f.bytes()), (0, 0));
        // The late part starts a new event, which waits again.
        assert_eq!(f.add("m", 2, 1, b"b".to_vec(), t + TTL * 2), Ok(None));
    }

    #[test]
    fn memory_is_bounded_in_events_and_bytes() {
        let mut f = fragments();
        let t = Instant::now();
        for i in 0..10 {
            f.add(&format!("m{i}"), 2, 0, vec![0; 10], t + Duration::from_millis(i)).expect("held");
            assert!(f.in_flight() <= 4);
        }
        // The oldest went first.
        assert_eq!(f.add("m0", 2, 1, vec![0; 10], t), Ok(None));
        let mut f = fragments();
        f.add("a", 2, 0, vec![0; 60], t).expect("held");
        f.add("b", 2, 0, vec![0; 60], t + Duration::from_millis(1)).expect("held, dropping a");
        assert!(f.bytes() <= 100);
        assert_eq!(f.in_flight(), 1);
        assert!(matches!(f.add("c", 2, 0, vec![0; 101], t), Err(FragmentError::TooLarge { .. })));
        assert!(matches!(f.add("b", 2, 1, vec![0; 50], t), Err(FragmentError::TooLarge { .. })), "b over 100 bytes");
        assert_eq!((f.in_flight(), f.bytes()), (0, 0));
    }

    #[test]
    fn nonsense_headers_are_errors() {
        let mut f = fragments();
        let t = Instant::now();
        assert!(matches!(f.add("m", 2, 2, vec![], t), Err(FragmentError::OutOfRange { .. })));
        assert!(matches!(f.add("m", 100_000, 0, vec![], t), Err(FragmentError::TooManyParts { .. })));
        f.add("m", 2, 0, b"a".to_vec(), t).expect("held");
        assert!(matches!(f.add("m", 3, 1, b"b".to_vec(), t), Err(FragmentError::Inconsistent { .. })));
        assert_eq!(f.in_flight(), 0);
    }
}
