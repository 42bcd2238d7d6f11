//! Partition leases in the `{ns}_leases` KV bucket: which replica pulls which
//! partition, so that each conversation (events) and each chat (replies) has
//! one owner at a time across all replicas of a service.
//!
//! - A replica announces itself with `{service}.member.{id}` and holds a
//!   partition with `{service}.p{N}` (value: its id). Both are rewritten every
//!   tick; the bucket's `max_age` is the time to live, so the keys of a replica
//!   that died disappear by themselves.
//! - Acquire with `create` (fails when someone holds it), renew with `update`
//!   at the revision last written (fails when the lease expired and was taken),
//!   release with a delete at that revision.
//! - [`plan`] balances: with N replicas alive each aims at about
//!   `PARTITIONS / N`; one above its share releases the excess only when
//!   another is below its share (so nothing is left unowned), and free
//!   partitions nobody else wants are taken.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;

use crate::topology::keys::{self, LeaseKey};

/// The bucket as one replica sees it at one moment.
#[derive(Debug, Default, Clone)]
pub struct View {
    pub members: BTreeSet<String>,
    /// Partition → owner.
    pub owners: BTreeMap<u16, String>,
}

/// What one replica should do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub acquire: Vec<u16>,
    pub release: Vec<u16>,
}

#[derive(Debug, thiserror::Error)]
#[error("partition leases ({what}): {source}")]
pub struct LeaseError {
    what: &'static str,
    #[source]
    source: async_nats::Error,
}

fn err(what: &'static str) -> impl FnOnce(async_nats::Error) -> LeaseError {
    move |source| LeaseError { what, source }
}

pub struct Leases {
    kv: kv::Store,
    service: &'static str,
    pub me: String,
}

impl Leases {
    pub fn new(kv: kv::Store, service: &'static str) -> Self {
        let me = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        Self { kv, service, me }
    }

    fn member_key(&self) -> String {
        keys::lease_member(self.service, &self.me)
    }

    fn lease_key(&self, partition: u16) -> String {
        keys::lease(self.service, partition)
    }

    /// The bucket's time to live: how long a lease lasts unrenewed.
    pub async fn ttl(&self, default: Duration) -> Duration {
        match self.kv.status().await {
            Ok(s) if !s.info.config.max_age.is_zero() => s.info.config.max_age,
            _ => default,
        }
    }

    /// Says this replica is alive.
    pub async fn heartbeat(&self) -> Result<(), LeaseError> {
        self.kv.put(self.member_key(), bytes::Bytes::new()).await.map_err(|e| err("heartbeat")(e.into()))?;
        Ok(())
    }

    /// Leaves: the others rebalance without waiting for the key to expire.
    pub async fn leave(&self) {
        if let Err(e) = self.kv.delete(self.member_key()).await {
            tracing::debug!(error = %e, "cannot remove the member key (it expires)");
        }
    }

    /// Takes `partition` if nobody holds it: its revision, or `None`.
    pub async fn acquire(&self, partition: u16) -> Result<Option<u64>, LeaseError> {
        match self.kv.create(self.lease_key(partition), self.me.clone().into()).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(err("acquire")(e.into())),
        }
    }

    /// Renews a held lease: the new revision. Fails when it was lost.
    /// Renews a lease held at `revision`: `Some(new revision)`, or `None`
    /// when it is not ours any more (expired, or taken). An error says only
    /// that the bucket did not answer: the lease may still be ours.
    pub async fn renew(&self, partition: u16, revision: u64) -> Result<Option<u64>, LeaseError> {
        match self.kv.update(self.lease_key(partition), self.me.clone().into(), revision).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(err("renew")(e.into())),
        }
    }

    /// Gives a lease up (only if still ours).
    pub async fn release(&self, partition: u16, revision: u64) {
        if let Err(e) = self.kv.delete_expect_revision(self.lease_key(partition), Some(revision)).await {
            tracing::debug!(partition, error = %e, "cannot release the lease (it expires)");
        }
    }

    /// Members alive and lease owners. Read with a stream info listing the
    /// keys and one direct get per key: no consumer is created (an ordered
    /// consumer per tick would be a meta-layer write on a NATS cluster).
    pub async fn view(&self) -> Result<View, LeaseError> {
        let read = async {
            let filter = format!("{}{}.>", self.kv.prefix, self.service);
            let mut subjects = self.kv.stream.info_with_subjects(filter).await.map_err(|e| err("list")(e.into()))?;
            let mut keys = Vec::new();
            while let Some(item) = subjects.next().await {
                let (subject, _) = item.map_err(|e| err("list")(e.into()))?;
                if let Some(key) = subject.strip_prefix(self.kv.prefix.as_str()) {
                    keys.push(key.to_owned());
                }
            }
            let mut view = View::default();
            for key in keys {
                let entry = self.kv.entry(key.as_str()).await.map_err(|e| err("read")(e.into()))?;
                // Deleted (released, left) or gone since the listing.
                let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else { continue };
                match keys::parse_lease(self.service, &key) {
                    Some(LeaseKey::Member(id)) => {
                        view.members.insert(id.to_owned());
                    }
                    Some(LeaseKey::Partition(p)) => {
                        view.owners.insert(p, String::from_utf8_lossy(&entry.value).into_owned());
                    }
                    None => {}
                }
            }
            Ok::<View, LeaseError>(view)
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .map_err(|_| err("read")("no answer within 5 s".into()))?
    }
}

