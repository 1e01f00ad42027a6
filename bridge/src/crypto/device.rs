//! [`BridgeDevice`]: one bridge user's Olm machine on its own appservice
//! device, stored in PostgreSQL.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use matrix_sdk_crypto::{
    CollectStrategy, DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine,
    TrustRequirement, types::events::room::encrypted::EncryptedEvent,
};
use matrix_sdk_store_encryption::StoreCipher;
use ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, RoomId, UInt, UserId,
    api::client::{device::update_device, sync::sync_events::DeviceLists},
    events::{
        AnyMessageLikeEventContent, AnyTimelineEvent, AnyToDeviceEvent,
        room::{
            encrypted::RoomEncryptedEventContent, encryption::RoomEncryptionEventContent,
            history_visibility::HistoryVisibility,
        },
    },
    serde::Raw,
};
use sqlx::PgPool;
use tokio::sync::Mutex;

use super::{CryptoError, requests, store::PgCryptoStore};
use crate::matrix::client::HomeserverClient;

/// The display name of every bridge device, as members' clients list it.
const DEVICE_DISPLAY_NAME: &str = "KIM bridge";

/// What one transaction carries for one device (MSC2409/MSC3202), in the
/// shape `receive_sync_changes` takes.
#[derive(Debug, Default)]
pub(super) struct DeviceSyncChanges {
    pub to_device: Vec<Raw<AnyToDeviceEvent>>,
    pub one_time_keys_counts: BTreeMap<OneTimeKeyAlgorithm, UInt>,
    pub unused_fallback_key_types: Option<Vec<OneTimeKeyAlgorithm>>,
}

/// A room's encryption as its state says: what `encrypt` shares the room
/// key by.
#[derive(Clone, Debug)]
pub struct RoomEncryption {
    /// `m.room.encryption` (algorithm and rotation periods).
    pub encryption: RoomEncryptionEventContent,
    /// `m.room.history_visibility`: with `joined` a member who joined later
    /// does not get the current session.
    pub history_visibility: HistoryVisibility,
}

/// One bridge user (the bot or a ghost) acting in encrypted rooms with a
/// device of its own. Calls that change the machine's state are serialized
/// per device, so concurrent callers cannot share a room key twice or send
/// the same one-time keys twice.
pub struct BridgeDevice {
    machine: OlmMachine,
    client: HomeserverClient,
    /// Held across "work out requests, send them, mark them sent".
    busy: Mutex<()>,
}

impl BridgeDevice {
    /// Opens `user_id`'s device from the store, or creates one: a fresh
    /// device id, the device on the homeserver (MSC4190 `PUT /devices/{id}`
    /// with the as_token), a new Olm account. Its keys are uploaded before
    /// this returns.
    pub async fn open(
        pool: &PgPool,
        cipher: Arc<StoreCipher>,
        client: HomeserverClient,
        user_id: &UserId,
    ) -> Result<Self, CryptoError> {
        let device_id = match PgCryptoStore::device_of(pool, user_id).await? {
            Some(device_id) => device_id,
            None => OwnedDeviceId::from(format!("KIM{}", DeviceId::new()).as_str()),
        };
        let store = PgCryptoStore::open(pool, cipher, user_id, &device_id).await?;
        // No account yet: a new device (or a crash before its account was
        // saved). Creating it on the homeserver is idempotent.
        let is_new = {
            use matrix_sdk_crypto::store::CryptoStore as _;
            store.load_account().await?.is_none()
        };
        if is_new {
            let mut request = update_device::v3::Request::new(device_id.clone());
            request.display_name = Some(DEVICE_DISPLAY_NAME.to_owned());
            client.send_as(request, Some(user_id), None).await?;
            tracing::info!(%user_id, %device_id, "created a bridge device");
        }
        let machine = OlmMachine::with_store(user_id, &device_id, store, None).await?;
        let device = Self {
            machine,
            client,
            busy: Mutex::new(()),
        };
        device.process_outgoing_requests().await?;
        Ok(device)
    }

    pub fn user_id(&self) -> &UserId {
        self.machine.user_id()
    }

    pub fn device_id(&self) -> &DeviceId {
        self.machine.device_id()
    }

    /// The device's Curve25519 identity key (base64), as others see it.
    pub fn identity_key(&self) -> String {
        self.machine.identity_keys().curve25519.to_base64()
    }

    /// Feeds what a transaction brought this device (to-device messages,
    /// device list changes, key counts) to the machine, then sends what it
    /// asks for (more one-time keys, key queries).
    pub(super) async fn receive(
        &self,
        changes: DeviceSyncChanges,
        device_lists: &DeviceLists,
    ) -> Result<(), CryptoError> {
        {
            let _busy = self.busy.lock().await;
            let sync_changes = EncryptionSyncChanges {
                to_device_events: changes.to_device,
                changed_devices: device_lists,
                one_time_keys_counts: &changes.one_time_keys_counts,
                unused_fallback_keys: changes.unused_fallback_key_types.as_deref(),
                next_batch_token: None,
            };
            let (events, room_keys) = self
                .machine
                .receive_sync_changes(sync_changes, &decryption_settings())
                .await?;
            tracing::debug!(user_id = %self.user_id(), to_device = events.len(), room_keys = room_keys.len(), "received transaction extras");
        }
        self.process_outgoing_requests().await
    }

