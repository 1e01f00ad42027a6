//! Account data: global and per-room entries under
//! `/user/{userId}/…/account_data/{type}`, and room tags, which are the
//! room's `m.tag` entry. Only the user themself reads or writes them; every
//! write wakes the user's syncs, which carry it to their other devices.

use axum::Router;
use ruma::{
    OwnedUserId, RoomId, UserId,
    api::{
        client::{
            config::{get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data},
            tag::{create_tag, delete_tag, get_tags},
        },
        error::ErrorKind,
    },
    events::{
        StaticEventContent,
        fully_read::FullyReadEventContent,
        push_rules::PushRulesEventContent,
        tag::{TagEventContent, TagName, Tags},
    },
    serde::Raw,
};
use serde_json::{Value as JsonValue, value::RawValue as RawJsonValue};
use sqlx::{PgConnection, PgExecutor, Postgres, Transaction};

use super::require_own_account;
use crate::{
    http::{ApiError, ApiResult, Args, RouterExt, Session},
    server::Homeserver,
    storage::account_data,
    tim::permissions,
};

/// Types the server keeps through their own endpoints (read markers, push
/// rules). The spec has clients' writes to them rejected, global or per
/// room, with 405 `M_BAD_JSON`.
const SERVER_MANAGED: &[&str] = &[FullyReadEventContent::TYPE, PushRulesEventContent::TYPE];

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(get_global)
        .endpoint(set_global)
        .endpoint(get_room)
        .endpoint(set_room)
        .endpoint(get_tags)
        .endpoint(create_tag)
        .endpoint(delete_tag)
}

/// One transaction on a user's settings (account data, push rules). It
/// holds the user's settings lock, so reads through `conn` stay valid
/// until commit; commit wakes the user's syncs.
pub(super) struct SettingsWriter<'s> {
    server: &'s Homeserver,
    user_id: OwnedUserId,
    tx: Transaction<'static, Postgres>,
}

impl<'s> SettingsWriter<'s> {
    pub(super) async fn open(server: &'s Homeserver, user_id: &UserId) -> ApiResult<Self> {
        let mut tx = server.db.user_shard(user_id).begin().await?;
        account_data::lock_user_settings(&mut tx, user_id).await?;
        Ok(Self { server, user_id: user_id.to_owned(), tx })
    }

    /// The open transaction, for reads and writes beside account data.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Sets one entry (global when `room_id` is `None`).
    pub(super) async fn set(&mut self, room_id: Option<&RoomId>, data_type: &str, content: &JsonValue) -> ApiResult<()> {
        account_data::set(&mut self.tx, &self.user_id, room_id, data_type, content).await?;
        Ok(())
    }

    /// Commits, then wakes the user's waiting syncs.
    pub(super) async fn commit(self) -> ApiResult<()> {
        self.tx.commit().await?;
        self.server.notifier.notify_users([&self.user_id]);
        Ok(())
    }
}

/// A stored entry, 404 when there is none. Push rules are always there:
/// before the user changed any, they are the server's defaults.
async fn read<T>(server: &Homeserver, user_id: &UserId, room_id: Option<&RoomId>, data_type: &str) -> ApiResult<Raw<T>> {
    let db = server.db.user_shard(user_id);
    let content = match account_data::get(db, user_id, room_id, data_type).await? {
        Some(content) => content,
        None if room_id.is_none() && data_type == PushRulesEventContent::TYPE => crate::push::account_data_content(crate::push::ruleset(db, user_id).await?)?,
        None => return Err(ApiError::not_found("Account data not found")),
    };
    Ok(Raw::from_json(serde_json::value::to_raw_value(&content)?))
}

/// Stores an entry a client sent: a JSON object of a type the server does
/// not manage itself; `m.tag` must have the shape the tag endpoints read, a
/// global TI-M permission config gematik's schema (`tim::permissions`).
async fn write(server: &Homeserver, session: &Session, user_id: &UserId, room_id: Option<&RoomId>, data_type: &str, data: &RawJsonValue) -> ApiResult<()> {
    require_own_account(session, user_id)?;
    if SERVER_MANAGED.contains(&data_type) {
        return Err(ApiError::new(
            http::StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadJson,
            format!("{data_type} is managed by the server and cannot be set through this API"),
        ));
    }
    let content: JsonValue = serde_json::from_str(data.get()).map_err(|err| ApiError::bad_json(err.to_string()))?;
    if !content.is_object() {
        return Err(ApiError::bad_json("Account data must be a JSON object"));
    }
    match room_id {
        Some(_) if data_type == TagEventContent::TYPE => {
            serde_json::from_value::<TagEventContent>(content.clone()).map_err(|err| ApiError::bad_json(format!("Invalid m.tag content: {err}")))?;
        }
        Some(_) => {}
        None => permissions::validate_account_data(data_type, &content)?,
    }
    let mut writer = SettingsWriter::open(server, user_id).await?;
    writer.set(room_id, data_type, &content).await?;
    writer.commit().await
}

