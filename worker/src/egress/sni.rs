//! The server name a TLS ClientHello asks for (SNI), so a tunnel opened to an allowed name
//! cannot carry a handshake for another one (domain fronting through a shared front end).

/// The SNI host name in `bytes`, when they start with a TLS ClientHello that has one.
/// `None` for anything else (not TLS, no SNI, or a hello cut short).
pub fn server_name(bytes: &[u8]) -> Option<String> {
    // Record header: handshake (22), version, length; then the handshake header.
    let record = bytes.strip_prefix(&[22u8][..])?;
    let (_, record) = take(record, 4)?;
    let (kind, hello) = take(record, 4)?;
    if kind[0] != 1 {
        return None;
    }
    // Version and random, session id, cipher suites, compression methods.
    let (_, hello) = take(hello, 34)?;
    let hello = skip_vector(hello, 1)?;
    let hello = skip_vector(hello, 2)?;
    let hello = skip_vector(hello, 1)?;
    let (length, mut extensions) = take(hello, 2)?;
    extensions = extensions.get(..usize::from(u16::from_be_bytes([length[0], length[1]])))?;
    while !extensions.is_empty() {
        let (header, rest) = take(extensions, 4)?;
        let size = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let (body, rest) = take(rest, size)?;
        if header[..2] == [0, 0] {
            // server_name_list: length, then (type 0 = host_name, length, name).
            let (_, list) = take(body, 2)?;
            let (entry, list) = take(list, 3)?;
            let size = usize::from(u16::from_be_bytes([entry[1], entry[2]]));
            let (name, _) = take(list, size)?;
            return (entry[0] == 0)
                .then(|| String::from_utf8(name.to_vec()).ok())
                .flatten();
        }
        extensions = rest;
    }
    None
}

fn take(bytes: &[u8], count: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= count).then(|| bytes.split_at(count))
}

/// `bytes` past a vector whose length takes `width` bytes.
fn skip_vector(bytes: &[u8], width: usize) -> Option<&[u8]> {
    let (length, rest) = take(bytes, width)?;
    let size = length
        .iter()
        .fold(0usize, |size, byte| (size << 8) | usize::from(*byte));
    take(rest, size).map(|(_, rest)| rest)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello for `name` (TLS 1.2 record, one cipher suite, SNI only).
    pub(crate) fn client_hello(name: &str) -> Vec<u8> {
        let name = name.as_bytes();
        let mut sni = vec![0u8];
        sni.extend((name.len() as u16).to_be_bytes());
        sni.extend(name);
        let mut list = (sni.len() as u16).to_be_bytes().to_vec();
        list.extend(sni);
        let mut extensions = vec![0u8, 0];
        extensions.extend((list.len() as u16).to_be_bytes());
        extensions.extend(list);
        let mut hello = vec![3u8, 3];
        hello.extend([7u8; 32]);
        hello.extend([0u8]); // session id
        hello.extend([0u8, 2, 0x13, 0x01]); // cipher suites
        hello.extend([1u8, 0]); // compression
        hello.extend((extensions.len() as u16).to_be_bytes());
        hello.extend(extensions);
        let mut handshake = vec![1u8, 0];
        handshake.extend((hello.len() as u16).to_be_bytes());
        handshake.extend(hello);
        let mut record = vec![22u8, 3, 1];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    #[test]
    fn the_server_name_is_read_from_a_client_hello_and_nothing_else() {
        assert_eq!(
            server_name(&client_hello("pypi.org")).as_deref(),
            Some("pypi.org")
        );
        let hello = client_hello("pypi.org");
        assert_eq!(server_name(&hello[..hello.len() - 3]), None);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(server_name(b"\x16"), None);
    }
}
