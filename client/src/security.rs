//! How a client reaches brokers: plaintext, or TLS trusting a CA and optionally presenting a
//! certificate (mutual TLS). Set in code ([`Security::tls`]), from Kafka-style properties
//! ([`Security::from_properties`]: `security.protocol`, `ssl.ca.location`,
//! `ssl.certificate.location`, `ssl.key.location`) or from the environment
//! ([`Security::from_env`]: the same names upper-cased with `BROKER_` in front, dots as
//! underscores, e.g. `BROKER_SSL_CA_LOCATION`). With SCRAM-SHA-256 (`SASL_SSL`,
//! `SASL_PLAINTEXT`) the client earns a session token with its password and sends the token.

use crate::error::ClientError;
use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A client's transport security.
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<ClientTlsConfig>,
    scram: Option<(String, String)>,
}

impl std::fmt::Debug for Security {
    // Never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("scram_user", &self.scram.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// The property names this client reads, Kafka's (librdkafka's) where they exist.
pub const SECURITY_PROTOCOL: &str = "security.protocol";
/// PEM file of the CA certificates to trust.
pub const SSL_CA_LOCATION: &str = "ssl.ca.location";
/// PEM file of the client's certificate (mutual TLS).
pub const SSL_CERTIFICATE_LOCATION: &str = "ssl.certificate.location";
/// PEM file of the client's private key (mutual TLS).
pub const SSL_KEY_LOCATION: &str = "ssl.key.location";
/// The SASL mechanism: only `SCRAM-SHA-256`.
pub const SASL_MECHANISM: &str = "sasl.mechanism";
/// The SCRAM user name.
pub const SASL_USERNAME: &str = "sasl.username";
/// The SCRAM password.
pub const SASL_PASSWORD: &str = "sasl.password";

fn read(path: &str, what: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(Path::new(path)).map_err(|e| ClientError::Config(format!("{what} {path}: {e}")))
}

impl Security {
    /// No TLS (Kafka's `PLAINTEXT`).
    pub fn plaintext() -> Security {
        Security::default()
    }

