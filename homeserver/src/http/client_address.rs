//! The client's address, for limits per address: the TCP peer, or, when the
//! peer is a trusted reverse proxy, the nearest address in
//! `X-Forwarded-For` that is not itself one (proxies append, so addresses
//! further left were written by whoever sent the request and prove
//! nothing).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::request::Parts;

use crate::config::IpRange;

/// `None` only when the server runs without connection info (not so in
/// `serve`).
pub fn client_address(parts: &Parts, trusted_proxies: &[IpRange]) -> Option<IpAddr> {
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    let trusted = |addr: &IpAddr| trusted_proxies.iter().any(|range| range.contains(*addr));
    let mut client = peer.ip();
    if !trusted(&client) {
        return Some(client);
    }
    let forwarded = parts.headers.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok()).flat_map(|value| value.split(','));
    let hops: Vec<&str> = forwarded.collect();
    for hop in hops.into_iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(addr) => {
                client = addr;
                if !trusted(&addr) {
                    break;
                }
            }
            // A hop we cannot read ends what we can believe.
            Err(_) => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut request = http::Request::builder();
        for value in forwarded {
            request = request.header("x-forwarded-for", *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts.extensions.insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        parts
    }

    #[test]
    fn only_trusted_proxies_speak_for_the_client() {
        let trusted = ["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let address = |peer, forwarded| client_address(&parts(peer, forwarded), &trusted).unwrap().to_string();
        assert_eq!(address("192.0.2.1:1", &["198.51.100.7"]), "192.0.2.1", "an untrusted peer's header is ignored");
        assert_eq!(address("127.0.0.1:1", &[]), "127.0.0.1");
        assert_eq!(address("127.0.0.1:1", &["198.51.100.7"]), "198.51.100.7");
        assert_eq!(address("127.0.0.1:1", &["6.6.6.6, 198.51.100.7, 10.1.1.1"]), "198.51.100.7", "the client cannot choose its address");
        assert_eq!(address("127.0.0.1:1", &["6.6.6.6", "198.51.100.7"]), "198.51.100.7", "repeated headers are one list");
        assert_eq!(address("127.0.0.1:1", &["6.6.6.6, garbage, 10.1.1.1"]), "10.1.1.1");
    }
}
