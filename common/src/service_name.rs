//! The three services, named once: their binaries, their NATS client and
//! telemetry names, the consumers and leases they own, the stage a dead
//! letter or a status record comes from.

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Ingress,
    Relay,
    Responder,
}

impl Service {
    /// Every service, in the order an event passes through them.
    pub const ALL: [Service; 3] = [Service::Ingress, Service::Relay, Service::Responder];

    /// Its name: the binary, and everywhere the service is named.
    pub const fn name(self) -> &'static str {
        match self {
            Service::Ingress => "ingress",
            Service::Relay => "relay",
            Service::Responder => "responder",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_binaries() {
        assert_eq!(Service::ALL.map(Service::name), ["ingress", "relay", "responder"]);
        assert_eq!(Service::Relay.to_string(), "relay");
    }
}
