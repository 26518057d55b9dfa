//! TLS for the client listener (`broker.v1`, `groups`) and the internal listener (`raft.v1`,
//! `cluster.v1`), and for the connections a broker opens to its peers.
//!
//! A broker's identity is its certificate: the internal listener requires a client certificate
//! issued by the cluster's CA *and* whose principal (subject CN, else its first DNS name)
//! matches one of `broker_principals`, so a client certificate from the same CA does not make
//! a program a broker. The refusal happens in the handshake (alert `access_denied`), before a
//! byte of HTTP/2 is read.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// Whether clients present a certificate on the client listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client may present one (it is verified against the CA when it does); clients without
    /// one are served too.
    #[default]
    Optional,
    /// Every client must present a valid certificate from the CA (mutual TLS).
    Required,
}

/// The `[tls]` settings: TLS on both listeners, mutual TLS between brokers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// This broker's certificate chain (PEM): served on both listeners and presented to the
    /// peers it dials.
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates (PEM) this broker trusts: for its peers (always required) and for
    /// clients that present a certificate.
    pub ca: PathBuf,
    /// Client certificates on the client listener (default `optional`).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The principals (certificate subject CN) that are brokers: only they are served on the
    /// internal listener. A trailing `*` matches any rest. Default `["broker-*"]`.
    #[serde(default = "default_broker_principals")]
    pub broker_principals: Vec<String>,
}

/// The principals of brokers' certificates unless configured otherwise.
pub fn default_broker_principals() -> Vec<String> {
    vec!["broker-*".to_string()]
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the combination (a key that does not match its certificate, say).
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The one crypto provider of the process's TLS (tonic's client side uses ring too). rustls
/// deprecates ring's provider for lacking post-quantum key exchange; aws-lc-rs, which has it,
/// needs a C/CMake build of its own. Revisit when the build can afford it (docs/security.md).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in it"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(Arc::new(roots))
}

/// The principal a certificate names: its subject's common name, else its first DNS name.
pub fn principal_of(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    if let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        return Some(cn.to_string());
    }
    let names = cert.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
        _ => None,
    })
}

/// Whether `principal` matches one of `patterns` (exact, or a prefix before a trailing `*`).
pub fn principal_matches(patterns: &[String], principal: &str) -> bool {
    patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => principal.starts_with(prefix),
        None => principal == pattern,
    })
}

/// What a listener's certificate verifier admits in the handshake.
#[derive(Debug)]
enum Admission {
    /// The internal listener: a certificate chained to the cluster's CA whose principal
    /// matches one of these (brokers); everyone else is refused in the handshake.
    Brokers(Vec<String>),
    /// The client listener: a certificate is asked for and the client must prove it holds its
    /// key, but judging it is left to [`ClientCheck`] after the handshake. With TLS 1.3 a
    /// client learns that the server refused its certificate only after it has sent its first
    /// request, and then sees a broken pipe, not a reason; judged afterwards, the refusal
    /// reaches it as a gRPC error naming what is wrong (expired, unknown CA, none presented).
    JudgedAfterHandshake,
}

/// A listener's client-certificate verifier.
#[derive(Debug)]
struct ListenerVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    admission: Admission,
}

impl ClientCertVerifier for ListenerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        matches!(self.admission, Admission::Brokers(_))
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let Admission::Brokers(principals) = &self.admission else {
            // Judged by `ClientCheck::judge` once the handshake is done; the signature checks
            // below still prove the client holds the certificate's key.
            return Ok(ClientCertVerified::assertion());
        };
        self.chain.verify_client_cert(end_entity, intermediates, now)?;
        let principal = principal_of(end_entity).unwrap_or_default();
        if principal_matches(principals, &principal) {
            return Ok(ClientCertVerified::assertion());
        }
        tracing::warn!(
            %principal,
            allowed = ?principals,
            "internal listener: refused a certificate whose principal is not a broker"
        );
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Judges a client's certificate after the handshake (see [`Admission::JudgedAfterHandshake`]).
#[derive(Clone)]
pub struct ClientCheck {
    chain: Arc<dyn ClientCertVerifier>,
    required: bool,
}

/// Who a connection's client is, once judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// No certificate, and none required.
    Anonymous,
    /// A valid certificate naming this principal.
    Principal(String),
    /// Refused, for this reason: every request on the connection is answered with it.
    Refused(String),
}