async fn get_global(server: Homeserver, args: Args<get_global_account_data::v3::Request>) -> ApiResult<get_global_account_data::v3::Response> {
    let request = &args.body;
    require_own_account(args.session()?, &request.user_id)?;
    let content = read(&server, &request.user_id, None, &request.event_type.to_string()).await?;
    Ok(get_global_account_data::v3::Response::new(content))
}

async fn set_global(server: Homeserver, args: Args<set_global_account_data::v3::Request>) -> ApiResult<set_global_account_data::v3::Response> {
    let request = &args.body;
    write(&server, args.session()?, &request.user_id, None, &request.event_type.to_string(), request.data.json()).await?;
    Ok(set_global_account_data::v3::Response::new())
}

async fn get_room(server: Homeserver, args: Args<get_room_account_data::v3::Request>) -> ApiResult<get_room_account_data::v3::Response> {
    let request = &args.body;
    require_own_account(args.session()?, &request.user_id)?;
    let content = read(&server, &request.user_id, Some(&request.room_id), &request.event_type.to_string()).await?;
    Ok(get_room_account_data::v3::Response::new(content))
}

async fn set_room(server: Homeserver, args: Args<set_room_account_data::v3::Request>) -> ApiResult<set_room_account_data::v3::Response> {
    let request = &args.body;
    write(&server, args.session()?, &request.user_id, Some(&request.room_id), &request.event_type.to_string(), request.data.json()).await?;
    Ok(set_room_account_data::v3::Response::new())
}

// ----------------------------------------------------------------- room tags

/// The room's tags: the `tags` of its `m.tag` entry.
async fn tags_of(db: impl PgExecutor<'_>, user_id: &UserId, room_id: &RoomId) -> ApiResult<Tags> {
    match account_data::get(db, user_id, Some(room_id), TagEventContent::TYPE).await? {
        Some(content) => Ok(serde_json::from_value::<TagEventContent>(content)?.tags),
        None => Ok(Tags::new()),
    }
}

/// Applies `change` to the room's tags under the settings lock and stores
/// the result if `change` says it changed anything.
async fn change_tags(server: &Homeserver, user_id: &UserId, room_id: &RoomId, change: impl FnOnce(&mut Tags) -> bool) -> ApiResult<()> {
    let mut writer = SettingsWriter::open(server, user_id).await?;
    let mut tags = tags_of(writer.conn(), user_id, room_id).await?;
    if !change(&mut tags) {
        return Ok(());
    }
    writer.set(Some(room_id), TagEventContent::TYPE, &serde_json::to_value(TagEventContent::new(tags))?).await?;
    writer.commit().await
}

async fn get_tags(server: Homeserver, args: Args<get_tags::v3::Request>) -> ApiResult<get_tags::v3::Response> {
    let request = &args.body;
    require_own_account(args.session()?, &request.user_id)?;
    let tags = tags_of(server.db.user_shard(&request.user_id), &request.user_id, &request.room_id).await?;
    Ok(get_tags::v3::Response::new(tags))
}

/// Adds the tag or replaces its `order`.
async fn create_tag(server: Homeserver, args: Args<create_tag::v3::Request>) -> ApiResult<create_tag::v3::Response> {
    require_own_account(args.session()?, &args.body.user_id)?;
    let request = args.body;
    let (tag, info) = (TagName::from(request.tag), request.tag_info);
    change_tags(&server, &request.user_id, &request.room_id, |tags| {
        tags.insert(tag, info);
        true
    })
    .await?;
    Ok(create_tag::v3::Response::new())
}

/// Removes the tag; removing a tag the room does not have is no error.
async fn delete_tag(server: Homeserver, args: Args<delete_tag::v3::Request>) -> ApiResult<delete_tag::v3::Response> {
    let request = &args.body;
    require_own_account(args.session()?, &request.user_id)?;
    let tag = TagName::from(request.tag.as_str());
    change_tags(&server, &request.user_id, &request.room_id, |tags| tags.remove(&tag).is_some()).await?;
    Ok(delete_tag::v3::Response::new())
}
