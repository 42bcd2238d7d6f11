//! Every target is on this machine: the checks that keep the load
//! generator from being pointed anywhere else.

use std::net::{IpAddr, SocketAddr};

use anyhow::bail;

/// `localhost` or a loopback IP address (`[::1]` too).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `addr`, given as `what`, must be a loopback address.
pub(crate) fn require_loopback(addr: &SocketAddr, what: &str) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{what} {addr} is not a loopback address: this load generator only targets this machine");
    }
    Ok(())
}

/// The NATS URL `url` must name a server on the loopback.
pub(crate) fn nats_loopback(url: &str) -> anyhow::Result<()> {
    let host = url.rsplit("://").next().unwrap_or(url);
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    if !is_loopback_host(host) {
        bail!("{url}: only a NATS server on the loopback is allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Target;

    #[test]
    fn only_loopback_targets() {
        assert!(Target::parse("http://127.0.0.1:8080/lark/x/events").is_ok());
        assert!(Target::parse("http://localhost:8080/").is_ok());
        assert!(Target::parse("http://[::1]:8080/").is_ok());
        assert!(Target::parse("http://10.0.0.1:8080/").is_err());
        assert!(Target::parse("https://127.0.0.1/").is_err());
        assert!(nats_loopback("nats://127.0.0.1:4222").is_ok());
        assert!(nats_loopback("nats://user:pw@localhost:4222").is_ok());
        assert!(nats_loopback("nats://192.168.1.2:4222").is_err());
    }
}
