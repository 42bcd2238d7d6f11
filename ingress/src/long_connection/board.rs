//! What `/status` shows of the long connections of this replica, per
//! channel: how many are up of how many wanted, since when, the last event
//! received over them, and the last problem with its fix. In memory only:
//! each replica holds its own connections (the page says "this replica").
//!
//! Metrics say the same across replicas: `lark_bridge_ingress_long_connections_up`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use common::status::rfc3339;
use serde::Serialize;

/// One channel's connections, as the status page shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelConnections {
    pub wanted: usize,
    pub up: usize,
    /// When a connection last came up (RFC 3339).
    pub last_connected_at: Option<String>,
    /// When an event last came over one (RFC 3339).
    pub last_event_at: Option<String>,
    /// The last problem, with what to do about it.
    pub last_problem: Option<String>,
}

impl ChannelConnections {
    /// One line for the status page.
    pub fn summary(&self) -> String {
        let mut out = format!("{} of {} connection(s) up", self.up, self.wanted);
        if let Some(t) = &self.last_connected_at {
            out.push_str(&format!(", last connected {t}"));
        }
        out.push_str(&format!("; last event {}", self.last_event_at.as_deref().unwrap_or("never")));
        if let Some(p) = &self.last_problem {
            out.push_str(&format!("; last problem: {p}"));
        }
        out
    }
}

/// What the hot path writes: times as they are, formatted when the page is read.
#[derive(Debug, Clone, Default)]
struct Entry {
    wanted: usize,
    up: usize,
    last_connected: Option<SystemTime>,
    last_event: Option<SystemTime>,
    last_problem: Option<String>,
}

impl Entry {
    fn shown(&self) -> ChannelConnections {
        ChannelConnections {
            wanted: self.wanted,
            up: self.up,
            last_connected_at: self.last_connected.map(rfc3339),
            last_event_at: self.last_event.map(rfc3339),
            last_problem: self.last_problem.clone(),
        }
    }
}

#[derive(Clone, Default)]
pub struct Board(Arc<Mutex<HashMap<String, Entry>>>);

impl Board {
    fn update(&self, channel: &str, f: impl FnOnce(&mut Entry)) {
        if let Ok(mut map) = self.0.lock() {
            f(map.entry(channel.to_owned()).or_default());
        }
    }

    pub fn expect(&self, channel: &str, wanted: usize) {
        self.update(channel, |c| c.wanted = wanted);
    }

    pub fn connected(&self, channel: &str) {
        let now = SystemTime::now();
        self.update(channel, |c| {
            c.up += 1;
            c.last_connected = Some(now);
        });
    }

    pub fn disconnected(&self, channel: &str) {
        self.update(channel, |c| c.up = c.up.saturating_sub(1));
    }

    pub fn event(&self, channel: &str) {
        let now = SystemTime::now();
        self.update(channel, |c| c.last_event = Some(now));
    }

    pub fn problem(&self, channel: &str, what: String) {
        self.update(channel, |c| c.last_problem = Some(what));
    }

    /// `None` for a channel without long connections.
    pub fn get(&self, channel: &str) -> Option<ChannelConnections> {
        self.0.lock().ok().and_then(|m| m.get(channel).map(Entry::shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_connections_and_remembers_the_last_event() {
        let b = Board::default();
        assert!(b.get("c").is_none());
        b.expect("c", 2);
        b.connected("c");
        b.connected("c");
        b.disconnected("c");
        b.event("c");
        let c = b.get("c").expect("known");
        assert_eq!((c.wanted, c.up), (2, 1));
        assert!(c.last_event_at.is_some() && c.summary().starts_with("1 of 2 connection(s) up"), "{}", c.summary());
    }
}
