//! The InitProducerId RPC: a fresh producer id for an idempotent producer, from the controller.

use super::answer::Refusal;
use super::service::BrokerApi;
use proto::v1::{ErrorCode, InitProducerIdResponse};

/// A fresh producer id (epoch 0); only the controller leader hands them out, and a refusal
/// names it.
pub(super) async fn init_producer_id(api: &BrokerApi) -> Result<InitProducerIdResponse, Refusal> {
    let (producer_id, epoch) = api
        .controller()
        .init_producer_id()
        .await
        .map_err(|error| Refusal::controller(&error, api.controller().leader()))?;
    Ok(InitProducerIdResponse {
        error: ErrorCode::None as i32,
        message: String::new(),
        producer_id,
        producer_epoch: i32::from(epoch),
        controller: None,
    })
}
