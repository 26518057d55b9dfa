//! A throwaway certificate authority: `broker dev --tls`, `broker perf --tls` and the tests make
//! one, issue each broker a certificate (principal `broker-<id>`, valid for 127.0.0.1 and
//! localhost) and a client one, and write them as PEM files. Not for production: a real
//! deployment's certificates come from its own PKI (docs/security.md).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The files of one issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA's certificate (PEM), to trust.
    pub ca: PathBuf,
}

/// A certificate authority held in memory.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A broker: serves both listeners and dials its peers.
    Broker,
    /// A client (or a program pretending to be a broker).
    Client,
}

/// How long an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From 1975 to 4096 (rcgen's defaults).
    Long,
    /// Expired at the end of 2020.
    Expired,
}

impl LocalCa {
    /// A new CA named `name`, with a fresh key.
    pub fn new(name: &str) -> Result<LocalCa, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(LocalCa {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// The CA's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `principal` (its subject CN), valid for 127.0.0.1 and localhost;
    /// returns the certificate and key as PEM.
    pub fn issue(&self, principal: &str, role: Role, validity: Validity) -> Result<(String, String), rcgen::Error> {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, principal);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = match role {
            Role::Broker => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        if validity == Validity::Expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes `ca.pem` and `<name>.pem` / `<name>.key` for `principal` into `dir`.
    pub fn write(
        &self,
        dir: &Path,
        name: &str,
        principal: &str,
        role: Role,
        validity: Validity,
    ) -> std::io::Result<IssuedFiles> {
        std::fs::create_dir_all(dir)?;
        let (cert_pem, key_pem) = self.issue(principal, role, validity).map_err(std::io::Error::other)?;
        let files = IssuedFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.pem"),
        };
        // Each file appears whole (written aside, then renamed): a broker started already may
        // be reading `ca.pem` while the next broker's certificate is written.
        write_whole(&files.ca, self.cert_pem.as_bytes(), 0o644)?;
        write_whole(&files.cert, cert_pem.as_bytes(), 0o644)?;
        write_whole(&files.key, key_pem.as_bytes(), 0o600)?;
        Ok(files)
    }

    /// Broker `id`'s certificate (`broker-<id>.pem`, principal `broker-<id>`) in `dir`.
    pub fn write_broker(&self, dir: &Path, id: u64) -> std::io::Result<IssuedFiles> {
        let name = format!("broker-{id}");
        self.write(dir, &name, &name, Role::Broker, Validity::Long)
    }

    /// A client certificate (`<principal>.pem`) in `dir`.
    pub fn write_client(&self, dir: &Path, principal: &str) -> std::io::Result<IssuedFiles> {
        self.write(dir, principal, principal, Role::Client, Validity::Long)
    }
}

/// Writes `bytes` to `path` with permissions `mode` so that readers see the old file or the new
/// one, never a part: into a temporary file beside it, then renamed over it.
fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let staging = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&staging)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&staging, path)
}
