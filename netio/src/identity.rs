//! Node identity on the wire: a self-signed TLS certificate whose key *is* the node's ed25519 key, and the
//! verifiers that accept a peer only if the key in its certificate is the one we expect and the handshake
//! signature checks under that same key. Certificate chains, names and validity dates are ignored on purpose:
//! the committee list is the only authority. Never accepts a certificate without checking its key.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use cas_engine::crypto::{verify_one, SigEntry};
use cas_engine::{Keypair, PublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::NetError;

/// ALPN of node-to-node connections: the wire format's version. A change to the bytes of a peer message takes a
/// new one (a node of the old format then fails the handshake, instead of refusing every frame); a change to the
/// rules only is a protocol version in the block (`cas_consensus::protocol`). 2: blocks carry their protocol
/// version. 3: blocks carry their committee epoch, and timeouts and package acks sign it. 4: every peer frame ends
/// with the epoch of the BFT instance it belongs to (two run side by side around a committee hand-over).
pub const ALPN_NODE: &[u8] = b"cas-node/4";
/// ALPN of client connections to the ingest endpoint.
pub const ALPN_INGEST: &[u8] = b"cas-ingest/1";
/// The TLS server name we present; ignored by our verifiers (the key is the identity).
pub const SERVER_NAME: &str = "cas-node";

/// RFC 8410 PKCS#8 v1 prefix of an ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER of the ed25519 AlgorithmIdentifier's content (the OID 1.3.101.112, no parameters).
const ED25519_ALGORITHM: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The rustls crypto provider, installed explicitly in every config so nothing depends on a process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's TLS credentials: a certificate bound to its ed25519 key, and that key in PKCS#8.
pub struct Identity {
    key: PublicKey,
    certificate: CertificateDer<'static>,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({:?})", self.key)
    }
}

impl Identity {
    pub fn new(keypair: &Keypair) -> Result<Identity, NetError> {
        let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
        pkcs8.extend_from_slice(&keypair.seed());
        let signing = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            &rcgen::PKCS_ED25519,
        )
        .map_err(|error| NetError::Certificate(error.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(|error| NetError::Certificate(error.to_string()))?;
        let certificate = params
            .self_signed(&signing)
            .map_err(|error| NetError::Certificate(error.to_string()))?
            .der()
            .clone();
        let identity = Identity {
            key: keypair.public(),
            certificate,
            pkcs8,
        };
        assert_eq!(
            certificate_key(&identity.certificate),
            Some(identity.key),
            "the certificate carries the node key"
        );
        Ok(identity)
    }

    pub fn key(&self) -> PublicKey {
        self.key
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.certificate.clone()]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }
}

/// Which keys a verifier accepts.
#[derive(Clone)]
pub enum Accept {
    /// Exactly this key (dialing a known peer, or a client connecting to a known node).
    Exactly(PublicKey),
    /// Any key in the current peer set (accepting node connections).
    AnyOf(Arc<RwLock<HashSet<PublicKey>>>),
}

impl fmt::Debug for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accept::Exactly(key) => write!(f, "Exactly({key:?})"),
            Accept::AnyOf(_) => f.write_str("AnyOf(peers)"),
        }
    }
}

impl Accept {
    fn check(&self, key: PublicKey) -> Result<(), String> {
        match self {
            Accept::Exactly(expected) if *expected == key => Ok(()),
            Accept::Exactly(expected) => {
                Err(format!("presented key {key:?}, expected {expected:?}"))
            }
            Accept::AnyOf(keys) => {
                if keys.read().expect("peer set lock").contains(&key) {
                    Ok(())
                } else {
                    Err(format!("key {key:?} is not a configured peer"))
                }
            }
        }
    }
}

/// Checks certificates by their ed25519 key alone (both directions).
#[derive(Debug)]
pub struct NodeKeyVerifier {
    accept: Accept,
}

impl NodeKeyVerifier {
    pub fn new(accept: Accept) -> Arc<NodeKeyVerifier> {
        Arc::new(NodeKeyVerifier { accept })
    }

    fn check_certificate(&self, certificate: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let Some(key) = certificate_key(certificate) else {
            tracing::warn!("refused a peer: its certificate does not carry an ed25519 key");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ));
        };
        self.accept.check(key).map_err(|reason| {
            tracing::warn!(%reason, "refused a peer");
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        })
    }

    /// The handshake signature must check under the key we just accepted, read by the same parser, so the key
    /// that was matched against the peer list is the key that proved possession.
    fn check_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if signed.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        let key = certificate_key(certificate).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        let signature: &[u8; 64] = signed
            .signature()
            .try_into()
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        let entry = SigEntry {
            message,
            key: &key.0,
            signature,
        };
        if verify_one(&entry) {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            tracing::warn!(?key, "refused a peer: bad handshake signature");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature,
            ))
        }
    }
}

