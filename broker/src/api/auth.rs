//! The `broker.v1.Auth` service: a SCRAM-SHA-256 exchange (`proto::scram`, the server side)
//! against the users in the controller's metadata, ending with a session token
//! (`security::tokens`). An unknown user goes through the same steps as a wrong password and
//! gets the same answer.

use crate::controller::metadata::UserCredentials;
use crate::controller::Controller;
use crate::security::tokens;
use proto::scram::{ClientFirst, Credentials, ServerExchange, MECHANISM};
use proto::v1::auth_server::{Auth, AuthServer};
use proto::v1::{ErrorCode, SaslMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How long a client may take to send its next message of an exchange.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The authentication service of one broker.
pub struct AuthApi {
    controller: Arc<Controller>,
    token_lifetime: Duration,
}

impl AuthApi {
    /// Checks passwords against `controller`'s users; tokens last `token_lifetime`.
    pub fn new(controller: Arc<Controller>, token_lifetime: Duration) -> AuthApi {
        AuthApi {
            controller,
            token_lifetime,
        }
    }

    /// The tonic service to mount.
    pub fn into_service(self) -> AuthServer<AuthApi> {
        AuthServer::new(self)
    }
}

/// A failed exchange: its wire code and message.
type Failure = (ErrorCode, String);

fn failed(error: impl std::fmt::Display) -> Failure {
    (ErrorCode::SaslAuthenticationFailed, error.to_string())
}

async fn next_step(inbound: &mut Streaming<SaslMessage>) -> Result<SaslMessage, Failure> {
    match tokio::time::timeout(STEP_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(failed("the client ended the exchange")),
        Ok(Err(status)) => Err(failed(status.message())),
        Err(_) => Err(failed(format!("no message within {STEP_TIMEOUT:?}"))),
    }
}

fn to_scram(stored: &UserCredentials) -> Credentials {
    Credentials {
        salt: stored.salt.clone(),
        iterations: stored.iterations,
        stored_key: stored.stored_key.clone(),
        server_key: stored.server_key.clone(),
    }
}

async fn exchange(
    controller: &Controller,
    token_lifetime: Duration,
    inbound: &mut Streaming<SaslMessage>,
    outbound: &mpsc::Sender<Result<SaslMessage, Status>>,
) -> Result<(), Failure> {
    let first = next_step(inbound).await?;
    if first.mechanism != MECHANISM {
        return Err(failed(format!(
            "mechanism {:?} is not supported (only {MECHANISM})",
            first.mechanism
        )));
    }
    let client_first = ClientFirst::parse(&first.message).map_err(failed)?;
    let metadata = controller.metadata();
    let credentials = match metadata.users.get(&client_first.user) {
        Some(stored) => to_scram(stored),
        // The same salt for the same unknown name every time (and on every broker).
        None => Credentials::unknown_user(metadata.token_key.as_deref().unwrap_or_default(), &client_first.user),
    };
    let (server, server_first) = ServerExchange::start(&client_first, credentials);
    let answer = SaslMessage {
        message: server_first,
        ..SaslMessage::default()
    };
    outbound
        .send(Ok(answer))
        .await
        .map_err(|_| failed("the client went away"))?;
    let last = next_step(inbound).await?;
    let server_final = server.finish(&last.message).map_err(|error| {
        tracing::info!(user = %client_first.user, %error, "SCRAM authentication failed");
        failed(error)
    })?;
    let key = controller.metadata().token_key.clone().ok_or_else(|| {
        (
            ErrorCode::RequestTimedOut,
            "the cluster's token key is not set up yet; try again".to_string(),
        )
    })?;
    let expires_ms = tokens::now_ms() + token_lifetime.as_millis() as u64;
    let answer = SaslMessage {
        message: server_final,
        token: tokens::mint(&key, &client_first.user, expires_ms),
        token_expires_ms: expires_ms,
        token_lifetime_ms: token_lifetime.as_millis() as u64,
        ..SaslMessage::default()
    };
    outbound
        .send(Ok(answer))
        .await
        .map_err(|_| failed("the client went away"))
}

#[tonic::async_trait]
impl Auth for AuthApi {
    type AuthenticateStream = ReceiverStream<Result<SaslMessage, Status>>;

    async fn authenticate(
        &self,
        request: Request<Streaming<SaslMessage>>,
    ) -> Result<Response<Self::AuthenticateStream>, Status> {
        let mut inbound = request.into_inner();
        let (outbound, answers) = mpsc::channel(2);
        let controller = Arc::clone(&self.controller);
        let token_lifetime = self.token_lifetime;
        tokio::spawn(async move {
            if let Err((code, message)) = exchange(&controller, token_lifetime, &mut inbound, &outbound).await {
                let refusal = SaslMessage {
                    error: code as i32,
                    error_message: message,
                    ..SaslMessage::default()
                };
                let _ = outbound.send(Ok(refusal)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(answers)))
    }
}
