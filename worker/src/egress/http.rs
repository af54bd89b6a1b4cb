//! The one request a connection to the egress socket opens with: `CONNECT host:port` (any
//! protocol in a tunnel) or a plain-HTTP request in absolute form (`GET http://host/path`),
//! as HTTP proxies take them.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest request head read.
pub const MAX_HEAD: usize = 16 * 1024;

/// What the job asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// Destination host (a name, an IPv4 address, or an IPv6 address in brackets).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// For plain HTTP, the head to send upstream (origin form, proxy headers dropped);
    /// `None` for `CONNECT`.
    pub forward: Option<Vec<u8>>,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// Not a `CONNECT` nor an absolute-form `http://` request.
    #[error("not a proxy request (CONNECT host:port, or an http:// URL in absolute form)")]
    NotProxy,
    /// The head is longer than [`MAX_HEAD`] or the connection ended before it did.
    #[error("no complete request head within {MAX_HEAD} bytes")]
    Incomplete,
    /// A `Host` header naming another host than the URL.
    #[error("the Host header names {header}, the request {url}")]
    HostMismatch {
        /// The header's host.
        header: String,
        /// The URL's host.
        url: String,
    },
}

/// Reads the request head from `stream`; returns it and bytes read past it.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(ProxyRequest, Vec<u8>), BadRequest> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
        if buffer.len() > MAX_HEAD {
            return Err(BadRequest::Incomplete);
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|_| BadRequest::Incomplete)?;
        if read == 0 {
            return Err(BadRequest::Incomplete);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let rest = buffer.split_off(end);
    Ok((parse(&buffer)?, rest))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Parses a complete request head.
pub fn parse(head: &[u8]) -> Result<ProxyRequest, BadRequest> {
    let text = std::str::from_utf8(head).map_err(|_| BadRequest::NotProxy)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::NotProxy);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(BadRequest::NotProxy);
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = authority(target, None).ok_or(BadRequest::NotProxy)?;
        return Ok(ProxyRequest {
            host,
            port,
            forward: None,
        });
    }
    let rest = target
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..])
        .ok_or(BadRequest::NotProxy)?;
    let (authority_text, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    let (host, port) = authority(authority_text, Some(80)).ok_or(BadRequest::NotProxy)?;
    let mut forward = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(BadRequest::NotProxy)?;
        if name.trim().to_ascii_lowercase().starts_with("proxy-") {
            continue;
        }
        if name.trim().eq_ignore_ascii_case("host") {
            let header = value.trim();
            let named = authority(header, Some(port)).map(|(h, _)| h);
            if named.as_deref() != Some(host.as_str()) {
                return Err(BadRequest::HostMismatch {
                    header: header.to_string(),
                    url: host,
                });
            }
        }
        forward.push_str(line);
        forward.push_str("\r\n");
    }
    forward.push_str("\r\n");
    Ok(ProxyRequest {
        host,
        port,
        forward: Some(forward.into_bytes()),
    })
}

/// `host:port` (or `host` with `default`), host lowercased; IPv6 stays in brackets.
fn authority(text: &str, default: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port.parse().ok()?)),
        _ => (text, default),
    };
    let port = port.filter(|port| *port != 0)?;
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_requests_parse() {
        let connect =
            parse(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").unwrap();
        assert_eq!((connect.host.as_str(), connect.port), ("pypi.org", 443));
        assert!(connect.forward.is_none());
        let get = parse(
            b"GET http://Allowed.test:8080/x?y HTTP/1.1\r\nHost: allowed.test:8080\r\nProxy-Connection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert_eq!((get.host.as_str(), get.port), ("allowed.test", 8080));
        assert_eq!(
            String::from_utf8(get.forward.unwrap()).unwrap(),
            "GET /x?y HTTP/1.1\r\nHost: allowed.test:8080\r\n\r\n"
        );
        let v6 = parse(b"CONNECT [::1]:22 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 22));
    }

    #[test]
    fn other_requests_and_smuggled_hosts_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"CONNECT pypi.org HTTP/1.1\r\n\r\n",
            b"CONNECT pypi.org:0 HTTP/1.1\r\n\r\n",
            b"GET https://x/ HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x00",
        ] {
            assert_eq!(parse(bad), Err(BadRequest::NotProxy), "{bad:?}");
        }
        assert!(matches!(
            parse(b"GET http://allowed.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            Err(BadRequest::HostMismatch { .. })
        ));
    }
}
