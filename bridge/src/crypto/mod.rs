//! End-to-end encryption for the bridge: the bot and every ghost that acts
//! in an encrypted room hold a real device (matrix-sdk-crypto's
//! `OlmMachine` on vodozemac), created through the appservice API and
//! stored in the bridge's PostgreSQL database.
//!
//! # Use
//!
//! ```text
//! let crypto = BridgeCrypto::new(pool, client, &store_key).await?;   // once
//! // for every transaction (PUT /_matrix/app/v1/transactions/{txnId}):
//! let extras: TransactionExtras = serde_json::from_slice(&body)?;
//! crypto.receive_transaction_extras(extras).await?;                   // before answering 200
//! // an m.room.encrypted event in a room where `ghost` is joined:
//! let event = crypto.device(&ghost).await?.decrypt(&room_id, &raw_event).await?;
//! // posting into an encrypted room as `ghost`:
//! let content = crypto.device(&ghost).await?
//!     .encrypt(&room_id, &members, &room_encryption, "m.room.message", &raw_content).await?;
//! // then PUT /rooms/{room_id}/send/m.room.encrypted/{txn} as `ghost` with `content`
//! ```
//!
//! - [`BridgeCrypto`]: the devices of all bridge users, opened on first use
//!   and kept; routes a transaction's MSC2409 to-device messages and MSC3202
//!   key counts to the device they are addressed to, device list changes to
//!   every device.
//! - [`BridgeDevice`] (`device.rs`): one user's machine. `open` creates the
//!   device with MSC4190 (`PUT /devices/{id}` as the user) the first time
//!   and reuses it from the store after; `decrypt`, `encrypt`,
//!   `process_outgoing_requests`. State-changing calls are serialized per
//!   device.
//! - `requests.rs`: the machine's outgoing requests sent with
//!   [`HomeserverClient::send_as`] as the user and its device.
//! - `store/`: [`PgCryptoStore`], the SDK's `CryptoStore` on PostgreSQL.
//!
//! Every call that reaches the homeserver or the database returns
//! [`CryptoError`]; a transaction whose extras failed must be answered
//! with an error so the homeserver sends it again (the machine ignores
//! to-device messages it already decrypted).

mod device;
mod requests;
pub mod store;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use matrix_sdk_crypto::{CryptoStoreError, MegolmError, OlmError};
use matrix_sdk_store_encryption::StoreCipher;
use ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, UInt, UserId,
    api::client::sync::sync_events::DeviceLists, events::AnyToDeviceEvent, serde::Raw,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{Mutex, OnceCell};

use self::device::DeviceSyncChanges;
pub use self::{
    device::{BridgeDevice, RoomEncryption},
    store::{PgCryptoStore, StoreError, StoreKey},
};
use crate::matrix::client::{CallError, HomeserverClient};

/// A failed crypto operation.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("crypto store: {0}")]
    CryptoStore(#[from] CryptoStoreError),
    #[error("olm: {0}")]
    Olm(#[from] OlmError),
    #[error("megolm: {0}")]
    Megolm(#[from] MegolmError),
    #[error("homeserver: {0}")]
    Homeserver(#[from] CallError),
    #[error("serializing: {0}")]
    Json(#[from] serde_json::Error),
}

/// The E2EE parts of an appservice transaction (the homeserver sends the
/// unstable names of MSC2409 and MSC3202; the stable ones are accepted too).
/// Deserialize it from the transaction's body (other fields are ignored);
/// it serializes back to the same shape, for a bridge that queues it.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct TransactionExtras {
    /// To-device messages for the bridge's devices, each with `to_user_id`
    /// and `to_device_id`.
    #[serde(default, rename = "de.sorunome.msc2409.to_device", alias = "to_device")]
    pub to_device: Vec<Raw<AnyToDeviceEvent>>,
    /// Users whose device lists changed.
    #[serde(
        default,
        rename = "org.matrix.msc3202.device_lists",
        alias = "device_lists"
    )]
    pub device_lists: DeviceLists,
    /// One-time key counts per user and device.
    #[serde(
        default,
        rename = "org.matrix.msc3202.device_one_time_keys_count",
        alias = "device_one_time_keys_count"
    )]
    pub one_time_keys_counts:
        BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<OneTimeKeyAlgorithm, UInt>>>,
    /// Fallback key algorithms with an unused key, per user and device.
    #[serde(
        default,
        rename = "org.matrix.msc3202.device_unused_fallback_key_types",
        alias = "device_unused_fallback_key_types"
    )]
    pub unused_fallback_key_types:
        BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Vec<OneTimeKeyAlgorithm>>>,
}

impl TransactionExtras {
    /// Nothing for the bridge's devices in this transaction.
    pub fn is_empty(&self) -> bool {
        self.to_device.is_empty()
            && self.device_lists.is_empty()
            && self.one_time_keys_counts.is_empty()
            && self.unused_fallback_key_types.is_empty()
    }
}

