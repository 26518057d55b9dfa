//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash): a password check in which neither the
//! password nor anything that lets one log in travels or is stored. The server keeps only the
//! salted, iterated keys ([`Credentials`]); the client proves it knows the password, and the
//! server proves it holds the keys. Both sides live here so the client and the broker cannot
//! disagree. No channel binding (`n,,`): TLS carries the exchange.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::SecureRandom;
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;

/// The mechanism's name, as Kafka's `sasl.mechanism` spells it.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// The fewest PBKDF2 iterations accepted (RFC 7677's minimum, Kafka's too).
pub const MIN_ITERATIONS: u32 = 4096;
/// The count `broker user create` uses unless told otherwise.
pub const DEFAULT_ITERATIONS: u32 = 8192;
/// The most accepted: a server naming more could make a client spin for minutes.
pub const MAX_ITERATIONS: u32 = 16_384 * 64;

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message did not follow the grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Unknown user or wrong password (deliberately the same answer).
    #[error("authentication failed: unknown user or wrong password")]
    Failed,
    /// The server's proof did not match: it does not hold this user's keys.
    #[error("the server could not prove it knows the credentials")]
    ServerNotVerified,
    /// The server asked for an iteration count out of bounds.
    #[error("iteration count {0} out of bounds ({MIN_ITERATIONS}..={MAX_ITERATIONS})")]
    Iterations(u32),
}

/// What the server stores for a user: never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), message)
        .as_ref()
        .to_vec()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().to_vec()
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let iterations = NonZeroU32::new(iterations.max(1)).expect("at least one");
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

fn random_bytes(count: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; count];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random source");
    bytes
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

