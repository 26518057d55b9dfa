//! SCRAM-SHA-256 sessions: every request to a broker carries a session token, earned with a
//! SCRAM exchange (`proto::scram`, the client side) the first time one is needed and again
//! before it expires. [`SessionChannel`] wraps a broker's channel; all of a client's channels
//! share one [`Session`] (a token is valid on every broker of the cluster), and one exchange
//! runs at a time.

use proto::scram::{ClientExchange, MECHANISM};
use proto::v1::auth_client::AuthClient;
use proto::v1::{ErrorCode, SaslMessage};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::Service;
use tonic::transport::Channel;
use tonic::Status;

/// A user's credentials and the token they earned.
pub(crate) struct Session {
    user: String,
    password: String,
    token: tokio::sync::Mutex<Option<Token>>,
}

struct Token {
    header: http::HeaderValue,
    /// Renewed after this (four fifths of its lifetime), so it never expires in use.
    renew_after: Instant,
}

impl Session {
    pub(crate) fn new(user: String, password: String) -> Session {
        Session {
            user,
            password,
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The `authorization` header of a valid token, earned over `channel` if need be.
    async fn header(&self, channel: Channel) -> Result<http::HeaderValue, Status> {
        let mut token = self.token.lock().await;
        if let Some(current) = token.as_ref().filter(|t| Instant::now() < t.renew_after) {
            return Ok(current.header.clone());
        }
        let exchanged = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(channel, &self.user, &self.password)).await;
        let (value, lifetime) =
            exchanged.map_err(|_| Status::unavailable(format!("no SCRAM answer within {EXCHANGE_TIMEOUT:?}")))??;
        let header = http::HeaderValue::from_str(&format!("Bearer {value}"))
            .map_err(|_| Status::internal("the broker sent a token that is not a header value"))?;
        *token = Some(Token {
            header: header.clone(),
            renew_after: Instant::now() + lifetime.mul_f64(0.8),
        });
        Ok(header)
    }
}

/// The answer's refusal as a status: a failed exchange is UNAUTHENTICATED (not retried), a
/// passing one (the cluster not ready) UNAVAILABLE.
fn refusal(answer: &SaslMessage) -> Option<Status> {
    match ErrorCode::try_from(answer.error).unwrap_or(ErrorCode::InvalidRequest) {
        ErrorCode::None => None,
        code if code.is_retriable() => Some(Status::unavailable(answer.error_message.clone())),
        _ => Some(Status::unauthenticated(format!(
            "SCRAM-SHA-256: {}",
            answer.error_message
        ))),
    }
}

/// How long one SCRAM exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// One SCRAM exchange: the token and how long it is valid (as the broker counts: no clock of
/// this machine is compared with the broker's).
async fn exchange(channel: Channel, user: &str, password: &str) -> Result<(String, Duration), Status> {
    let mut scram = ClientExchange::new(user, password);
    let (steps, outbound) = tokio::sync::mpsc::channel(2);
    let first = SaslMessage {
        mechanism: MECHANISM.to_string(),
        message: scram.client_first(),
        ..SaslMessage::default()
    };
    let _ = steps.send(first).await;
    let mut answers = AuthClient::new(channel)
        .authenticate(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let ended = || Status::unavailable("the broker ended the SCRAM exchange early");
    let server_first = answers.message().await?.ok_or_else(ended)?;
    if let Some(status) = refusal(&server_first) {
        return Err(status);
    }
    let client_final = scram
        .client_final(&server_first.message)
        .map_err(|error| Status::unauthenticated(format!("SCRAM-SHA-256: {error}")))?;
    let _ = steps
        .send(SaslMessage {
            message: client_final,
            ..SaslMessage::default()
        })
        .await;
    let last = answers.message().await?.ok_or_else(ended)?;
    if let Some(status) = refusal(&last) {
        return Err(status);
    }
    scram
        .verify_server_final(&last.message)
        .map_err(|error| Status::unauthenticated(format!("SCRAM-SHA-256: {error}")))?;
    Ok((last.token, Duration::from_millis(last.token_lifetime_ms)))
}

/// A broker's channel that puts the session's token (when there is a session) on every request.
#[derive(Clone)]
pub(crate) struct SessionChannel {
    inner: Channel,
    session: Option<Arc<Session>>,
}

impl SessionChannel {
    pub(crate) fn new(inner: Channel, session: Option<Arc<Session>>) -> SessionChannel {
        SessionChannel { inner, session }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<http::Request<Body>> for SessionChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.session {
            None => self.inner.poll_ready(cx).map_err(Into::into),
            // Readiness is awaited in `call`, after the token: holding a slot of the channel's
            // buffer while an exchange waits for one could deadlock a busy channel.
            Some(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(session) = self.session.clone() else {
            let answer = self.inner.call(request);
            return Box::pin(async move { answer.await.map_err(Into::into) });
        };
        let mut channel = self.inner.clone();
        let for_exchange = self.inner.clone();
        Box::pin(async move {
            // A status error reaches the caller as that status (tonic looks for one).
            let header = session
                .header(for_exchange)
                .await
                .map_err(|s| Box::new(s) as BoxError)?;
            request.headers_mut().insert(http::header::AUTHORIZATION, header);
            std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
            channel.call(request).await.map_err(Into::into)
        })
    }
}
