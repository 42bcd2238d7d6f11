//! The conversations of one partition, in memory: a FIFO per subject (a
//! conversation for events, a chat for replies), in stream order.
//!
//! Why in memory: the partition's owner is the only replica pulling it, so
//! what it pulled is all there is to order; it needs no round trip to NATS
//! per held message, and a backlog costs one delivery per message (a check
//! of the stream's head would poll NATS for every held message).
//!
//! A subject runs one message at a time: its head, once the one before it
//! has finished. Besides the messages held here, a subject can wait on
//! sequences it does not hold: *outstanding* ones, delivered earlier (to a
//! previous owner of the partition, or handed back by a retry) and expected
//! to be delivered again. Its head waits until every outstanding sequence
//! older than it has arrived or is known to be gone.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The per-subject queues of one partition. `M` is the message (generic for tests).
pub struct Queues<M> {
    subjects: HashMap<String, Line<M>>,
    /// Subjects whose head may start now (each listed at most once).
    ready: VecDeque<String>,
    /// Outstanding sequence → its subject, and since when it is waited for:
    /// listed from a previous owner or handed back here alike, so the owner's
    /// periodic recheck stops waiting for one that never comes back (purged,
    /// removed, deleted by hand) instead of blocking its subject for good.
    outstanding: HashMap<u64, (String, Instant)>,
    held: usize,
}

struct Line<M> {
    waiting: BTreeMap<u64, M>,
    running: Option<u64>,
    outstanding: BTreeSet<u64>,
    listed: bool,
}

impl<M> Default for Line<M> {
    fn default() -> Self {
        Self { waiting: BTreeMap::new(), running: None, outstanding: BTreeSet::new(), listed: false }
    }
}

impl<M> Line<M> {
    fn can_start(&self) -> bool {
        let Some((&head, _)) = self.waiting.first_key_value() else { return false };
        self.running.is_none() && self.outstanding.first().is_none_or(|&o| o > head)
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.running.is_none() && self.outstanding.is_empty()
    }
}

/// What [`Queues::push`] did with a delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The same sequence is running here already (a redelivery of it): ignore.
    AlreadyRunning,
}

impl<M> Default for Queues<M> {
    fn default() -> Self {
        Self { subjects: HashMap::new(), ready: VecDeque::new(), outstanding: HashMap::new(), held: 0 }
    }
}

