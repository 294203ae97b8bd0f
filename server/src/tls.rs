//! TLS for TCP listeners (rustls): the server's certificate and key, and the CA that
//! signs clients' certificates. A client must present a certificate from that CA;
//! its subject's common name names the host it acts for (the host's 16-hex-digit id,
//! or its registered name), so the array's host security applies to it.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::sock::Sock;

/// A TLS stream over a client socket.
pub type TlsStream = StreamOwned<ServerConnection, Sock>;

/// Where the TLS files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: std::path::PathBuf,
    /// The server's private key (PEM).
    pub key: std::path::PathBuf,
    /// The CA certificate(s) that sign clients' certificates (PEM).
    pub ca: std::path::PathBuf,
}

/// A loaded TLS configuration.
pub struct Tls {
    config: Arc<ServerConfig>,
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate ({what})", path.display()));
    }
    Ok(certs)
}

impl Tls {
    /// Loads and checks the files.
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certs(&files.cert, "server certificate")?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| format!("cannot read the private key {}: {e}", files.key.display()))?;
        let mut roots = RootCertStore::empty();
        for c in certs(&files.ca, "CA certificate")? {
            roots
                .add(c)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", files.ca.display()))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("cannot use the CA {}: {e}", files.ca.display()))?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| format!("the server certificate and key do not go together: {e}"))?;
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    /// Runs the TLS handshake on `sock` (after `NBD_OPT_STARTTLS` was acknowledged)
    /// and returns the stream with the common name of the client's certificate.
    pub fn accept(&self, mut sock: Sock) -> io::Result<(TlsStream, Option<String>)> {
        let mut conn = ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        let cn = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| common_name(c.as_ref()));
        Ok((StreamOwned::new(conn, sock), cn))
    }
}

/// One DER element: (tag, contents, rest).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (l, rest) = b.split_at(n);
        b = rest;
        l.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
    };
    if b.len() < len {
        return None;
    }
    let (content, rest) = b.split_at(len);
    Some((tag, content, rest))
}

/// The subject common name of an X.509 certificate (DER), if it has one.
pub fn common_name(cert: &[u8]) -> Option<String> {
    const SEQ: u8 = 0x30;
    const CN: &[u8] = &[0x55, 0x04, 0x03]; // 2.5.4.3
    let (SEQ, cert, _) = der(cert)? else {
        return None;
    };
    let (SEQ, tbs, _) = der(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, r) = der(rest)?;
    rest = r;
    if tag != 0xa0 {
        // No version field: that element was the serial number.
    } else {
        rest = der(rest)?.2; // serial
    }
    rest = der(rest)?.2; // signature algorithm
    rest = der(rest)?.2; // issuer
    rest = der(rest)?.2; // validity
    let (SEQ, mut subject, _) = der(rest)? else {
        return None;
    };
    while !subject.is_empty() {
        let (_, set, r) = der(subject)?; // RelativeDistinguishedName (SET)
        subject = r;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (_, attr, r) = der(attrs)?; // AttributeTypeAndValue (SEQUENCE)
            attrs = r;
            let (_, oid, r) = der(attr)?;
            if oid == CN {
                let (_, value, _) = der(r)?;
                return std::str::from_utf8(value).ok().map(str::to_owned);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walk_never_panics_on_garbage() {
        for n in 0..64usize {
            let v: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let _ = common_name(&v);
        }
        assert_eq!(common_name(&[0x30, 0x82, 0xff]), None);
    }
}
