//! `nats.url`: one NATS server URL or several, comma-separated (the nodes
//! of a cluster), and the same URL with its secrets hidden for messages.
//! Read by the configuration's checks and by the connection alike.

use async_nats::ServerAddr;

/// A part of `nats.url` that is not a server URL (shown without secrets).
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a NATS server URL (nats://host:port, several separated by commas)")]
pub struct UrlError(pub String);

/// `url` without a password or token (`nats://user:pass@host` →
/// `nats://user:***@host`; `nats://token@host` → `nats://***@host`), for
/// error messages and logs.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| match one.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                    None => format!("{scheme}://***@{host}"),
                },
                None => one.to_owned(),
            },
            None => match one.split_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => one.to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The servers named by `nats.url`: one URL, or several separated by commas.
pub fn server_addrs(url: &str) -> Result<Vec<ServerAddr>, UrlError> {
    url.split(',')
        .map(str::trim)
        .map(|one| one.parse::<ServerAddr>().ok().filter(|_| !one.is_empty()).ok_or_else(|| UrlError(redact_url(one))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets_in_messages() {
        assert_eq!(redact_url("nats://u:p4ss@n1:4222,nats://tok@n2:4222"), "nats://u:***@n1:4222,nats://***@n2:4222");
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        let e = server_addrs("nats://u:p4ss@ho st:4222").expect_err("not a URL").to_string();
        assert!(!e.contains("p4ss"), "{e}");
    }

    #[test]
    fn url_lists_several_servers() {
        let servers = server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://h:4224").expect("valid");
        assert_eq!(servers.len(), 3);
        assert_eq!(server_addrs("nats://127.0.0.1:4222").map(|s| s.len()).ok(), Some(1));
        for bad in ["", "nats://a:1,", "nats://a:1,,nats://b:2", "http://[::1"] {
            assert!(server_addrs(bad).is_err(), "{bad}");
        }
    }
}
