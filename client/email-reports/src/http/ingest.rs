//! `POST /webhooks/{provider}`: verify the raw bytes, parse, produce every event to
//! `email-events` (idempotent producer, acks=all, keyed by campaign) and answer 2xx only once
//! all of them are committed.
//!
//! Status codes are what each provider retries on: 401 bad signature or credentials (the
//! provider's configuration is wrong; it retries and the operator sees it), 400 a body we
//! cannot read (names the field), 413 over the body limit, 404 an unknown provider, 503 the
//! cluster did not take the events in time (the provider retries; what was written is
//! deduplicated by `(provider, event_id)` downstream, so the retry never counts twice).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use client::{Producer, ProducerRecord};
use serde_json::json;

use super::error_response;
use crate::providers::{parse, Entry, ParseOutcome};
use crate::reports::model::UNATTRIBUTED;
use crate::signature::Verifier;
use crate::{CarrierKeys, Provider};

/// What the webhook handler needs.
pub struct Ingest {
    /// The producer (idempotent, acks=all).
    pub producer: Producer,
    /// The events topic.
    pub topic: String,
    /// Where tenant and campaign are.
    pub keys: CarrierKeys,
    /// Signature and credential checks.
    pub verifier: Verifier,
}

/// Seconds a provider is asked to wait before retrying after a 503.
const RETRY_AFTER_SECONDS: &str = "5";

/// The webhook handler.
pub async fn webhook(
    State(ingest): State<Arc<Ingest>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let provider: Provider = match provider.parse() {
        Ok(provider) => provider,
        Err(error) => return error_response(StatusCode::NOT_FOUND, error.to_string()),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let verified = match ingest.verifier.verify(provider, &headers, &body, now) {
        Ok(verified) => verified,
        Err(error) => {
            tracing::info!(%provider, %error, "webhook refused");
            return error_response(StatusCode::UNAUTHORIZED, error.to_string());
        }
    };
    let outcome = match parse(provider, &body, &ingest.keys) {
        Ok(outcome) => outcome,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, format!("{provider} body: {error}")),
    };
    let entries = match outcome {
        ParseOutcome::SubscriptionConfirmation(confirmation) => {
            // Its signature verified above. This service never reaches the internet, so it
            // does not GET the SubscribeURL itself: the operator confirms it (the URL is
            // logged and returned) or uses ConfirmSubscription with the token.
            tracing::warn!(
                topic_arn = %confirmation.topic_arn,
                subscribe_url = %confirmation.subscribe_url,
                "SNS subscription confirmation received: confirm it by opening the SubscribeURL"
            );
            ingest.verifier.mark_accepted(&verified, now);
            return (
                StatusCode::OK,
                Json(json!({
                    "subscription_confirmation": {
                        "topic_arn": confirmation.topic_arn,
                        "subscribe_url": confirmation.subscribe_url,
                    }
                })),
            )
                .into_response();
        }
        ParseOutcome::Entries(entries) => entries,
    };
    let mut deliveries = Vec::with_capacity(entries.len());
    let mut ignored = 0usize;
    for entry in entries {
        let event = match entry {
            Entry::Event(event) => event,
            Entry::Ignored(why) => {
                tracing::debug!(%provider, path = %why.path, reason = %why.reason, "webhook entry ignored");
                ignored += 1;
                continue;
            }
        };
        let key = event.campaign.clone().unwrap_or_else(|| UNATTRIBUTED.to_owned());
        let value = serde_json::to_vec(&event).expect("canonical events serialise");
        let record = ProducerRecord::new(ingest.topic.clone(), value).key(key);
        match ingest.producer.send(record).await {
            Ok(delivery) => deliveries.push(delivery),
            Err(error) => return unavailable(provider, &error),
        }
    }
    let accepted = deliveries.len();
    for delivery in deliveries {
        if let Err(error) = delivery.await {
            return unavailable(provider, &error);
        }
    }
    ingest.verifier.mark_accepted(&verified, now);
    (
        StatusCode::OK,
        Json(json!({ "accepted": accepted, "ignored": ignored })),
    )
        .into_response()
}

/// Answers the HEAD a provider sends when a webhook is created (Mandrill).
pub async fn probe() -> StatusCode {
    StatusCode::OK
}

fn unavailable(provider: Provider, error: &dyn std::fmt::Display) -> Response {
    tracing::warn!(%provider, %error, "events not committed; answering 503 so the provider retries");
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the events were not committed ({error}); retry later"),
    );
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECONDS));
    response
}
