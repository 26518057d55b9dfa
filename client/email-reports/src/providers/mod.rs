//! # Providers: webhook bodies → canonical events
//!
//! **One job:** read one provider's raw webhook body and say what it carries — canonical
//! events, entries deliberately not counted, or (SNS only) a subscription to confirm.
//!
//! **Owns:** each provider's body shape, its event-type → [`EventKind`] mapping (spam-block
//! refinements first, then hard/soft), where its recipient, event time, id, click URL and
//! tenant/campaign carriers are, and the synthesised ids where it has none.
//!
//! **Invariants:** pure (no clock, IO or randomness); never panics; entries come out in body
//! order, one per (entry, affected recipient); an entry of a type we do not count is
//! [`Entry::Ignored`], a body we cannot read is a [`ParseError`] naming the field.
//!
//! **Must not depend on:** HTTP, signatures or the producer. The signature layer verifies the
//! raw bytes *before* [`parse`] is called; parse never looks at headers (none of the six needs
//! one to read its body: SNS raw delivery is recognised by shape).
//!
//! **Files:** `json_node.rs` the path-tracking JSON reader; one file per provider.

mod json;
mod json_node;
mod mailgun;
mod mandrill;
mod postmark;
mod sendgrid;
mod ses;
mod sparkpost;

use serde::{Deserialize, Serialize};

use crate::carrier::CarrierKeys;
use crate::error::ParseError;
use crate::event::{CanonicalEvent, EventKind, Provider};
use json_node::Node;

/// What a webhook body carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseOutcome {
    /// Provider events, in body order.
    Entries(Vec<Entry>),
    /// An SNS `SubscriptionConfirmation`: not an event. The HTTP layer confirms it (after
    /// verifying its signature and topic) by fetching `subscribe_url`.
    SubscriptionConfirmation(SubscriptionConfirmation),
}

impl ParseOutcome {
    /// The canonical events, in body order (empty for a subscription confirmation).
    pub fn events(&self) -> impl Iterator<Item = &CanonicalEvent> {
        let entries: &[Entry] = match self {
            ParseOutcome::Entries(entries) => entries,
            ParseOutcome::SubscriptionConfirmation(_) => &[],
        };
        entries.iter().filter_map(|entry| match entry {
            Entry::Event(event) => Some(event),
            Entry::Ignored(_) => None,
        })
    }

    /// The canonical events, consumed.
    pub fn into_events(self) -> Vec<CanonicalEvent> {
        match self {
            ParseOutcome::Entries(entries) => entries
                .into_iter()
                .filter_map(|entry| match entry {
                    Entry::Event(event) => Some(event),
                    Entry::Ignored(_) => None,
                })
                .collect(),
            ParseOutcome::SubscriptionConfirmation(_) => Vec::new(),
        }
    }
}

/// One result of a body's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An event to produce to `email-events`.
    Event(CanonicalEvent),
    /// An entry that is valid but not an email event we count (the fixtures' `other`).
    Ignored(Ignored),
}

/// An entry left out on purpose, and why (for the ingest's logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    /// Where the entry is in the body.
    pub path: String,
    /// Why it is not an event (`"SparkPost ping (empty msys)"`, `"event type \"x\" is not counted"`).
    pub reason: String,
}

/// The fields of an SNS `SubscriptionConfirmation` the HTTP layer needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionConfirmation {
    /// The topic asking; check it against the configured allow-list before confirming.
    pub topic_arn: String,
    /// GET this URL to confirm (only after the message's signature verified).
    pub subscribe_url: String,
    /// The confirmation token (for `ConfirmSubscription` through the API instead).
    pub token: String,
    /// SNS's message id.
    pub message_id: String,
}

/// Parses one webhook body from `provider`. `keys` names the tenant and campaign metadata keys.
///
/// The body is the raw request body (for Mandrill the form-encoded one). Call it only after the
/// body's signature verified.
pub fn parse(provider: Provider, body: &[u8], keys: &CarrierKeys) -> Result<ParseOutcome, ParseError> {
    match provider {
        Provider::SendGrid => sendgrid::parse(body, keys),
        Provider::Mailgun => mailgun::parse(body, keys),
        Provider::Ses => ses::parse(body, keys),
        Provider::Postmark => postmark::parse(body, keys),
        Provider::SparkPost => sparkpost::parse(body, keys),
        Provider::Mandrill => mandrill::parse(body, keys),
    }
}

/// The tenant and campaign read from a metadata map (`None` carrier: the provider sent none).
struct Attribution {
    tenant: Option<String>,
    campaign: Option<String>,
}

impl Attribution {
    fn from_carrier(carrier: Option<&Node<'_>>, keys: &CarrierKeys) -> Result<Self, ParseError> {
        let Some(carrier) = carrier else {
            return Ok(Attribution {
                tenant: None,
                campaign: None,
            });
        };
        Ok(Attribution {
            tenant: carrier_value(carrier, &keys.tenant)?,
            campaign: carrier_value(carrier, &keys.campaign)?,
        })
    }
}

/// One id from a carrier map: a string or an integer, or an array whose first element is one
/// (SES tags are arrays). An empty string counts as absent. Mailgun sends `[]` for an empty
/// map, which has no keys.
fn carrier_value(carrier: &Node<'_>, key: &str) -> Result<Option<String>, ParseError> {
    if carrier.value().as_array().is_some_and(|items| items.is_empty()) {
        return Ok(None);
    }
    let Some(node) = carrier.get_opt(key)? else {
        return Ok(None);
    };
    let node = match node.value() {
        json::Json::Array(_) => match node.elements()?.into_iter().next() {
            Some(first) => first,
            None => return Ok(None),
        },
        _ => node,
    };
    if node.value().as_str().is_some_and(|text| text.trim().is_empty()) {
        return Ok(None);
    }
    node.id_text().map(Some)
}

/// An event's dedup key: its kind, then the provider's id or the synthesised parts, joined
/// with `|`, and a click's URL (which may contain anything) always last.
fn event_key(kind: EventKind, parts: &[&str], url: Option<&str>) -> String {
    let mut key = kind.as_str().to_owned();
    for part in parts.iter().copied().chain(url) {
        key.push('|');
        key.push_str(part);
    }
    key
}

fn not_counted(node: &Node<'_>, what: &str, value: &str) -> Entry {
    Entry::Ignored(Ignored {
        path: node.path(),
        reason: format!("{what} {value:?} is not counted"),
    })
}