    /// TLS trusting the CA certificates `ca_pem`; with `identity` (certificate and key, PEM)
    /// the client presents it (mutual TLS).
    pub fn tls(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Security {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some((cert, key)) = identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        Security {
            tls: Some(config),
            scram: None,
        }
    }

    /// The same, authenticating as `user` with `password` (SCRAM-SHA-256: the password never
    /// leaves the client; a session token goes with each request).
    pub fn with_scram(mut self, user: &str, password: &str) -> Security {
        self.scram = Some((user.to_string(), password.to_string()));
        self
    }

    /// The SCRAM user and password, if set.
    pub fn scram(&self) -> Option<(&str, &str)> {
        self.scram
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// From properties named as Kafka's: `security.protocol` is `PLAINTEXT` (the default),
    /// `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`; with TLS, `ssl.ca.location` is required and
    /// `ssl.certificate.location` with `ssl.key.location` present a client certificate; with
    /// SASL, `sasl.mechanism` (only `SCRAM-SHA-256`, the default), `sasl.username` and
    /// `sasl.password`.
    pub fn from_properties(property: impl Fn(&str) -> Option<String>) -> Result<Security, ClientError> {
        let protocol = property(SECURITY_PROTOCOL)
            .unwrap_or_else(|| "PLAINTEXT".to_string())
            .to_ascii_uppercase();
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => {
                return Err(ClientError::Config(format!(
                    "{SECURITY_PROTOCOL}={other}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                )))
            }
        };
        let refuse_set = |names: &[&str], needs: &str| match names.iter().find(|name| property(name).is_some()) {
            Some(name) => Err(ClientError::Config(format!(
                "{name} is set but {SECURITY_PROTOCOL} is {protocol} (set it to {needs})"
            ))),
            None => Ok(()),
        };
        let mut security = if tls {
            let ca_path = property(SSL_CA_LOCATION).ok_or_else(|| {
                ClientError::Config(format!("{SECURITY_PROTOCOL}={protocol} needs {SSL_CA_LOCATION}"))
            })?;
            let ca = read(&ca_path, "CA file")?;
            match (property(SSL_CERTIFICATE_LOCATION), property(SSL_KEY_LOCATION)) {
                (None, None) => Security::tls(&ca, None),
                (Some(cert), Some(key)) => {
                    let cert = read(&cert, "certificate")?;
                    let key = read(&key, "key")?;
                    Security::tls(&ca, Some((&cert, &key)))
                }
                _ => {
                    return Err(ClientError::Config(format!(
                        "{SSL_CERTIFICATE_LOCATION} and {SSL_KEY_LOCATION} go together"
                    )))
                }
            }
        } else {
            refuse_set(
                &[SSL_CA_LOCATION, SSL_CERTIFICATE_LOCATION, SSL_KEY_LOCATION],
                "SSL or SASL_SSL",
            )?;
            Security::plaintext()
        };
        if sasl {
            if let Some(mechanism) = property(SASL_MECHANISM) {
                if mechanism != proto::scram::MECHANISM {
                    return Err(ClientError::Config(format!(
                        "{SASL_MECHANISM}={mechanism}: only {} is supported",
                        proto::scram::MECHANISM
                    )));
                }
            }
            let user = property(SASL_USERNAME)
                .ok_or_else(|| ClientError::Config(format!("{SECURITY_PROTOCOL}={protocol} needs {SASL_USERNAME}")))?;
            let password = property(SASL_PASSWORD)
                .ok_or_else(|| ClientError::Config(format!("{SECURITY_PROTOCOL}={protocol} needs {SASL_PASSWORD}")))?;
            security = security.with_scram(&user, &password);
        } else {
            refuse_set(&[SASL_USERNAME, SASL_PASSWORD], "SASL_PLAINTEXT or SASL_SSL")?;
        }
        Ok(security)
    }

    /// From the environment: `BROKER_SECURITY_PROTOCOL`, `BROKER_SSL_CA_LOCATION`,
    /// `BROKER_SSL_CERTIFICATE_LOCATION`, `BROKER_SSL_KEY_LOCATION`, `BROKER_SASL_MECHANISM`,
    /// `BROKER_SASL_USERNAME`, `BROKER_SASL_PASSWORD` (see
    /// [`from_properties`](Self::from_properties)); plaintext when none is set.
    pub fn from_env() -> Result<Security, ClientError> {
        Security::from_properties(|name| std::env::var(env_name(name)).ok().filter(|v| !v.is_empty()))
    }

    /// The endpoint of a broker at `address` (`host:port`), for a tonic channel of one's own.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, String> {
        match &self.tls {
            None => Endpoint::from_shared(format!("http://{address}")).map_err(|e| e.to_string()),
            Some(tls) => Endpoint::from_shared(format!("https://{address}"))
                .and_then(|endpoint| endpoint.tls_config(tls.clone()))
                .map_err(|e| e.to_string()),
        }
    }
}

/// The environment variable of property `name`: `ssl.ca.location` → `BROKER_SSL_CA_LOCATION`.
pub fn env_name(name: &str) -> String {
    format!("BROKER_{}", name.to_ascii_uppercase().replace('.', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Security, ClientError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Security::from_properties(|name| map.get(name).cloned())
    }

    #[test]
    fn properties_choose_plaintext_or_tls_and_refuse_half_settings() {
        assert!(!from(&[]).unwrap().is_tls());
        assert!(!from(&[("security.protocol", "plaintext")]).unwrap().is_tls());
        let error = from(&[("security.protocol", "SSL")]).unwrap_err().to_string();
        assert!(error.contains("ssl.ca.location"), "{error}");
        let error = from(&[("ssl.ca.location", "/x")]).unwrap_err().to_string();
        assert!(error.contains("PLAINTEXT"), "{error}");
        let error = from(&[("security.protocol", "KERBEROS")]).unwrap_err().to_string();
        assert!(error.contains("expected PLAINTEXT, SSL"), "{error}");
        let error = from(&[("security.protocol", "SASL_PLAINTEXT"), ("sasl.username", "a")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("sasl.password"), "{error}");
        let scram = from(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.username", "alice"),
            ("sasl.password", "pw"),
        ])
        .unwrap();
        assert_eq!(scram.scram(), Some(("alice", "pw")));
        assert!(!scram.is_tls());
        let error = from(&[("sasl.username", "a")]).unwrap_err().to_string();
        assert!(error.contains("SASL_PLAINTEXT or SASL_SSL"), "{error}");
        let error = from(&[("security.protocol", "SSL"), ("ssl.ca.location", "/nonexistent/ca.pem")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        assert_eq!(env_name("ssl.key.location"), "BROKER_SSL_KEY_LOCATION");
    }
}