impl<M> Queues<M> {
    /// Messages held: waiting or running.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn has_outstanding(&self) -> bool {
        !self.outstanding.is_empty()
    }

    /// The oldest outstanding sequence of each subject, oldest first: the
    /// only one that holds its subject's head, so the only one worth looking
    /// up (the younger ones are looked up once it is resolved).
    pub fn to_recheck(&self) -> Vec<(u64, String)> {
        let mut all: Vec<(u64, String)> = self
            .subjects
            .iter()
            .filter_map(|(subject, line)| line.outstanding.first().map(|&s| (s, subject.clone())))
            .collect();
        all.sort_unstable();
        all
    }

    /// The oldest outstanding sequence of `subject`, if any.
    pub fn oldest_outstanding(&self, subject: &str) -> Option<u64> {
        self.subjects.get(subject).and_then(|l| l.outstanding.first().copied())
    }

    /// Stops waiting for every sequence waited for longer than `max`; returns them.
    /// Local (no lookup), so a long wait ends on time however many there are.
    pub fn forget_overdue(&mut self, max: Duration) -> Vec<u64> {
        let mut overdue: Vec<u64> =
            self.outstanding.iter().filter(|(_, (_, since))| since.elapsed() > max).map(|(&s, _)| s).collect();
        overdue.sort_unstable();
        for &sequence in &overdue {
            self.forget(sequence);
        }
        overdue
    }

    /// A delivery of `sequence` on `subject`. A newer delivery of a waiting
    /// sequence replaces the older one (its ack subject is the current one).
    pub fn push(&mut self, subject: &str, sequence: u64, message: M) -> Pushed {
        let line = self.subjects.entry(subject.to_owned()).or_default();
        if line.running == Some(sequence) {
            return Pushed::AlreadyRunning;
        }
        if line.outstanding.remove(&sequence) {
            self.outstanding.remove(&sequence);
        }
        if line.waiting.insert(sequence, message).is_none() {
            self.held += 1;
        }
        self.relist(subject);
        Pushed::Queued
    }

    /// `sequence` of `subject` was delivered before and will be again:
    /// younger messages of the subject wait for it.
    pub fn expect(&mut self, subject: &str, sequence: u64) {
        let line = self.subjects.entry(subject.to_owned()).or_default();
        if line.waiting.contains_key(&sequence) || line.running == Some(sequence) {
            return;
        }
        line.outstanding.insert(sequence);
        self.outstanding.entry(sequence).or_insert_with(|| (subject.to_owned(), Instant::now()));
    }

    /// `sequence` will not come again (acknowledged elsewhere, removed, or
    /// waited for too long): stop waiting for it.
    pub fn forget(&mut self, sequence: u64) {
        let Some((subject, _)) = self.outstanding.remove(&sequence) else { return };
        if let Some(line) = self.subjects.get_mut(&subject) {
            line.outstanding.remove(&sequence);
        }
        self.relist(&subject);
    }

    /// The next head that may start, marked running.
    pub fn start_next(&mut self) -> Option<(String, u64, M)> {
        while let Some(subject) = self.ready.pop_front() {
            let Some(line) = self.subjects.get_mut(&subject) else { continue };
            line.listed = false;
            if !line.can_start() {
                continue;
            }
            let (sequence, message) = line.waiting.pop_first()?;
            line.running = Some(sequence);
            return Some((subject, sequence, message));
        }
        None
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The running message of `subject` has finished. With `again`, it was
    /// handed back and will be delivered again: the subject waits for it.
    pub fn finish(&mut self, subject: &str, sequence: u64, again: bool) {
        let Some(line) = self.subjects.get_mut(subject) else { return };
        if line.running != Some(sequence) {
            return;
        }
        line.running = None;
        self.held -= 1;
        if again {
            line.outstanding.insert(sequence);
            self.outstanding.insert(sequence, (subject.to_owned(), Instant::now()));
        }
        self.relist(subject);
    }

    /// Every waiting message (not running), for `Progress`.
    pub fn waiting(&self) -> impl Iterator<Item = &M> {
        self.subjects.values().flat_map(|l| l.waiting.values())
    }

    /// Takes every waiting message out, oldest first: to hand them back.
    pub fn take_waiting(&mut self) -> Vec<(u64, M)> {
        let mut all: Vec<(u64, M)> = Vec::new();
        for line in self.subjects.values_mut() {
            all.extend(std::mem::take(&mut line.waiting));
        }
        self.held -= all.len();
        self.ready.clear();
        self.subjects.retain(|_, l| {
            l.listed = false;
            !l.is_empty()
        });
        all.sort_unstable_by_key(|(s, _)| *s);
        all
    }

    fn relist(&mut self, subject: &str) {
        let Some(line) = self.subjects.get_mut(subject) else { return };
        if line.is_empty() {
            self.subjects.remove(subject);
            return;
        }
        if !line.listed && line.can_start() {
            line.listed = true;
            self.ready.push_back(subject.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut Queues<&'static str>) -> Vec<&'static str> {
        let mut out = Vec::new();
        while let Some((s, seq, m)) = q.start_next() {
            out.push(m);
            q.finish(&s, seq, false);
        }
        out
    }

    #[test]
    fn one_subject_runs_in_order_one_at_a_time_others_alongside() {
        let mut q = Queues::default();
        q.push("a", 3, "a3");
        q.push("a", 1, "a1");
        q.push("b", 2, "b2");
        let (sa, s1, m) = q.start_next().expect("a head");
        assert_eq!((sa.as_str(), s1, m), ("a", 1, "a1"), "the oldest of a first");
        let (_, _, m) = q.start_next().expect("b runs alongside");
        assert_eq!(m, "b2");
        assert!(q.start_next().is_none(), "a3 waits for a1");
        assert_eq!(q.held(), 3);
        q.finish("a", 1, false);
        assert_eq!(q.start_next().map(|x| x.2), Some("a3"));
    }

    #[test]
    fn outstanding_sequences_hold_younger_ones_until_they_arrive_or_are_forgotten() {
        let mut q = Queues::default();
        q.expect("a", 5);
        q.push("a", 7, "a7");
        q.push("b", 6, "b6");
        let (b, six, m) = q.start_next().expect("b6");
        assert_eq!(m, "b6");
        assert!(q.start_next().is_none(), "a7 waits for 5");
        q.finish(&b, six, false);
        q.push("a", 5, "a5");
        assert!(!q.has_outstanding());
        assert_eq!(drain(&mut q), ["a5", "a7"]);

        q.expect("c", 10);
        q.push("c", 11, "c11");
        assert!(q.start_next().is_none());
        q.forget(10);
        assert_eq!(drain(&mut q), ["c11"]);
        assert_eq!(q.held(), 0);
    }

    #[test]
    fn a_handed_back_message_is_waited_for_and_a_redelivery_of_a_running_one_ignored() {
        let mut q = Queues::default();
        q.push("a", 1, "a1");
        q.push("a", 2, "a2");
        let (s, seq, _) = q.start_next().expect("a1");
        assert_eq!(q.push("a", 1, "a1 again"), Pushed::AlreadyRunning);
        q.finish(&s, seq, true);
        assert!(q.start_next().is_none(), "a2 waits for a1's redelivery");
        q.push("a", 1, "a1 redelivered");
        assert_eq!(drain(&mut q), ["a1 redelivered", "a2"]);
    }

    #[test]
    fn a_handed_back_message_is_rechecked_and_not_waited_for_forever() {
        let mut q = Queues::default();
        q.push("a", 1, "a1");
        q.push("a", 2, "a2");
        let (s, seq, _) = q.start_next().expect("a1");
        q.finish(&s, seq, true);
        assert!(q.start_next().is_none(), "a2 waits for a1's redelivery");
        assert!(q.has_outstanding(), "the recheck runs while a1 is waited for");
        assert_eq!(q.to_recheck(), [(1, "a".to_owned())], "a1 is looked up like a previous owner's message");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(q.forget_overdue(Duration::from_millis(1)), [1], "and not waited for past the max wait");
        assert_eq!(drain(&mut q), ["a2"]);
    }

    #[test]
    fn only_the_oldest_outstanding_of_each_subject_is_rechecked() {
        let mut q: Queues<&'static str> = Queues::default();
        q.expect("b", 9);
        q.expect("a", 5);
        q.expect("a", 3);
        assert_eq!(q.to_recheck(), [(3, "a".to_owned()), (9, "b".to_owned())]);
        q.forget(3);
        assert_eq!(q.oldest_outstanding("a"), Some(5));
        assert!(q.forget_overdue(Duration::from_secs(300)).is_empty());
    }

    #[test]
    fn handing_back_takes_waiting_ones_oldest_first_and_keeps_running_ones() {
        let mut q = Queues::default();
        q.push("a", 1, "a1");
        q.push("a", 4, "a4");
        q.push("b", 2, "b2");
        let running = q.start_next().expect("a1");
        let back: Vec<u64> = q.take_waiting().into_iter().map(|(s, _)| s).collect();
        assert_eq!(back, [2, 4]);
        assert_eq!(q.held(), 1);
        q.finish(&running.0, running.1, false);
        assert_eq!(q.held(), 0);
    }
}