impl Credentials {
    /// The keys of `password` with a fresh random salt and `iterations`.
    pub fn new(password: &str, iterations: u32) -> Result<Credentials, ScramError> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        Ok(Credentials::with_salt(password, random_bytes(16), iterations))
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Credentials {
        let salted = salted_password(password, &salt, iterations);
        Credentials {
            stored_key: sha256(&hmac(&salted, b"Client Key")),
            server_key: hmac(&salted, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// Stand-in keys for a user that does not exist: the exchange runs its course and fails at
    /// the proof. The salt is derived from `secret` and the name, so asking twice shows the same
    /// one, as for a real user; the iteration count is [`DEFAULT_ITERATIONS`] (a user created
    /// with another count can still be told apart by it).
    pub fn unknown_user(secret: &[u8], user: &str) -> Credentials {
        let mut salt = hmac(secret, format!("unknown-user-salt:{user}").as_bytes());
        salt.truncate(16);
        Credentials {
            salt,
            iterations: DEFAULT_ITERATIONS,
            stored_key: random_bytes(32),
            server_key: random_bytes(32),
        }
    }
}

/// A username as SCRAM writes it (`,` and `=` escaped).
fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in the username")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of attribute `key` (`k=value`) among `message`'s comma-separated fields.
fn attribute(message: &str, key: char) -> Option<&str> {
    message.split(',').find_map(|field| {
        let mut chars = field.chars();
        (chars.next() == Some(key) && chars.next() == Some('=')).then(|| &field[2..])
    })
}

fn nonce() -> String {
    BASE64.encode(random_bytes(18))
}

/// The client's side of one exchange.
pub struct ClientExchange {
    password: String,
    client_first_bare: String,
    client_nonce: String,
    expected_server_signature: Option<Vec<u8>>,
}

impl ClientExchange {
    /// Starts an exchange for `user` with `password`.
    pub fn new(user: &str, password: &str) -> ClientExchange {
        let client_nonce = nonce();
        ClientExchange {
            password: password.to_string(),
            client_first_bare: format!("n={},r={client_nonce}", encode_name(user)),
            client_nonce,
            expected_server_signature: None,
        }
    }

    /// The first message (`n,,n=user,r=nonce`).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answers the server's first message with the proof.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramError> {
        let nonce = attribute(server_first, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::Malformed("the server's nonce does not extend the client's"));
        }
        let salt = attribute(server_first, 's')
            .and_then(|s| BASE64.decode(s).ok())
            .ok_or(ScramError::Malformed("no salt"))?;
        let iterations: u32 = attribute(server_first, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed("no iteration count"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let client_signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        let server_key = hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server's final message (its signature).
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        if attribute(server_final, 'e').is_some() {
            return Err(ScramError::Failed);
        }
        let signature = attribute(server_final, 'v')
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or(ScramError::Malformed("no server signature"))?;
        match &self.expected_server_signature {
            Some(expected) if bool::from(expected.ct_eq(&signature)) => Ok(()),
            _ => Err(ScramError::ServerNotVerified),
        }
    }
}

/// The user a client's first message names, and the rest the server needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The username.
    pub user: String,
    client_nonce: String,
    bare: String,
}

impl ClientFirst {
    /// Parses `n,,n=user,r=nonce` (no channel binding, no authorisation identity).
    pub fn parse(message: &str) -> Result<ClientFirst, ScramError> {
        let bare = message
            .strip_prefix("n,,")
            .ok_or(ScramError::Malformed("expected the gs2 header \"n,,\""))?;
        let user = decode_name(attribute(bare, 'n').ok_or(ScramError::Malformed("no username"))?)?;
        let client_nonce = attribute(bare, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if user.is_empty() || client_nonce.is_empty() {
            return Err(ScramError::Malformed("empty username or nonce"));
        }
        Ok(ClientFirst {
            user,
            client_nonce: client_nonce.to_string(),
            bare: bare.to_string(),
        })
    }
}

/// The server's side of one exchange, after the client's first message.
pub struct ServerExchange {
    credentials: Credentials,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Answers `first` for a user whose keys are `credentials` (or
    /// [`Credentials::unknown_user`]); returns the exchange and the server's first message.
    pub fn start(first: &ClientFirst, credentials: Credentials) -> (ServerExchange, String) {
        let nonce = format!("{}{}", first.client_nonce, self::nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credentials.salt),
            credentials.iterations
        );
        let exchange = ServerExchange {
            credentials,
            client_first_bare: first.bare.clone(),
            server_first: server_first.clone(),
            nonce,
        };
        (exchange, server_first)
    }

    /// Checks the client's proof; returns the server's final message (its own proof).
    pub fn finish(&self, client_final: &str) -> Result<String, ScramError> {
        let nonce = attribute(client_final, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Malformed("the nonce changed"));
        }
        if attribute(client_final, 'c') != Some("biws") {
            return Err(ScramError::Malformed("channel binding is not supported"));
        }
        let proof = attribute(client_final, 'p')
            .and_then(|p| BASE64.decode(p).ok())
            .ok_or(ScramError::Malformed("no proof"))?;
        let without_proof = client_final
            .rsplit_once(",p=")
            .map(|(head, _)| head)
            .ok_or(ScramError::Malformed("no proof"))?;
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let client_signature = hmac(&self.credentials.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::Failed);
        }
        let client_key = xor(&proof, &client_signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.credentials.stored_key)) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&self.credentials.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(stored_for: &str, tried: &str) -> Result<(), ScramError> {
        let credentials = Credentials::new(stored_for, MIN_ITERATIONS).unwrap();
        let mut client = ClientExchange::new("al,i=ce", tried);
        let first = ClientFirst::parse(&client.client_first())?;
        assert_eq!(first.user, "al,i=ce", "names round-trip their escapes");
        let (server, server_first) = ServerExchange::start(&first, credentials);
        let client_final = client.client_final(&server_first)?;
        let server_final = server.finish(&client_final)?;
        client.verify_server_final(&server_final)
    }

    #[test]
    fn the_right_password_passes_both_ways_and_a_wrong_one_fails() {
        exchange("s3cret", "s3cret").unwrap();
        assert_eq!(exchange("s3cret", "guess"), Err(ScramError::Failed));
    }

    #[test]
    fn rfc_7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let credentials = Credentials::with_salt("pencil", BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(), 4096);
        let first = ClientFirst::parse("n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let server = ServerExchange {
            credentials,
            client_first_bare: first.bare.clone(),
            server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        };
        let server_final = server
            .finish(
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(server_final, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn an_unknown_user_fails_like_a_wrong_password_and_bad_input_is_refused() {
        let mut client = ClientExchange::new("nobody", "x");
        let first = ClientFirst::parse(&client.client_first()).unwrap();
        let (server, server_first) = ServerExchange::start(&first, Credentials::unknown_user(b"key", "nobody"));
        let client_final = client.client_final(&server_first).unwrap();
        assert_eq!(server.finish(&client_final), Err(ScramError::Failed));
        let salt = |user| Credentials::unknown_user(b"key", user).salt;
        assert_eq!(
            salt("nobody"),
            salt("nobody"),
            "the same salt every time, as a real user's"
        );
        assert_ne!(salt("nobody"), salt("somebody"));

        assert!(ClientFirst::parse("y,,n=a,r=b").is_err(), "channel binding asked for");
        assert!(ClientFirst::parse("n,,n=a=ZZ,r=b").is_err(), "bad escape");
        assert!(ClientFirst::parse("n,,r=b").is_err(), "no user");
        let mut client = ClientExchange::new("a", "b");
        let first = ClientFirst::parse(&client.client_first()).unwrap();
        let (_, server_first) = ServerExchange::start(&first, Credentials::unknown_user(b"key", "a"));
        let server_first = server_first.replace("i=8192", "i=4096");
        let too_many = server_first.replace("i=4096", "i=999999999");
        assert!(matches!(client.client_final(&too_many), Err(ScramError::Iterations(_))));
        assert!(Credentials::new("p", 10).is_err(), "too few iterations");
    }
}