/// What `me` should acquire and release, given the bucket and what it holds
/// (`held`), over `partitions` partitions. `busy` are partitions `me` cannot
/// take now (still handing back from an earlier tenure).
pub fn plan(me: &str, view: &View, held: &BTreeSet<u16>, busy: &BTreeSet<u16>, partitions: u16) -> Plan {
    let mut members = view.members.clone();
    members.insert(me.to_owned());
    let n = members.len() as u16;
    let (base, extra) = (partitions / n, partitions % n);
    let target = |id: &str| base + u16::from(members.iter().position(|m| m == id).is_some_and(|i| (i as u16) < extra));
    let count = |id: &str| {
        if id == me {
            held.len() as u16
        } else {
            view.owners.values().filter(|o| o.as_str() == id).count() as u16
        }
    };
    let deficit: u16 = members.iter().filter(|m| *m != me).map(|m| target(m).saturating_sub(count(m))).sum();
    let mine = target(me);
    let mut plan = Plan::default();

    let free: Vec<u16> = {
        // Start where this replica's id points, so replicas starting together
        // do not all race for partition 0.
        let start = me.bytes().fold(0u16, |a, b| a.wrapping_mul(31).wrapping_add(u16::from(b))) % partitions;
        (0..partitions)
            .map(|i| (start + i) % partitions)
            .filter(|p| !view.owners.contains_key(p) && !held.contains(p) && !busy.contains(p))
            .collect()
    };
    let held_n = held.len() as u16;
    let want = if held_n < mine {
        usize::from(mine - held_n)
    } else if deficit == 0 {
        free.len() // nobody else wants them: leave nothing unowned
    } else {
        0
    };
    plan.acquire = free.into_iter().take(want).collect();
    if held_n > mine && deficit > 0 {
        let excess = usize::from((held_n - mine).min(deficit));
        plan.release = held.iter().rev().take(excess).copied().collect();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(members: &[&str], owners: &[(u16, &str)]) -> View {
        View {
            members: members.iter().map(|m| m.to_string()).collect(),
            owners: owners.iter().map(|(p, o)| (*p, o.to_string())).collect(),
        }
    }

    /// Runs every member's plan in turn, as if each applied it at once,
    /// until nothing changes; returns partitions per member.
    fn settle(members: &[&str], mut owners: BTreeMap<u16, String>) -> BTreeMap<String, usize> {
        for _ in 0..20 {
            let mut changed = false;
            for me in members {
                let v = View { members: members.iter().map(|m| m.to_string()).collect(), owners: owners.clone() };
                let held = owners.iter().filter(|(_, o)| o.as_str() == *me).map(|(p, _)| *p).collect();
                let plan = plan(me, &v, &held, &BTreeSet::new(), 16);
                for p in plan.release {
                    owners.remove(&p);
                    changed = true;
                }
                for p in plan.acquire {
                    owners.insert(p, me.to_string());
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        assert_eq!(owners.len(), 16, "every partition owned: {owners:?}");
        let mut per = BTreeMap::new();
        for o in owners.values() {
            *per.entry(o.clone()).or_default() += 1;
        }
        per
    }

    #[test]
    fn a_lone_replica_takes_everything() {
        let p = plan("a", &view(&["a"], &[]), &BTreeSet::new(), &BTreeSet::new(), 16);
        assert_eq!(p.acquire.len(), 16);
        assert!(p.release.is_empty());
    }

    #[test]
    fn replicas_converge_to_even_shares() {
        let all_a: BTreeMap<u16, String> = (0..16).map(|p| (p, "a".to_owned())).collect();
        let per = settle(&["a", "b"], all_a.clone());
        assert_eq!(per.values().copied().collect::<Vec<_>>(), [8, 8]);
        let per = settle(&["a", "b", "c"], all_a);
        let mut counts: Vec<usize> = per.values().copied().collect();
        counts.sort_unstable();
        assert_eq!(counts, [5, 5, 6]);
    }

    #[test]
    fn nothing_is_released_while_nobody_would_take_it() {
        // b is listed but holds its share already: a keeps its 8.
        let owners: Vec<(u16, &str)> = (0..16).map(|p| (p, if p < 8 { "a" } else { "b" })).collect();
        let held = (0..8).collect();
        let p = plan("a", &view(&["a", "b"], &owners), &held, &BTreeSet::new(), 16);
        assert_eq!(p, Plan::default());
        // A dead member's partitions, once free, are taken by the one left.
        let owners: Vec<(u16, &str)> = (0..8).map(|p| (p, "a")).collect();
        let p = plan("a", &view(&["a"], &owners), &held, &BTreeSet::new(), 16);
        assert_eq!(p.acquire.len(), 8);
    }

    #[test]
    fn a_partition_still_handing_back_is_not_taken_again() {
        let busy = [3u16].into_iter().collect();
        let p = plan("a", &view(&["a"], &[]), &BTreeSet::new(), &busy, 16);
        assert_eq!(p.acquire.len(), 15);
        assert!(!p.acquire.contains(&3));
    }
}
