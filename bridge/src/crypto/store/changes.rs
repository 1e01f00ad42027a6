//! Writing a store: every `Changes` batch the machine hands over is one
//! PostgreSQL transaction, so a crash never leaves half a batch (a session
//! advanced without the message hash that marks its message as seen, …).

use matrix_sdk_crypto::store::types::{Changes, PendingChanges};
use sqlx::{Postgres, Transaction};

use super::{PgCryptoStore, Result, names};

impl PgCryptoStore {
    pub(super) async fn write_pending_changes(&self, changes: PendingChanges) -> Result<()> {
        let _guard = self.save_lock.lock().await;
        if let Some(account) = changes.account {
            self.set_static_account(account.static_data().clone());
            let pickle = self.encrypt(&account.pickle())?;
            let mut txn = self.pool.begin().await?;
            self.put_value(&mut txn, names::ACCOUNT, pickle).await?;
            txn.commit().await?;
        }
        Ok(())
    }

    pub(super) async fn write_changes(&self, changes: Changes) -> Result<()> {
        let _guard = self.save_lock.lock().await;
        // Pickling awaits the sessions' locks: done before the transaction
        // opens, so it does not hold a connection meanwhile.
        let private_identity = match &changes.private_identity {
            Some(identity) => Some(self.encrypt(&identity.pickle().await)?),
            None => None,
        };
        let mut sessions = Vec::with_capacity(changes.sessions.len());
        for session in &changes.sessions {
            let pickle = self.encrypt(&session.pickle().await)?;
            sessions.push((
                session.session_id().to_owned(),
                session.sender_key().to_base64(),
                pickle,
            ));
        }
        let mut inbound = Vec::with_capacity(changes.inbound_group_sessions.len());
        for session in &changes.inbound_group_sessions {
            let pickle = session.pickle().await;
            let (backed_up, sender_data_type) =
                (pickle.backed_up, pickle.sender_data.to_type() as i16);
            inbound.push((session, backed_up, sender_data_type, self.encrypt(&pickle)?));
        }
        let mut outbound = Vec::with_capacity(changes.outbound_group_sessions.len());
        for session in &changes.outbound_group_sessions {
            outbound.push((
                session.room_id().to_owned(),
                self.encrypt(&session.pickle().await)?,
            ));
        }

        let mut txn = self.pool.begin().await?;
        let store_id = self.store_id;
        if let Some(pickle) = private_identity {
            self.put_value(&mut txn, names::PRIVATE_IDENTITY, pickle)
                .await?;
        }
        if let Some(token) = &changes.next_batch_token {
            self.put_value(&mut txn, names::NEXT_BATCH_TOKEN, self.encrypt(token)?)
                .await?;
        }
        if let Some(key) = &changes.backup_decryption_key {
            self.put_value(&mut txn, names::BACKUP_DECRYPTION_KEY, self.encrypt(key)?)
                .await?;
        }
        if let Some(version) = &changes.backup_version {
            self.put_value(&mut txn, names::BACKUP_VERSION, self.encrypt(version)?)
                .await?;
        }
        if let Some(key) = &changes.dehydrated_device_pickle_key {
            self.put_value(
                &mut txn,
                names::DEHYDRATED_DEVICE_PICKLE_KEY,
                self.encrypt(key)?,
            )
            .await?;
        }

        for device in changes.devices.new.iter().chain(&changes.devices.changed) {
            sqlx::query(
                "INSERT INTO crypto_devices (store_id, user_id, device_id, data) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (store_id, user_id, device_id) DO UPDATE SET data = EXCLUDED.data",
            )
            .bind(store_id)
            .bind(device.user_id().as_str())
            .bind(device.device_id().as_str())
            .bind(self.encrypt(device)?)
            .execute(&mut *txn)
            .await?;
        }
        for device in &changes.devices.deleted {
            sqlx::query("DELETE FROM crypto_devices WHERE store_id = $1 AND user_id = $2 AND device_id = $3")
                .bind(store_id)
                .bind(device.user_id().as_str())
                .bind(device.device_id().as_str())
                .execute(&mut *txn)
                .await?;
        }
        for identity in changes
            .identities
            .new
            .iter()
            .chain(&changes.identities.changed)
        {
            sqlx::query(
                "INSERT INTO crypto_identities (store_id, user_id, data) VALUES ($1, $2, $3)
                 ON CONFLICT (store_id, user_id) DO UPDATE SET data = EXCLUDED.data",
            )
            .bind(store_id)
            .bind(identity.user_id().as_str())
            .bind(self.encrypt(identity)?)
            .execute(&mut *txn)
            .await?;
        }

        for (session_id, sender_key, pickle) in sessions {
            sqlx::query(
                "INSERT INTO crypto_olm_sessions (store_id, session_id, sender_key, pickle) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (store_id, session_id) DO UPDATE SET sender_key = EXCLUDED.sender_key, pickle = EXCLUDED.pickle",
            )
            .bind(store_id)
            .bind(session_id)
            .bind(sender_key)
            .bind(pickle)
            .execute(&mut *txn)
            .await?;
        }
        for (session, backed_up, sender_data_type, pickle) in inbound {
            sqlx::query(
                "INSERT INTO crypto_inbound_group_sessions
                     (store_id, room_id, session_id, sender_key, sender_data_type, backed_up, pickle)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (store_id, room_id, session_id) DO UPDATE SET
                     sender_key = EXCLUDED.sender_key, sender_data_type = EXCLUDED.sender_data_type,
                     backed_up = EXCLUDED.backed_up, pickle = EXCLUDED.pickle",
            )
            .bind(store_id)
            .bind(session.room_id().as_str())
            .bind(session.session_id())
            .bind(session.sender_key().to_base64())
            .bind(sender_data_type)
            .bind(backed_up)
            .bind(pickle)
            .execute(&mut *txn)
            .await?;
        }
        for (room_id, pickle) in outbound {
            sqlx::query(
                "INSERT INTO crypto_outbound_group_sessions (store_id, room_id, pickle) VALUES ($1, $2, $3)
                 ON CONFLICT (store_id, room_id) DO UPDATE SET pickle = EXCLUDED.pickle",
            )
            .bind(store_id)
            .bind(room_id.as_str())
            .bind(pickle)
            .execute(&mut *txn)
            .await?;
        }
        for hash in &changes.message_hashes {
            sqlx::query(
                "INSERT INTO crypto_olm_message_hashes (store_id, sender_key, hash) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(store_id)
            .bind(&hash.sender_key)
            .bind(&hash.hash)
            .execute(&mut *txn)
            .await?;
        }
        for request in &changes.key_requests {
            sqlx::query(
                "INSERT INTO crypto_secret_requests (store_id, request_id, sent_out, data) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (store_id, request_id) DO UPDATE SET sent_out = EXCLUDED.sent_out, data = EXCLUDED.data",
            )
            .bind(store_id)
            .bind(request.request_id.as_str())
            .bind(request.sent_out)
            .bind(self.encrypt(request)?)
            .execute(&mut *txn)
            .await?;
        }
        for (room_id, sessions) in &changes.withheld_session_info {
            for (session_id, entry) in sessions {
                sqlx::query(
                    "INSERT INTO crypto_withheld_sessions (store_id, room_id, session_id, data) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (store_id, room_id, session_id) DO UPDATE SET data = EXCLUDED.data",
                )
                .bind(store_id)
                .bind(room_id.as_str())
                .bind(session_id)
                .bind(self.encrypt(entry)?)
                .execute(&mut *txn)
                .await?;
            }
        }
        for (room_id, settings) in &changes.room_settings {
            sqlx::query(
                "INSERT INTO crypto_room_settings (store_id, room_id, data) VALUES ($1, $2, $3)
                 ON CONFLICT (store_id, room_id) DO UPDATE SET data = EXCLUDED.data",
            )
            .bind(store_id)
            .bind(room_id.as_str())
            .bind(self.encrypt(settings)?)
            .execute(&mut *txn)
            .await?;
        }
        for item in &changes.secrets {
            let name = item.secret_name.to_string();
            let hash = self.cipher.hash_key(&name, item.secret.as_bytes());
            sqlx::query(
                "INSERT INTO crypto_secrets_inbox (store_id, secret_name, secret_hash, secret) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(store_id)
            .bind(&name)
            .bind(&hash[..])
            .bind(self.encrypt(&*item.secret)?)
            .execute(&mut *txn)
            .await?;
        }
        for bundle in &changes.received_room_key_bundles {
            sqlx::query(
                "INSERT INTO crypto_received_room_key_bundles (store_id, room_id, sender_user_id, data)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (store_id, room_id, sender_user_id) DO UPDATE SET data = EXCLUDED.data",
            )
            .bind(store_id)
            .bind(bundle.bundle_data.room_id.as_str())
            .bind(bundle.sender_user.as_str())
            .bind(self.encrypt(bundle)?)
            .execute(&mut *txn)
            .await?;
        }
        for room_id in &changes.room_key_backups_fully_downloaded {
            sqlx::query(
                "INSERT INTO crypto_room_key_backups_downloaded (store_id, room_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(store_id)
            .bind(room_id.as_str())
            .execute(&mut *txn)
            .await?;
        }
        for (room_id, details) in &changes.rooms_pending_key_bundle {
            match details {
                Some(details) => {
                    sqlx::query(
                        "INSERT INTO crypto_rooms_pending_key_bundle (store_id, room_id, data) VALUES ($1, $2, $3)
                         ON CONFLICT (store_id, room_id) DO UPDATE SET data = EXCLUDED.data",
                    )
                    .bind(store_id)
                    .bind(room_id.as_str())
                    .bind(self.encrypt(details)?)
                    .execute(&mut *txn)
                    .await?
                }
                None => {
                    sqlx::query("DELETE FROM crypto_rooms_pending_key_bundle WHERE store_id = $1 AND room_id = $2")
                        .bind(store_id)
                        .bind(room_id.as_str())
                        .execute(&mut *txn)
                        .await?
                }
            };
        }
        txn.commit().await?;
        Ok(())
    }

    async fn put_value(
        &self,
        txn: &mut Transaction<'_, Postgres>,
        name: &str,
        value: Vec<u8>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO crypto_values (store_id, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (store_id, name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(self.store_id)
        .bind(name)
        .bind(value)
        .execute(&mut **txn)
        .await?;
        Ok(())
    }
}
