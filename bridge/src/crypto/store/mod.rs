//! [`PgCryptoStore`]: matrix-sdk-crypto's `CryptoStore` on the bridge's
//! PostgreSQL database, so the Olm account, sessions and room keys of every
//! bridge device survive restarts.
//!
//! One database holds the stores of the bot and of every ghost: each store is
//! a row of `crypto_stores` (user + device) and every other table is scoped
//! by its `store_id` (`migrations/bridge/0002_crypto.sql`). Values are the
//! SDK's own serde/pickle types, encrypted with a [`StoreCipher`] that is
//! created once per database and kept wrapped under the key from the bridge
//! config ([`load_cipher`]); identifiers stay in clear for the lookups.
//!
//! - `changes.rs`: writing (`save_changes` and friends), one transaction each.
//! - `reads.rs`: the `CryptoStore` trait, mostly reads.

mod changes;
mod reads;

use std::sync::{Arc, RwLock};

use matrix_sdk_crypto::{
    CryptoStoreError,
    olm::{InboundGroupSession, PickledInboundGroupSession, StaticAccountData},
};
use matrix_sdk_store_encryption::StoreCipher;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::PgPool;

/// The 32-byte key from the bridge config that wraps the database's store
/// cipher.
pub type StoreKey = [u8; 32];

/// A crypto store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("crypto store database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("crypto store cipher: {0}")]
    Cipher(#[from] matrix_sdk_store_encryption::Error),
    #[error("crypto store: restoring a pickle: {0}")]
    Unpickle(String),
    #[error("crypto store: no account stored yet")]
    AccountUnset,
}

impl From<StoreError> for CryptoStoreError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::AccountUnset => CryptoStoreError::AccountUnset,
            other => CryptoStoreError::backend(other),
        }
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store cipher of the database behind `pool`: created and saved (wrapped
/// under `key`) by the first caller, imported by everyone after. A wrong key
/// fails here, before any store is opened.
pub async fn load_cipher(pool: &PgPool, key: &StoreKey) -> Result<Arc<StoreCipher>> {
    let fresh = StoreCipher::new()?.export_with_key(key)?;
    sqlx::query("INSERT INTO crypto_store_cipher (exported) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(fresh)
        .execute(pool)
        .await?;
    let exported: Vec<u8> = sqlx::query_scalar("SELECT exported FROM crypto_store_cipher")
        .fetch_one(pool)
        .await?;
    Ok(Arc::new(StoreCipher::import_with_key(key, &exported)?))
}

/// The crypto store of one bridge device.
#[derive(Clone)]
pub struct PgCryptoStore {
    pool: PgPool,
    store_id: i64,
    cipher: Arc<StoreCipher>,
    /// The account's ids and identity keys, known once it was saved or
    /// loaded; the SDK asks for them without loading the account.
    static_account: Arc<RwLock<Option<StaticAccountData>>>,
    /// `save_changes` pickles between awaits; two at once could write an
    /// older pickle last.
    save_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for PgCryptoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCryptoStore")
            .field("store_id", &self.store_id)
            .finish_non_exhaustive()
    }
}

impl PgCryptoStore {
    /// Opens the store of `user_id`'s `device_id`, creating it when new.
    pub async fn open(
        pool: &PgPool,
        cipher: Arc<StoreCipher>,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Self> {
        let store_id: i64 = sqlx::query_scalar(
            "INSERT INTO crypto_stores (user_id, device_id) VALUES ($1, $2)
             ON CONFLICT (user_id, device_id) DO UPDATE SET user_id = EXCLUDED.user_id
             RETURNING store_id",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_one(pool)
        .await?;
        Ok(Self {
            pool: pool.clone(),
            store_id,
            cipher,
            static_account: Default::default(),
            save_lock: Default::default(),
        })
    }

    /// The device `user_id` has a store for (its newest, should there be
    /// several), so a restart reuses the device instead of creating one.
    pub async fn device_of(pool: &PgPool, user_id: &UserId) -> Result<Option<OwnedDeviceId>> {
        let device: Option<String> = sqlx::query_scalar(
            "SELECT device_id FROM crypto_stores WHERE user_id = $1 ORDER BY store_id DESC LIMIT 1",
        )
        .bind(user_id.as_str())
        .fetch_optional(pool)
        .await?;
        Ok(device.map(OwnedDeviceId::from))
    }

    /// Deletes the store of `user_id`'s `device_id` with everything in it
    /// (for a device the homeserver no longer has).
    pub async fn delete(pool: &PgPool, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
        sqlx::query("DELETE FROM crypto_stores WHERE user_id = $1 AND device_id = $2")
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Marks `users` as outdated in every store that tracks them, so each
    /// device queries their keys again before it next encrypts; for devices
    /// not opened in this process when their device lists changed.
    pub async fn mark_users_dirty(pool: &PgPool, users: &[OwnedUserId]) -> Result<()> {
        let users: Vec<&str> = users.iter().map(|user_id| user_id.as_str()).collect();
        sqlx::query(
            "UPDATE crypto_tracked_users SET dirty = TRUE WHERE user_id = ANY($1) AND NOT dirty",
        )
        .bind(users)
        .execute(pool)
        .await?;
        Ok(())
    }

    fn encrypt(&self, value: &impl Serialize) -> Result<Vec<u8>> {
        Ok(self.cipher.encrypt_value(value)?)
    }

    fn decrypt<T: DeserializeOwned>(&self, value: &[u8]) -> Result<T> {
        Ok(self.cipher.decrypt_value(value)?)
    }

    /// An inbound group session from its row; the `backed_up` column is the
    /// truth (marking sessions backed up does not rewrite the pickles).
    fn inbound_group_session(&self, pickle: &[u8], backed_up: bool) -> Result<InboundGroupSession> {
        let mut pickle: PickledInboundGroupSession = self.decrypt(pickle)?;
        pickle.backed_up = backed_up;
        InboundGroupSession::from_pickle(pickle)
            .map_err(|err| StoreError::Unpickle(err.to_string()))
    }

    /// The stored account's ids and identity keys, once it was saved or
    /// loaded (the name the SDK's stores and its store test suite use).
    pub fn get_static_account(&self) -> Option<StaticAccountData> {
        self.static_account
            .read()
            .expect("static account lock poisoned")
            .clone()
    }

    fn static_account(&self) -> Result<StaticAccountData> {
        self.get_static_account().ok_or(StoreError::AccountUnset)
    }

    fn set_static_account(&self, account: StaticAccountData) {
        *self
            .static_account
            .write()
            .expect("static account lock poisoned") = Some(account);
    }

    /// One of the store's single values (`crypto_values`).
    async fn value<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let value: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM crypto_values WHERE store_id = $1 AND name = $2")
                .bind(self.store_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        value.map(|value| self.decrypt(&value)).transpose()
    }
}

/// Names of the single values in `crypto_values`.
mod names {
    pub const ACCOUNT: &str = "account";
    pub const PRIVATE_IDENTITY: &str = "private_identity";
    pub const NEXT_BATCH_TOKEN: &str = "next_batch_token";
    pub const BACKUP_VERSION: &str = "backup_version";
    pub const BACKUP_DECRYPTION_KEY: &str = "backup_decryption_key";
    pub const DEHYDRATED_DEVICE_PICKLE_KEY: &str = "dehydrated_device_pickle_key";
}
