//! The reports API (`/v1/...`): read-only JSON over this instance's store, which holds every
//! partition's state, so any instance answers any query. Lists are paginated by cursor: the
//! last id of a page, passed back as `cursor`, starts the next.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error_response;
use crate::event::EventKind;
use crate::reports::keys;
use crate::reports::model::{CampaignTotals, DailyCounts, Engaged, Rates, SpamAlert, Suppression};
use crate::reports::store::Store;
use crate::time::EventTime;

/// Page size when `limit` is not given, and the largest allowed.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `?limit=&cursor=`.
#[derive(Debug, Deserialize)]
pub struct Page {
    limit: Option<usize>,
    cursor: Option<String>,
}

impl Page {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// A page of a list.
#[derive(Debug, Serialize)]
struct Listing<T> {
    items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

fn listing<T: Serialize>(
    store: &Store,
    prefix: &str,
    page: &Page,
    item: impl Fn(String, Value) -> Option<T>,
) -> Response {
    let limit = page.limit();
    let mut entries = store.list(prefix, page.cursor.as_deref(), limit + 1);
    let next_cursor = (entries.len() > limit).then(|| {
        entries.truncate(limit);
        entries.last().map(|(id, _)| id.clone()).unwrap_or_default()
    });
    let items = entries.into_iter().filter_map(|(id, value)| item(id, value)).collect();
    Json(Listing { items, next_cursor }).into_response()
}

/// Figures of a campaign or a tenant.
#[derive(Debug, Serialize)]
struct Figures {
    sent: u64,
    counts: BTreeMap<EventKind, u64>,
    unique_opens: u64,
    unique_clicks: u64,
    rates: Rates,
    first_event_at: Option<EventTime>,
    last_event_at: Option<EventTime>,
}

impl From<&CampaignTotals> for Figures {
    fn from(totals: &CampaignTotals) -> Self {
        let counts = EventKind::ALL.iter().map(|kind| (*kind, totals.count(*kind))).collect();
        Figures {
            sent: totals.sent,
            counts,
            unique_opens: totals.unique_opens,
            unique_clicks: totals.unique_clicks,
            rates: totals.rates(),
            first_event_at: time(totals.first_event_at),
            last_event_at: time(totals.last_event_at),
        }
    }
}

fn time(micros: i64) -> Option<EventTime> {
    (micros != 0).then(|| EventTime::from_unix_micros(micros)).flatten()
}

fn campaign_json(campaign_id: &str, totals: &CampaignTotals) -> Value {
    let mut value = serde_json::to_value(Figures::from(totals)).expect("figures serialise");
    value["campaign_id"] = json!(campaign_id);
    value["tenant_id"] = json!(totals.tenant_id);
    value
}

/// `GET /v1/tenants`.
pub async fn tenants(State(store): State<Store>, Query(page): Query<Page>) -> Response {
    listing(&store, keys::TENANT_PREFIX, &page, |tenant_id, _| {
        Some(json!({ "tenant_id": tenant_id }))
    })
}

/// The sums over a tenant's campaigns, `None` for an unknown tenant.
pub fn tenant_totals(store: &Store, tenant: &str) -> Option<(usize, CampaignTotals)> {
    store.get::<bool>(&keys::tenant(tenant))?;
    let mut sum = CampaignTotals {
        tenant_id: tenant.to_owned(),
        ..CampaignTotals::default()
    };
    let mut campaigns = 0;
    for campaign_id in store.ids(&keys::tenant_campaigns_prefix(tenant)) {
        if let Some(totals) = store.get::<CampaignTotals>(&keys::campaign(&campaign_id)) {
            sum.add(&totals);
            campaigns += 1;
        }
    }
    Some((campaigns, sum))
}

/// `GET /v1/tenants/{tenant}`.
pub async fn tenant(State(store): State<Store>, Path(tenant): Path<String>) -> Response {
    let Some((campaigns, totals)) = tenant_totals(&store, &tenant) else {
        return error_response(StatusCode::NOT_FOUND, format!("unknown tenant {tenant:?}"));
    };
    let mut value = serde_json::to_value(Figures::from(&totals)).expect("figures serialise");
    value["tenant_id"] = json!(tenant);
    value["campaigns"] = json!(campaigns);
    Json(value).into_response()
}

/// `GET /v1/tenants/{tenant}/campaigns`.
pub async fn tenant_campaigns(
    State(store): State<Store>,
    Path(tenant): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    if let Some(unknown) = unknown_tenant(&store, &tenant) {
        return unknown;
    }
    listing(
        &store,
        &keys::tenant_campaigns_prefix(&tenant),
        &page,
        |campaign_id, _| {
            let totals = store.get::<CampaignTotals>(&keys::campaign(&campaign_id))?;
            Some(campaign_json(&campaign_id, &totals))
        },
    )
}

/// `GET /v1/campaigns/{campaign}`.
pub async fn campaign(State(store): State<Store>, Path(campaign): Path<String>) -> Response {
    match store.get::<CampaignTotals>(&keys::campaign(&campaign)) {
        Some(totals) => Json(campaign_json(&campaign, &totals)).into_response(),
        None => unknown_campaign(&campaign),
    }
}

fn unknown_campaign(campaign: &str) -> Response {
    error_response(StatusCode::NOT_FOUND, format!("unknown campaign {campaign:?}"))
}

/// The 404 to answer when the store does not know `tenant`.
fn unknown_tenant(store: &Store, tenant: &str) -> Option<Response> {
    let known = store.get::<bool>(&keys::tenant(tenant)).is_some();
    (!known).then(|| error_response(StatusCode::NOT_FOUND, format!("unknown tenant {tenant:?}")))
}

/// The 404 to answer when the store does not know `campaign`.
fn unknown_campaign_in(store: &Store, campaign: &str) -> Option<Response> {
    let known = store.get::<CampaignTotals>(&keys::campaign(campaign)).is_some();
    (!known).then(|| unknown_campaign(campaign))
}

/// `GET /v1/campaigns/{campaign}/daily`: UTC day → kind → count (a year at most).
pub async fn campaign_daily(State(store): State<Store>, Path(campaign): Path<String>) -> Response {
    if let Some(unknown) = unknown_campaign_in(&store, &campaign) {
        return unknown;
    }
    let days: BTreeMap<String, DailyCounts> = store
        .list(&keys::days_prefix(&campaign), None, 400)
        .into_iter()
        .filter_map(|(date, value)| Some((date, serde_json::from_value(value).ok()?)))
        .collect();
    Json(json!({ "campaign_id": campaign, "days": days })).into_response()
}

/// `GET /v1/tenants/{tenant}/suppressions`.
pub async fn suppressions(
    State(store): State<Store>,
    Path(tenant): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    if let Some(unknown) = unknown_tenant(&store, &tenant) {
        return unknown;
    }
    listing(
        &store,
        &keys::suppressions_prefix(&tenant),
        &page,
        |recipient, value| {
            let suppression: Suppression = serde_json::from_value(value).ok()?;
            Some(json!({
                "recipient": recipient,
                "reason": suppression.reason,
                "at": time(suppression.at),
                "campaign_id": suppression.campaign_id,
            }))
        },
    )
}

/// `GET /v1/campaigns/{campaign}/engaged`: recipients who clicked.
pub async fn engaged(State(store): State<Store>, Path(campaign): Path<String>, Query(page): Query<Page>) -> Response {
    if let Some(unknown) = unknown_campaign_in(&store, &campaign) {
        return unknown;
    }
    listing(&store, &keys::engaged_prefix(&campaign), &page, |recipient, value| {
        let engaged: Engaged = serde_json::from_value(value).ok()?;
        Some(json!({
            "recipient": recipient,
            "clicks": engaged.clicks,
            "first_click_at": time(engaged.first_click_at),
            "last_click_at": time(engaged.last_click_at),
            "last_url": engaged.last_url,
        }))
    })
}

/// `GET /v1/alerts`: campaigns whose complaint rate is over the threshold now.
pub async fn alerts(State(store): State<Store>, Query(page): Query<Page>) -> Response {
    listing(&store, keys::ALERT_PREFIX, &page, |campaign_id, value| {
        let alert: SpamAlert = serde_json::from_value(value).ok()?;
        Some(json!({
            "campaign_id": campaign_id,
            "tenant_id": alert.tenant_id,
            "complaints": alert.complaints,
            "delivered": alert.delivered,
            "rate": alert.rate,
            "threshold": alert.threshold,
            "raised_at": time(alert.raised_at),
        }))
    })
}