impl ClientCheck {
    /// The identity `certs` (the client's chain, end entity first; empty when none) prove.
    pub fn judge(&self, certs: &[CertificateDer<'_>]) -> ClientIdentity {
        let Some((end_entity, intermediates)) = certs.split_first() else {
            return match self.required {
                true => {
                    ClientIdentity::Refused("this listener requires a client certificate; none was presented".into())
                }
                false => ClientIdentity::Anonymous,
            };
        };
        match self
            .chain
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
        {
            Ok(_) => match principal_of(end_entity) {
                Some(principal) => ClientIdentity::Principal(principal),
                None => {
                    ClientIdentity::Refused("the client certificate names no principal (no CN, no DNS name)".into())
                }
            },
            Err(error) => ClientIdentity::Refused(format!("the client certificate was refused: {error}")),
        }
    }
}

/// What is read from the three files, built into both listeners' configurations.
struct Loaded {
    client_listener: Arc<ServerConfig>,
    client_check: Option<ClientCheck>,
    internal_listener: Arc<ServerConfig>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
}

fn load(settings: &TlsSettings) -> Result<Loaded, TlsError> {
    let certs = load_certs(&settings.cert)?;
    let key = load_key(&settings.key)?;
    let roots = load_roots(&settings.ca)?;
    let read = |path: &Path| std::fs::read(path).map_err(|e| file_error(path, e));
    let config_error = |e: rustls::Error| TlsError::Config(e.to_string());
    let verifier_error = |e: rustls::server::VerifierBuilderError| TlsError::Config(e.to_string());

    let client_check = match settings.client_auth {
        ClientAuth::None => None,
        mode => Some(ClientCheck {
            chain: WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
                .build()
                .map_err(verifier_error)?,
            required: mode == ClientAuth::Required,
        }),
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let mut client_listener = match &client_check {
        Some(check) => builder.with_client_cert_verifier(Arc::new(ListenerVerifier {
            chain: Arc::clone(&check.chain),
            admission: Admission::JudgedAfterHandshake,
        })),
        None => builder.with_no_client_auth(),
    }
    .with_single_cert(certs.clone(), key.clone_key())
    .map_err(config_error)?;
    client_listener.alpn_protocols = vec![b"h2".to_vec()];

    let brokers_only = ListenerVerifier {
        chain: WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(verifier_error)?,
        admission: Admission::Brokers(settings.broker_principals.clone()),
    };
    let mut internal_listener = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_client_cert_verifier(Arc::new(brokers_only))
        .with_single_cert(certs, key)
        .map_err(config_error)?;
    internal_listener.alpn_protocols = vec![b"h2".to_vec()];

    Ok(Loaded {
        client_listener: Arc::new(client_listener),
        client_check,
        internal_listener: Arc::new(internal_listener),
        cert_pem: read(&settings.cert)?,
        key_pem: read(&settings.key)?,
        ca_pem: read(&settings.ca)?,
    })
}

/// A listener's TLS acceptor and the judge of its clients' certificates (none on the internal
/// listener, which refuses in the handshake), swapped in place when the certificates are
/// reloaded: each new connection takes the current ones.
#[derive(Clone)]
pub struct Acceptor(Arc<RwLock<(TlsAcceptor, Option<ClientCheck>)>>);

impl Acceptor {
    fn new(config: Arc<ServerConfig>, check: Option<ClientCheck>) -> Acceptor {
        Acceptor(Arc::new(RwLock::new((TlsAcceptor::from(config), check))))
    }

    /// The acceptor and the judge for the next connection.
    pub fn current(&self) -> (TlsAcceptor, Option<ClientCheck>) {
        self.0.read().expect("acceptor lock").clone()
    }

    fn replace(&self, config: Arc<ServerConfig>, check: Option<ClientCheck>) {
        *self.0.write().expect("acceptor lock") = (TlsAcceptor::from(config), check);
    }
}

/// A broker's TLS: both listeners' acceptors and its identity as a client of its peers.
pub struct BrokerTls {
    settings: TlsSettings,
    /// The client listener's acceptor.
    pub client_listener: Acceptor,
    /// The internal listener's acceptor (brokers only).
    pub internal_listener: Acceptor,
    peer_identity: tonic::transport::ClientTlsConfig,
    stamps: Mutex<[Option<SystemTime>; 3]>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl BrokerTls {
    /// Reads the certificate, key and CA of `settings`.
    pub fn load(settings: &TlsSettings) -> Result<BrokerTls, TlsError> {
        let stamps = Self::stamps_of(settings);
        let loaded = load(settings)?;
        Ok(BrokerTls {
            settings: settings.clone(),
            client_listener: Acceptor::new(loaded.client_listener, loaded.client_check),
            internal_listener: Acceptor::new(loaded.internal_listener, None),
            peer_identity: tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&loaded.ca_pem))
                .identity(tonic::transport::Identity::from_pem(&loaded.cert_pem, &loaded.key_pem)),
            stamps: Mutex::new(stamps),
        })
    }

    fn stamps_of(settings: &TlsSettings) -> [Option<SystemTime>; 3] {
        [
            modified(&settings.cert),
            modified(&settings.key),
            modified(&settings.ca),
        ]
    }

    /// How this broker dials its peers: trusting the CA, presenting its certificate.
    pub fn peer_client_config(&self) -> tonic::transport::ClientTlsConfig {
        self.peer_identity.clone()
    }

    /// Reloads the files if any changed since they were last read; true when the listeners
    /// now serve new certificates. A file that fails to load leaves the old ones in place (and
    /// is retried at the next change).
    pub fn reload_if_changed(&self) -> bool {
        let now = Self::stamps_of(&self.settings);
        let mut stamps = self.stamps.lock().expect("tls stamps");
        if *stamps == now {
            return false;
        }
        *stamps = now;
        match load(&self.settings) {
            Ok(loaded) => {
                self.client_listener
                    .replace(loaded.client_listener, loaded.client_check);
                self.internal_listener.replace(loaded.internal_listener, None);
                tracing::info!(cert = %self.settings.cert.display(), "TLS certificates reloaded");
                true
            }
            Err(error) => {
                tracing::error!(%error, "TLS certificates changed but could not be loaded; serving the old ones");
                false
            }
        }
    }

    /// Checks the files every `every` and reloads them when they change, so a renewed
    /// certificate is served without a restart (connections open already keep theirs; the
    /// identity this broker presents to peers is the one it started with).
    pub async fn reload_every(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload_if_changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_match_exactly_or_by_prefix() {
        let patterns = vec!["broker-*".to_string(), "ops".to_string()];
        assert!(principal_matches(&patterns, "broker-1"));
        assert!(principal_matches(&patterns, "ops"));
        assert!(!principal_matches(&patterns, "ops-2"));
        assert!(!principal_matches(&patterns, "client"));
        assert!(!principal_matches(&patterns, ""));
    }

    #[test]
    fn a_certificate_names_its_principal_and_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::security::local_ca::LocalCa::new("test CA").unwrap();
        let files = ca.write_broker(dir.path(), 7).unwrap();
        let der = load_certs(&files.cert).unwrap().remove(0);
        assert_eq!(principal_of(&der).as_deref(), Some("broker-7"));
        let settings = TlsSettings {
            cert: files.cert.clone(),
            key: files.key.clone(),
            ca: files.ca.clone(),
            client_auth: ClientAuth::Optional,
            broker_principals: default_broker_principals(),
        };
        let tls = BrokerTls::load(&settings).unwrap();
        assert!(!tls.reload_if_changed(), "nothing changed");

        // A key that is not PEM is a clear error naming the file.
        std::fs::write(&files.key, "not a key").unwrap();
        let error = BrokerTls::load(&settings).err().unwrap().to_string();
        assert!(error.contains(&files.key.display().to_string()), "{error}");
    }

    /// The certificate the client listener serves to a TLS client trusting `ca`.
    async fn served_certificate(tls: &BrokerTls, ca: &Path) -> CertificateDer<'static> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (acceptor, _) = tls.client_listener.current();
        let server = tokio::spawn(async move { acceptor.accept(server_io).await.map(|_| ()) });
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(load_roots(ca).unwrap())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, client_io)
            .await
            .unwrap();
        server.await.unwrap().unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::security::local_ca::LocalCa::new("test CA").unwrap();
        let files = ca.write_broker(dir.path(), 1).unwrap();
        let settings = TlsSettings {
            cert: files.cert.clone(),
            key: files.key.clone(),
            ca: files.ca.clone(),
            client_auth: ClientAuth::Optional,
            broker_principals: default_broker_principals(),
        };
        let tls = BrokerTls::load(&settings).unwrap();
        let first = served_certificate(&tls, &files.ca).await;
        assert_eq!(first, load_certs(&files.cert).unwrap()[0]);

        // Renewed in place (a new key and certificate), stamped later than the first: file
        // times are coarse, two writes within a few milliseconds may carry the same one.
        ca.write_broker(dir.path(), 1).unwrap();
        let later = SystemTime::now() + Duration::from_secs(2);
        for path in [&files.cert, &files.key] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        assert!(tls.reload_if_changed());
        let renewed = served_certificate(&tls, &files.ca).await;
        assert_ne!(renewed, first);
        assert_eq!(renewed, load_certs(&files.cert).unwrap()[0]);
        assert!(!tls.reload_if_changed(), "loaded once per change");
    }
}