/// The devices of every bridge user, sharing one database and one
/// homeserver connection.
pub struct BridgeCrypto {
    pool: PgPool,
    cipher: Arc<StoreCipher>,
    client: HomeserverClient,
    /// Opened devices; the cell makes concurrent first uses open one device.
    devices: Mutex<HashMap<OwnedUserId, Arc<OnceCell<Arc<BridgeDevice>>>>>,
}

impl BridgeCrypto {
    /// `key` is the bridge config's store key: it unlocks the database's
    /// store cipher (created on first use).
    pub async fn new(
        pool: PgPool,
        client: HomeserverClient,
        key: &StoreKey,
    ) -> Result<Self, CryptoError> {
        let cipher = store::load_cipher(&pool, key).await?;
        Ok(Self {
            pool,
            cipher,
            client,
            devices: Default::default(),
        })
    }

    /// `user_id`'s device, opened from the store or created (see
    /// [`BridgeDevice::open`]) on first use.
    pub async fn device(&self, user_id: &UserId) -> Result<Arc<BridgeDevice>, CryptoError> {
        let cell = self
            .devices
            .lock()
            .await
            .entry(user_id.to_owned())
            .or_default()
            .clone();
        let device = cell
            .get_or_try_init(|| async {
                let device = BridgeDevice::open(
                    &self.pool,
                    self.cipher.clone(),
                    self.client.clone(),
                    user_id,
                )
                .await?;
                Ok::<_, CryptoError>(Arc::new(device))
            })
            .await?;
        Ok(device.clone())
    }

    /// The device of `user_id` with id `device_id`, if the bridge has it;
    /// never creates one (key counts also name the appservice's own
    /// pseudo-device, messages may be for a device the bridge replaced).
    async fn existing_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Option<Arc<BridgeDevice>>, CryptoError> {
        let opened = self
            .devices
            .lock()
            .await
            .get(user_id)
            .and_then(|cell| cell.get().cloned());
        let device = match opened {
            Some(device) => device,
            None if PgCryptoStore::device_of(&self.pool, user_id)
                .await?
                .as_deref()
                == Some(device_id) =>
            {
                self.device(user_id).await?
            }
            None => return Ok(None),
        };
        Ok(Some(device).filter(|device| device.device_id() == device_id))
    }

    /// Feeds a transaction's to-device messages, device list changes and key
    /// counts to the devices they concern, and sends what the machines ask
    /// for in return. Call before acknowledging the transaction.
    pub async fn receive_transaction_extras(
        &self,
        extras: TransactionExtras,
    ) -> Result<(), CryptoError> {
        let TransactionExtras {
            to_device,
            device_lists,
            one_time_keys_counts,
            unused_fallback_key_types,
        } = extras;
        let mut addressed: HashMap<(OwnedUserId, OwnedDeviceId), DeviceSyncChanges> =
            HashMap::new();
        for event in to_device {
            let (Ok(Some(user_id)), Ok(Some(device_id))) = (
                event.get_field::<OwnedUserId>("to_user_id"),
                event.get_field::<OwnedDeviceId>("to_device_id"),
            ) else {
                tracing::warn!("a to-device message without to_user_id/to_device_id");
                continue;
            };
            addressed
                .entry((user_id, device_id))
                .or_default()
                .to_device
                .push(event);
        }
        for (user_id, devices) in one_time_keys_counts {
            for (device_id, counts) in devices {
                addressed
                    .entry((user_id.clone(), device_id))
                    .or_default()
                    .one_time_keys_counts = counts;
            }
        }
        for (user_id, devices) in unused_fallback_key_types {
            for (device_id, types) in devices {
                addressed
                    .entry((user_id.clone(), device_id))
                    .or_default()
                    .unused_fallback_key_types = Some(types);
            }
        }

        // Devices not opened in this process learn of changes through their
        // stores: those users are queried again when the device next acts.
        if !device_lists.changed.is_empty() {
            PgCryptoStore::mark_users_dirty(&self.pool, &device_lists.changed).await?;
        }
        let mut received = HashSet::new();
        for ((user_id, device_id), changes) in addressed {
            match self.existing_device(&user_id, &device_id).await? {
                Some(device) => {
                    device.receive(changes, &device_lists).await?;
                    received.insert(user_id);
                }
                None if changes.to_device.is_empty() => {}
                None => {
                    tracing::warn!(%user_id, %device_id, "to-device messages for a device the bridge does not have")
                }
            }
        }
        if !device_lists.is_empty() {
            let others: Vec<Arc<BridgeDevice>> = self
                .devices
                .lock()
                .await
                .iter()
                .filter(|(user_id, _)| !received.contains(*user_id))
                .filter_map(|(_, cell)| cell.get().cloned())
                .collect();
            for device in others {
                device
                    .receive(DeviceSyncChanges::default(), &device_lists)
                    .await?;
            }
        }
        Ok(())
    }
}