impl ServerCertVerifier for NodeKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_certificate(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC is TLS 1.3 only; a TLS 1.2 signature is a protocol violation.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for NodeKeyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_certificate(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn tls(error: impl fmt::Display) -> NetError {
    NetError::Tls(error.to_string())
}

/// The QUIC transport settings shared by every endpoint (and by the raw-quinn benchmark, for a fair peer).
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    use crate::limits::{
        IDLE_TIMEOUT_MS, KEEP_ALIVE_MS, STREAMS_PER_CONNECTION_MAX, UDP_PAYLOAD_MAX,
    };
    let mut mtu_discovery = quinn::MtuDiscoveryConfig::default();
    mtu_discovery.upper_bound(UDP_PAYLOAD_MAX);
    let mut transport = quinn::TransportConfig::default();
    transport
        .mtu_discovery_config(Some(mtu_discovery))
        .max_concurrent_uni_streams(STREAMS_PER_CONNECTION_MAX.into())
        .max_concurrent_bidi_streams(0u32.into())
        .keep_alive_interval(Some(std::time::Duration::from_millis(KEEP_ALIVE_MS)))
        .max_idle_timeout(Some(
            std::time::Duration::from_millis(IDLE_TIMEOUT_MS)
                .try_into()
                .expect("idle timeout fits"),
        ));
    Arc::new(transport)
}

/// A QUIC endpoint bound to `addr` (a server when `server` is given; any endpoint dials out) that accepts
/// datagrams up to [`crate::limits::UDP_PAYLOAD_MAX`], on the current tokio runtime.
pub fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(crate::limits::UDP_PAYLOAD_MAX)
        .expect("UDP_PAYLOAD_MAX is within quinn's bounds (limits.rs checks it)");
    let socket = std::net::UdpSocket::bind(addr)?;
    quinn::Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime))
}

/// Server side of node-to-node connections: presents our certificate and requires a peer's.
pub fn node_server_config(
    identity: &Identity,
    peers: Arc<RwLock<HashSet<PublicKey>>>,
) -> Result<quinn::ServerConfig, NetError> {
    let mut tls_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(NodeKeyVerifier::new(Accept::AnyOf(peers)))
        .with_single_cert(identity.chain(), identity.private_key())
        .map_err(tls)?;
    tls_config.alpn_protocols = vec![ALPN_NODE.to_vec()];
    server_config(tls_config)
}

/// Server side of the ingest endpoint: presents our certificate and asks clients for none.
pub fn ingest_server_config(identity: &Identity) -> Result<quinn::ServerConfig, NetError> {
    let mut tls_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_no_client_auth()
        .with_single_cert(identity.chain(), identity.private_key())
        .map_err(tls)?;
    tls_config.alpn_protocols = vec![ALPN_INGEST.to_vec()];
    server_config(tls_config)
}

fn server_config(tls_config: rustls::ServerConfig) -> Result<quinn::ServerConfig, NetError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls_config).map_err(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    config.max_incoming(crate::limits::HANDSHAKES_MAX);
    Ok(config)
}

/// Client side of a node-to-node connection to the peer that must hold `expected`.
pub fn node_client_config(
    identity: &Identity,
    expected: PublicKey,
) -> Result<quinn::ClientConfig, NetError> {
    let mut tls_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(NodeKeyVerifier::new(Accept::Exactly(expected)))
        .with_client_auth_cert(identity.chain(), identity.private_key())
        .map_err(tls)?;
    tls_config.alpn_protocols = vec![ALPN_NODE.to_vec()];
    client_config(tls_config)
}

/// Client side of an ingest connection: no client certificate; the node must hold `node_key`.
pub fn ingest_client_config(node_key: PublicKey) -> Result<quinn::ClientConfig, NetError> {
    let mut tls_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(NodeKeyVerifier::new(Accept::Exactly(node_key)))
        .with_no_client_auth();
    tls_config.alpn_protocols = vec![ALPN_INGEST.to_vec()];
    client_config(tls_config)
}

fn client_config(tls_config: rustls::ClientConfig) -> Result<quinn::ClientConfig, NetError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls_config).map_err(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// The node key of the peer on `connection`, from the certificate its handshake was verified with.
pub fn peer_key(connection: &quinn::Connection) -> Option<PublicKey> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    certificate_key(chain.first()?)
}

/// One DER element: (tag, content, rest). Only definite lengths up to 3 length bytes (16 MiB).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 3 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, byte| (len << 8) | *byte as usize);
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The ed25519 key in an X.509 certificate's SubjectPublicKeyInfo, or `None` if it is not one.
pub fn certificate_key(certificate: &[u8]) -> Option<PublicKey> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    const BIT_STRING: u8 = 0x03;
    let (tag, certificate, _) = der_element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = der_element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    if tbs.first() == Some(&VERSION) {
        tbs = der_element(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity, subject; then subjectPublicKeyInfo.
    for _ in 0..5 {
        tbs = der_element(tbs)?.2;
    }
    let (tag, spki, _) = der_element(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, algorithm, rest) = der_element(spki)?;
    if tag != SEQUENCE || algorithm != ED25519_ALGORITHM {
        return None;
    }
    let (tag, bits, rest) = der_element(rest)?;
    if tag != BIT_STRING || !rest.is_empty() {
        return None;
    }
    let (&unused_bits, key) = bits.split_first()?;
    if unused_bits != 0 {
        return None;
    }
    Some(PublicKey(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_node_key() {
        for index in 0..4 {
            let keypair = cas_engine::fixtures::key(9, index);
            let identity = Identity::new(&keypair).unwrap();
            assert_eq!(
                certificate_key(&identity.certificate),
                Some(keypair.public())
            );
        }
    }

    #[test]
    fn garbage_and_cut_certificates_carry_no_key() {
        let identity = Identity::new(&cas_engine::fixtures::key(9, 0)).unwrap();
        let der = identity.certificate.to_vec();
        for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
            assert_eq!(certificate_key(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(certificate_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(certificate_key(&[0xab; 300]), None);
    }

    #[test]
    fn accept_checks_the_key() {
        let a = cas_engine::fixtures::key(9, 0).public();
        let b = cas_engine::fixtures::key(9, 1).public();
        assert!(Accept::Exactly(a).check(a).is_ok());
        assert!(Accept::Exactly(a).check(b).is_err());
        let set = Arc::new(RwLock::new(HashSet::from([a])));
        assert!(Accept::AnyOf(set.clone()).check(a).is_ok());
        assert!(Accept::AnyOf(set).check(b).is_err());
    }
}