    /// Sends every request the machine has queued (keys upload, query,
    /// claim, to-device, signatures) and hands it the answers.
    pub async fn process_outgoing_requests(&self) -> Result<(), CryptoError> {
        let _busy = self.busy.lock().await;
        self.send_outgoing_requests().await
    }

    async fn send_outgoing_requests(&self) -> Result<(), CryptoError> {
        for request in self.machine.outgoing_requests().await? {
            requests::send(&self.machine, &self.client, &request).await?;
        }
        Ok(())
    }

    /// Decrypts an `m.room.encrypted` event of `room_id` (as the homeserver
    /// delivered it) into the event its sender encrypted. Fails with
    /// [`CryptoError::Megolm`] (`MissingRoomKey`) while the room key has not
    /// arrived: it comes as a to-device message, possibly in a later
    /// transaction, so a caller retries after the next one.
    pub async fn decrypt(
        &self,
        room_id: &RoomId,
        event: &Raw<AnyTimelineEvent>,
    ) -> Result<Raw<AnyTimelineEvent>, CryptoError> {
        let event: &Raw<EncryptedEvent> = event.cast_ref_unchecked();
        let decrypted = self
            .machine
            .decrypt_room_event(event, room_id, &decryption_settings())
            .await?;
        Ok(decrypted.event)
    }

    /// Encrypts a message event for `room_id`, whose joined (and, by the
    /// history visibility, invited) members are `members`: tracks their
    /// devices, opens Olm sessions where missing, shares the room key (a new
    /// one when the rotation settings or a member change require it), then
    /// encrypts. The result is the content of the `m.room.encrypted` event
    /// to send as this user.
    ///
    /// The future is boxed as `Send`: the SDK's futures are, but the
    /// compiler cannot prove it for every lifetime inside a spawned task.
    pub fn encrypt<'a>(
        &'a self,
        room_id: &'a RoomId,
        members: &'a [OwnedUserId],
        room: &'a RoomEncryption,
        event_type: &'a str,
        content: &'a Raw<AnyMessageLikeEventContent>,
    ) -> Pin<
        Box<dyn Future<Output = Result<Raw<RoomEncryptedEventContent>, CryptoError>> + Send + 'a>,
    > {
        Box::pin(self.encrypt_unboxed(room_id, members, room, event_type, content))
    }

    async fn encrypt_unboxed(
        &self,
        room_id: &RoomId,
        members: &[OwnedUserId],
        room: &RoomEncryption,
        event_type: &str,
        content: &Raw<AnyMessageLikeEventContent>,
    ) -> Result<Raw<RoomEncryptedEventContent>, CryptoError> {
        let _busy = self.busy.lock().await;
        let members = || Members(members.iter());
        self.machine.update_tracked_users(members()).await?;
        // Key queries for members whose devices are unknown or outdated.
        self.send_outgoing_requests().await?;
        if let Some((request_id, claim)) = self.machine.get_missing_sessions(members()).await? {
            let response = self
                .client
                .send_as(claim, Some(self.user_id()), Some(self.device_id()))
                .await?;
            self.machine
                .mark_request_as_sent(&request_id, &response)
                .await?;
        }
        let settings = EncryptionSettings::new(
            room.encryption.clone(),
            room.history_visibility.clone(),
            CollectStrategy::AllDevices,
        );
        for request in self
            .machine
            .share_room_key(room_id, members(), settings)
            .await?
        {
            requests::send_to_device(&self.machine, &self.client, &request).await?;
        }
        let encrypted = self
            .machine
            .encrypt_room_event_raw(room_id, event_type, content)
            .await?;
        // The SDK's own type of the same JSON; ruma's is what the send request takes.
        Ok(encrypted.content.cast_unchecked())
    }
}

/// The user ids of a member list as the SDK takes them. A named iterator,
/// not `map` with a closure: with a closure the compiler cannot prove the
/// future of `encrypt` `Send` inside a spawned task.
struct Members<'a>(std::slice::Iter<'a, OwnedUserId>);

impl<'a> Iterator for Members<'a> {
    type Item = &'a UserId;

    fn next(&mut self) -> Option<&'a UserId> {
        self.0.next().map(|user_id| &**user_id)
    }
}

/// The bridge decrypts what any device of a member sent: TI-M does not
/// require members to cross-sign, and refusing unverified senders would
/// keep their messages from the practice.
fn decryption_settings() -> DecryptionSettings {
    DecryptionSettings {
        sender_device_trust_requirement: TrustRequirement::Untrusted,
    }
}
