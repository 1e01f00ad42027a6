//! Sending the machine's outgoing requests through [`HomeserverClient`] as
//! the machine's user and device (`?user_id=&device_id=`), and handing the
//! answers back (`mark_request_as_sent`). A failed request stays queued in
//! the machine and goes out again on the next call.

use matrix_sdk_crypto::{
    OlmMachine,
    types::requests::{AnyOutgoingRequest, OutgoingRequest, ToDeviceRequest},
};
use ruma::{
    api::client::{
        keys::{claim_keys, get_keys, upload_signatures},
        message::send_message_event,
        to_device::send_event_to_device,
    },
    events::MessageLikeEventContent as _,
    serde::Raw,
};

use super::CryptoError;
use crate::matrix::client::HomeserverClient;

/// Sends one request of `machine.outgoing_requests()`.
pub(super) async fn send(
    machine: &OlmMachine,
    client: &HomeserverClient,
    request: &OutgoingRequest,
) -> Result<(), CryptoError> {
    let (user, device) = (Some(machine.user_id()), Some(machine.device_id()));
    let id = request.request_id();
    match request.request() {
        AnyOutgoingRequest::KeysUpload(upload) => {
            let response = client.send_as(upload.clone(), user, device).await?;
            machine.mark_request_as_sent(id, &response).await?;
        }
        AnyOutgoingRequest::KeysQuery(query) => {
            let mut request = get_keys::v3::Request::new();
            request.device_keys = query.device_keys.clone();
            request.timeout = query.timeout;
            let response = client.send_as(request, user, device).await?;
            machine.mark_request_as_sent(id, &response).await?;
        }
        AnyOutgoingRequest::KeysClaim(claim) => {
            let request: claim_keys::v3::Request = claim.clone();
            let response = client.send_as(request, user, device).await?;
            machine.mark_request_as_sent(id, &response).await?;
        }
        AnyOutgoingRequest::ToDeviceRequest(to_device) => {
            send_to_device(machine, client, to_device).await?
        }
        AnyOutgoingRequest::SignatureUpload(signatures) => {
            let request: upload_signatures::v3::Request = signatures.clone();
            let response = client.send_as(request, user, device).await?;
            machine.mark_request_as_sent(id, &response).await?;
        }
        AnyOutgoingRequest::RoomMessage(message) => {
            // In-room verification messages; the bridge starts none, but
            // answers what the machine queued.
            let content = Raw::new(&*message.content)?.cast_unchecked();
            let event_type = message.content.event_type();
            let request = send_message_event::v3::Request::new_raw(
                message.room_id.clone(),
                message.txn_id.clone(),
                event_type,
                content,
            );
            let response = client.send_as(request, user, device).await?;
            machine.mark_request_as_sent(id, &response).await?;
        }
    }
    Ok(())
}

/// Sends a to-device request (Olm-encrypted room keys, key requests, …);
/// the request's transaction id makes a retry harmless.
pub(super) async fn send_to_device(
    machine: &OlmMachine,
    client: &HomeserverClient,
    request: &ToDeviceRequest,
) -> Result<(), CryptoError> {
    let http = send_event_to_device::v3::Request::new_raw(
        request.event_type.clone(),
        request.txn_id.clone(),
        request.messages.clone(),
    );
    let response = client
        .send_as(http, Some(machine.user_id()), Some(machine.device_id()))
        .await?;
    machine
        .mark_request_as_sent(&request.txn_id, &response)
        .await?;
    Ok(())
}
