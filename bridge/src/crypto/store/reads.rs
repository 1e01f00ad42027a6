//! The `CryptoStore` trait on [`PgCryptoStore`]: reads here, writes in
//! `changes.rs`. Semantics follow the SDK's own stores (its
//! `cryptostore_integration_tests!` checks them, see `bridge/tests/crypto.rs`).

use std::collections::HashMap;

use async_trait::async_trait;
use matrix_sdk_crypto::{
    Account, DeviceData, GossipRequest, SecretInfo, TrackedUser, UserIdentityData,
    olm::{
        InboundGroupSession, OlmMessageHash, OutboundGroupSession, PrivateCrossSigningIdentity,
        SenderDataType, Session,
    },
    store::{
        CryptoStore,
        types::{
            BackupKeys, Changes, DehydratedDeviceKey, PendingChanges, RoomKeyCounts,
            RoomKeyWithheldEntry, RoomPendingKeyBundleDetails, RoomSettings,
            StoredRoomKeyBundleData,
        },
    },
    vodozemac::Curve25519PublicKey,
};
use ruma::{
    DeviceId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, RoomId, TransactionId, UserId,
    events::secret::request::SecretName,
};
use zeroize::Zeroizing;

use super::{PgCryptoStore, Result, StoreError, names};

impl PgCryptoStore {
    /// Inbound group sessions of one query returning `(pickle, backed_up)`.
    fn inbound_group_sessions(
        &self,
        rows: Vec<(Vec<u8>, bool)>,
    ) -> Result<Vec<InboundGroupSession>> {
        rows.iter()
            .map(|(pickle, backed_up)| self.inbound_group_session(pickle, *backed_up))
            .collect()
    }

    fn secret_request(&self, data: &[u8], sent_out: bool) -> Result<GossipRequest> {
        let mut request: GossipRequest = self.decrypt(data)?;
        request.sent_out = sent_out;
        Ok(request)
    }

    async fn secret_requests(&self) -> Result<Vec<GossipRequest>> {
        let rows: Vec<(Vec<u8>, bool)> =
            sqlx::query_as("SELECT data, sent_out FROM crypto_secret_requests WHERE store_id = $1")
                .bind(self.store_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|(data, sent_out)| self.secret_request(data, *sent_out))
            .collect()
    }

    /// The `data` column of every row `sql` selects for this store (`$1`),
    /// decrypted.
    async fn all_data<T: serde::de::DeserializeOwned>(&self, sql: &'static str) -> Result<Vec<T>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(sql)
            .bind(self.store_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|data| self.decrypt(data)).collect()
    }
}

#[async_trait]
impl CryptoStore for PgCryptoStore {
    type Error = StoreError;

    async fn load_account(&self) -> Result<Option<Account>> {
        let Some(pickle) = self.value(names::ACCOUNT).await? else {
            return Ok(None);
        };
        let account =
            Account::from_pickle(pickle).map_err(|err| StoreError::Unpickle(err.to_string()))?;
        self.set_static_account(account.static_data().clone());
        Ok(Some(account))
    }

    async fn load_identity(&self) -> Result<Option<PrivateCrossSigningIdentity>> {
        let Some(pickle) = self.value(names::PRIVATE_IDENTITY).await? else {
            return Ok(None);
        };
        let identity = PrivateCrossSigningIdentity::from_pickle(pickle)
            .map_err(|err| StoreError::Unpickle(err.to_string()))?;
        Ok(Some(identity))
    }

    async fn save_changes(&self, changes: Changes) -> Result<()> {
        self.write_changes(changes).await
    }

    async fn save_pending_changes(&self, changes: PendingChanges) -> Result<()> {
        self.write_pending_changes(changes).await
    }

    async fn save_inbound_group_sessions(
        &self,
        sessions: Vec<InboundGroupSession>,
        _backed_up_to_version: Option<&str>,
    ) -> Result<()> {
        // The backup version is not kept per session (like the SDK's SQLite
        // store): the session's own `backed_up` flag goes to its column.
        self.write_changes(Changes {
            inbound_group_sessions: sessions,
            ..Default::default()
        })
        .await
    }

    async fn get_sessions(&self, sender_key: &str) -> Result<Option<Vec<Session>>> {
        let device_keys = self.get_own_device().await?.as_device_keys().clone();
        let pickles: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT pickle FROM crypto_olm_sessions WHERE store_id = $1 AND sender_key = $2",
        )
        .bind(self.store_id)
        .bind(sender_key)
        .fetch_all(&self.pool)
        .await?;
        if pickles.is_empty() {
            return Ok(None);
        }
        let sessions = pickles
            .iter()
            .map(|pickle| {
                Session::from_pickle(device_keys.clone(), self.decrypt(pickle)?)
                    .map_err(|err| StoreError::Unpickle(err.to_string()))
            })
            .collect::<Result<_>>()?;
        Ok(Some(sessions))
    }

    async fn get_inbound_group_session(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<InboundGroupSession>> {
        let row: Option<(Vec<u8>, bool)> = sqlx::query_as(
            "SELECT pickle, backed_up FROM crypto_inbound_group_sessions
             WHERE store_id = $1 AND room_id = $2 AND session_id = $3",
        )
        .bind(self.store_id)
        .bind(room_id.as_str())
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(pickle, backed_up)| self.inbound_group_session(&pickle, backed_up))
            .transpose()
    }

    async fn get_withheld_info(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<RoomKeyWithheldEntry>> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM crypto_withheld_sessions WHERE store_id = $1 AND room_id = $2 AND session_id = $3",
        )
        .bind(self.store_id)
        .bind(room_id.as_str())
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        data.map(|data| self.decrypt(&data)).transpose()
    }

    async fn get_withheld_sessions_by_room_id(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<RoomKeyWithheldEntry>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM crypto_withheld_sessions WHERE store_id = $1 AND room_id = $2",
        )
        .bind(self.store_id)
        .bind(room_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|data| self.decrypt(data)).collect()
    }

    async fn get_inbound_group_sessions(&self) -> Result<Vec<InboundGroupSession>> {
        let rows = sqlx::query_as(
            "SELECT pickle, backed_up FROM crypto_inbound_group_sessions WHERE store_id = $1",
        )
        .bind(self.store_id)
        .fetch_all(&self.pool)
        .await?;
        self.inbound_group_sessions(rows)
    }

    async fn inbound_group_session_counts(
        &self,
        _backup_version: Option<&str>,
    ) -> Result<RoomKeyCounts> {
        let (total, backed_up): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE backed_up) FROM crypto_inbound_group_sessions WHERE store_id = $1",
        )
        .bind(self.store_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(RoomKeyCounts {
            total: total as usize,
            backed_up: backed_up as usize,
        })
    }

    async fn get_inbound_group_sessions_by_room_id(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<InboundGroupSession>> {
        let rows = sqlx::query_as(
            "SELECT pickle, backed_up FROM crypto_inbound_group_sessions WHERE store_id = $1 AND room_id = $2",
        )
        .bind(self.store_id)
        .bind(room_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        self.inbound_group_sessions(rows)
    }

    async fn get_inbound_group_sessions_for_device_batch(
        &self,
        curve_key: Curve25519PublicKey,
        sender_data_type: SenderDataType,
        after_session_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<InboundGroupSession>> {
        let rows = sqlx::query_as(
            "SELECT pickle, backed_up FROM crypto_inbound_group_sessions
             WHERE store_id = $1 AND sender_key = $2 AND sender_data_type = $3 AND session_id > $4
             ORDER BY session_id LIMIT $5",
        )
        .bind(self.store_id)
        .bind(curve_key.to_base64())
        .bind(sender_data_type as i16)
        .bind(after_session_id.unwrap_or_default())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        self.inbound_group_sessions(rows)
    }

    async fn inbound_group_sessions_for_backup(
        &self,
        _backup_version: &str,
        limit: usize,
    ) -> Result<Vec<InboundGroupSession>> {
        let rows = sqlx::query_as(
            "SELECT pickle, backed_up FROM crypto_inbound_group_sessions
             WHERE store_id = $1 AND NOT backed_up LIMIT $2",
        )
        .bind(self.store_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        self.inbound_group_sessions(rows)
    }

    async fn mark_inbound_group_sessions_as_backed_up(
        &self,
        _backup_version: &str,
        room_and_session_ids: &[(&RoomId, &str)],
    ) -> Result<()> {
        let (rooms, sessions): (Vec<&str>, Vec<&str>) = room_and_session_ids
            .iter()
            .map(|(room_id, session_id)| (room_id.as_str(), *session_id))
            .unzip();
        sqlx::query(
            "UPDATE crypto_inbound_group_sessions AS s SET backed_up = TRUE
             FROM UNNEST($2::text[], $3::text[]) AS marked (room_id, session_id)
             WHERE s.store_id = $1 AND s.room_id = marked.room_id AND s.session_id = marked.session_id",
        )
        .bind(self.store_id)
        .bind(rooms)
        .bind(sessions)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn reset_backup_state(&self) -> Result<()> {
        sqlx::query(
            "UPDATE crypto_inbound_group_sessions SET backed_up = FALSE WHERE store_id = $1",
        )
        .bind(self.store_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn load_backup_keys(&self) -> Result<BackupKeys> {
        Ok(BackupKeys {
            decryption_key: self.value(names::BACKUP_DECRYPTION_KEY).await?,
            backup_version: self.value(names::BACKUP_VERSION).await?,
        })
    }

    async fn load_dehydrated_device_pickle_key(&self) -> Result<Option<DehydratedDeviceKey>> {
        self.value(names::DEHYDRATED_DEVICE_PICKLE_KEY).await
    }

    async fn delete_dehydrated_device_pickle_key(&self) -> Result<()> {
        sqlx::query("DELETE FROM crypto_values WHERE store_id = $1 AND name = $2")
            .bind(self.store_id)
            .bind(names::DEHYDRATED_DEVICE_PICKLE_KEY)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_outbound_group_session(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<OutboundGroupSession>> {
        let pickle: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT pickle FROM crypto_outbound_group_sessions WHERE store_id = $1 AND room_id = $2",
        )
        .bind(self.store_id)
        .bind(room_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(pickle) = pickle else {
            return Ok(None);
        };
        let account = self.static_account()?;
        let session = OutboundGroupSession::from_pickle(
            account.device_id,
            account.identity_keys,
            self.decrypt(&pickle)?,
        )
        .map_err(|err| StoreError::Unpickle(err.to_string()))?;
        Ok(Some(session))
    }

    async fn load_tracked_users(&self) -> Result<Vec<TrackedUser>> {
        let rows: Vec<(String, bool)> =
            sqlx::query_as("SELECT user_id, dirty FROM crypto_tracked_users WHERE store_id = $1")
                .bind(self.store_id)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(user_id, dirty)| {
                let user_id =
                    UserId::parse(&user_id).map_err(|err| StoreError::Unpickle(err.to_string()))?;
                Ok(TrackedUser { user_id, dirty })
            })
            .collect()
    }

    async fn save_tracked_users(&self, users: &[(&UserId, bool)]) -> Result<()> {
        let (user_ids, dirty): (Vec<&str>, Vec<bool>) = users
            .iter()
            .map(|(user_id, dirty)| (user_id.as_str(), *dirty))
            .unzip();
        sqlx::query(
            "INSERT INTO crypto_tracked_users (store_id, user_id, dirty)
             SELECT $1, user_id, dirty FROM UNNEST($2::text[], $3::bool[]) AS t (user_id, dirty)
             ON CONFLICT (store_id, user_id) DO UPDATE SET dirty = EXCLUDED.dirty",
        )
        .bind(self.store_id)
        .bind(user_ids)
        .bind(dirty)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Option<DeviceData>> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM crypto_devices WHERE store_id = $1 AND user_id = $2 AND device_id = $3",
        )
        .bind(self.store_id)
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        data.map(|data| self.decrypt(&data)).transpose()
    }

    async fn get_user_devices(
        &self,
        user_id: &UserId,
    ) -> Result<HashMap<OwnedDeviceId, DeviceData>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM crypto_devices WHERE store_id = $1 AND user_id = $2",
        )
        .bind(self.store_id)
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|data| {
                let device: DeviceData = self.decrypt(data)?;
                Ok((device.device_id().to_owned(), device))
            })
            .collect()
    }

    async fn get_own_device(&self) -> Result<DeviceData> {
        let account = self.static_account()?;
        // The machine saves its own device with the account; without it the
        // store is not usable.
        self.get_device(&account.user_id, &account.device_id)
            .await?
            .ok_or(StoreError::AccountUnset)
    }

    async fn get_user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentityData>> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM crypto_identities WHERE store_id = $1 AND user_id = $2",
        )
        .bind(self.store_id)
        .bind(user_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        data.map(|data| self.decrypt(&data)).transpose()
    }

    async fn is_message_known(&self, message_hash: &OlmMessageHash) -> Result<bool> {
        let known: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM crypto_olm_message_hashes WHERE store_id = $1 AND sender_key = $2 AND hash = $3)",
        )
        .bind(self.store_id)
        .bind(&message_hash.sender_key)
        .bind(&message_hash.hash)
        .fetch_one(&self.pool)
        .await?;
        Ok(known)
    }

    async fn get_outgoing_secret_requests(
        &self,
        request_id: &TransactionId,
    ) -> Result<Option<GossipRequest>> {
        let row: Option<(Vec<u8>, bool)> = sqlx::query_as(
            "SELECT data, sent_out FROM crypto_secret_requests WHERE store_id = $1 AND request_id = $2",
        )
        .bind(self.store_id)
        .bind(request_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(data, sent_out)| self.secret_request(&data, sent_out))
            .transpose()
    }

    async fn get_secret_request_by_info(
        &self,
        secret_info: &SecretInfo,
    ) -> Result<Option<GossipRequest>> {
        // The info is inside the encrypted value; a device has few requests.
        Ok(self
            .secret_requests()
            .await?
            .into_iter()
            .find(|request| request.info == *secret_info))
    }

    async fn get_unsent_secret_requests(&self) -> Result<Vec<GossipRequest>> {
        Ok(self
            .secret_requests()
            .await?
            .into_iter()
            .filter(|request| !request.sent_out)
            .collect())
    }

    async fn delete_outgoing_secret_requests(&self, request_id: &TransactionId) -> Result<()> {
        sqlx::query("DELETE FROM crypto_secret_requests WHERE store_id = $1 AND request_id = $2")
            .bind(self.store_id)
            .bind(request_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_secrets_from_inbox(
        &self,
        secret_name: &SecretName,
    ) -> Result<Vec<Zeroizing<String>>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT secret FROM crypto_secrets_inbox WHERE store_id = $1 AND secret_name = $2",
        )
        .bind(self.store_id)
        .bind(secret_name.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|secret| self.decrypt::<String>(secret).map(Zeroizing::new))
            .collect()
    }

    async fn delete_secrets_from_inbox(&self, secret_name: &SecretName) -> Result<()> {
        sqlx::query("DELETE FROM crypto_secrets_inbox WHERE store_id = $1 AND secret_name = $2")
            .bind(self.store_id)
            .bind(secret_name.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_room_settings(&self, room_id: &RoomId) -> Result<Option<RoomSettings>> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM crypto_room_settings WHERE store_id = $1 AND room_id = $2",
        )
        .bind(self.store_id)
        .bind(room_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        data.map(|data| self.decrypt(&data)).transpose()
    }

    async fn get_received_room_key_bundle_data(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<StoredRoomKeyBundleData>> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM crypto_received_room_key_bundles WHERE store_id = $1 AND room_id = $2 AND sender_user_id = $3",
        )
        .bind(self.store_id)
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        data.map(|data| self.decrypt(&data)).transpose()
    }

    async fn get_pending_key_bundle_details_for_room(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<RoomPendingKeyBundleDetails>> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM crypto_rooms_pending_key_bundle WHERE store_id = $1 AND room_id = $2",
        )
        .bind(self.store_id)
        .bind(room_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        data.map(|data| self.decrypt(&data)).transpose()
    }

    async fn get_all_rooms_pending_key_bundles(&self) -> Result<Vec<RoomPendingKeyBundleDetails>> {
        self.all_data("SELECT data FROM crypto_rooms_pending_key_bundle WHERE store_id = $1")
            .await
    }

    async fn has_downloaded_all_room_keys(&self, room_id: &RoomId) -> Result<bool> {
        let downloaded: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM crypto_room_key_backups_downloaded WHERE store_id = $1 AND room_id = $2)",
        )
        .bind(self.store_id)
        .bind(room_id.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(downloaded)
    }

    async fn get_custom_value(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let value: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT value FROM crypto_custom_values WHERE store_id = $1 AND name = $2",
        )
        .bind(self.store_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        value.map(|value| self.decrypt(&value)).transpose()
    }

    async fn set_custom_value(&self, key: &str, value: Vec<u8>) -> Result<()> {
        sqlx::query(
            "INSERT INTO crypto_custom_values (store_id, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (store_id, name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(self.store_id)
        .bind(key)
        .bind(self.encrypt(&value)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_custom_value(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM crypto_custom_values WHERE store_id = $1 AND name = $2")
            .bind(self.store_id)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn try_take_leased_lock(
        &self,
        lease_duration_ms: u32,
        key: &str,
        holder: &str,
    ) -> Result<Option<u64>> {
        let now = i64::from(MilliSecondsSinceUnixEpoch::now().get());
        // The holder renews its lease; anyone else takes it over only after
        // it expired, and the generation counts the takeovers.
        let generation: Option<i64> = sqlx::query_scalar(
            "INSERT INTO crypto_lease_locks AS l (store_id, name, holder, expires_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (store_id, name) DO UPDATE SET
                 holder = EXCLUDED.holder,
                 expires_at_ms = EXCLUDED.expires_at_ms,
                 generation = CASE WHEN l.holder = EXCLUDED.holder THEN l.generation ELSE l.generation + 1 END
             WHERE l.holder = EXCLUDED.holder OR l.expires_at_ms < $5
             RETURNING generation",
        )
        .bind(self.store_id)
        .bind(key)
        .bind(holder)
        .bind(now + i64::from(lease_duration_ms))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(generation.map(|generation| generation as u64))
    }

    async fn next_batch_token(&self) -> Result<Option<String>> {
        self.value(names::NEXT_BATCH_TOKEN).await
    }

    async fn close(&self) -> Result<()> {
        // The pool is the bridge's, shared by every store: nothing to close.
        Ok(())
    }

    async fn reopen(&self) -> Result<()> {
        Ok(())
    }

    async fn get_size(&self) -> Result<Option<usize>> {
        Ok(None)
    }
}
