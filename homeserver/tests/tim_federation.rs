//! The TI-M federation list (`tim::federation_list`): a signed list served
//! by a real HTTP endpoint on loopback playing the VZD, signed in the test
//! with a generated CA and ES256 or brainpoolP256r1 leaf keys (OpenSSL).
//! The rules are `shared/TI-MESSENGER.md`'s "Federation list" (only listed
//! domains, the 72 h rule; gematik's public test suite names no requirement
//! id for them) and A_25705 (no insured-to-insured invites, remote insured
//! persons by `isInsurance`).

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use common::{TestServer, api::enc};
use homeserver::tim::federation_list::Standing;
use openssl::{
    asn1::Asn1Time,
    bn::BigNum,
    ec::{EcGroup, EcKey},
    ecdsa::EcdsaSig,
    hash::MessageDigest,
    nid::Nid,
    pkey::{PKey, Private},
    sha::sha256,
    x509::{
        X509, X509Builder, X509NameBuilder,
        extension::{BasicConstraints, KeyUsage},
    },
};
use serde_json::{Value, json};

const PATH: &str = "/tim-provider-services/FederationList/federationList.jws";
const VZD_TOKEN: &str = "vzd-access-token-of-the-provider";
const KVNR_IDA: &str = "A000000014";

fn ec_key(curve: Nid) -> PKey<Private> {
    PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(curve).unwrap()).unwrap()).unwrap()
}

/// A certificate for `key`, issued by `issuer` (self-signed when `None`).
fn certificate(name: &str, key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>, ca: bool) -> X509 {
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", name).unwrap();
    let subject = subject.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    builder.set_serial_number(&BigNum::from_u32(rand_serial()).unwrap().to_asn1_integer().unwrap()).unwrap();
    builder.set_subject_name(&subject).unwrap();
    builder.set_issuer_name(issuer.map_or(&subject, |(cert, _)| cert.subject_name())).unwrap();
    builder.set_pubkey(key).unwrap();
    builder.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    builder.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    if ca {
        builder.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
        builder.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().unwrap()).unwrap();
    } else {
        builder.append_extension(KeyUsage::new().critical().digital_signature().build().unwrap()).unwrap();
    }
    builder.sign(issuer.map_or(key, |(_, issuer_key)| issuer_key), MessageDigest::sha256()).unwrap();
    builder.build()
}

fn rand_serial() -> u32 {
    use rand::Rng as _;
    rand::rng().random_range(1..u32::MAX)
}

/// A TI CA and the VZD's signing certificate it issued.
struct Signer {
    ca: X509,
    key: PKey<Private>,
    leaf: X509,
    alg: &'static str,
}

impl Signer {
    fn new(alg: &'static str) -> Self {
        let ca_key = ec_key(Nid::X9_62_PRIME256V1);
        let ca = certificate("Test TI CA", &ca_key, None, true);
        Self::issued_by(alg, ca, &ca_key)
    }

    fn issued_by(alg: &'static str, ca: X509, ca_key: &PKey<Private>) -> Self {
        let curve = if alg == "BP256R1" { Nid::BRAINPOOL_P256R1 } else { Nid::X9_62_PRIME256V1 };
        let key = ec_key(curve);
        let leaf = certificate("VZD federation list signer", &key, Some((&ca, ca_key)), false);
        Self { ca, key, leaf, alg }
    }

    /// The compact JWS of `payload`, ECDSA r || s as RFC 7518 wants.
    fn sign(&self, payload: &Value) -> String {
        let header = json!({ "alg": self.alg, "typ": "JWT", "x5c": [STANDARD.encode(self.leaf.to_der().unwrap())] });
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(payload.to_string()));
        let signature = EcdsaSig::sign(&sha256(input.as_bytes()), &self.key.ec_key().unwrap()).unwrap();
        let mut raw = signature.r().to_vec_padded(32).unwrap();
        raw.extend(signature.s().to_vec_padded(32).unwrap());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(raw))
    }

    fn ca_pem(&self) -> Vec<u8> {
        self.ca.to_pem().unwrap()
    }
}

fn federation_list(version: i64, extra: &[Value]) -> Value {
    let mut domains = vec![
        json!({ "domain": "listed.example", "telematikID": "1-2arvtst-ap000001", "isInsurance": false, "ik": [] }),
        json!({ "domain": "insurer.example", "telematikID": "8-01-0000000001", "isInsurance": true, "ik": ["109500969"], "timAnbieter": "ANB-1" }),
    ];
    domains.extend_from_slice(extra);
    json!({ "version": version, "domainList": domains })
}

/// What the fake VZD serves and what it was asked.
#[derive(Default)]
struct Vzd {
    version: i64,
    jws: String,
    /// `(version query parameter, Authorization header)` per request.
    requests: Vec<(Option<i64>, Option<String>)>,
}

type Shared = Arc<Mutex<Vzd>>;

/// The VZD's `getFederationList`: the list, or 204 when the client's
/// version is current.
async fn get_federation_list(State(vzd): State<Shared>, Query(query): Query<std::collections::HashMap<String, String>>, headers: HeaderMap) -> Response {
    let known: Option<i64> = query.get("version").and_then(|v| v.parse().ok());
    let mut vzd = vzd.lock().unwrap();
    let authorization = headers.get("authorization").and_then(|h| h.to_str().ok()).map(str::to_owned);
    vzd.requests.push((known, authorization));
    if known.is_some_and(|known| known >= vzd.version) {
        return StatusCode::NO_CONTENT.into_response();
    }
    ([("content-type", "application/jose")], vzd.jws.clone()).into_response()
}

/// Serves the fake VZD on a loopback port until the test ends.
async fn start_vzd(vzd: Shared) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(PATH, get(get_federation_list)).with_state(vzd);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

/// A homeserver that fetches its federation list from a fake VZD serving
/// `jws` (version `version`) and trusts `anchor`.
async fn server_with_vzd(jws: String, version: i64, anchor: &[u8]) -> (TestServer, Shared, tempfile::TempDir, tokio::task::JoinHandle<()>) {
    let vzd: Shared = Arc::new(Mutex::new(Vzd { version, jws, requests: Vec::new() }));
    let (addr, task) = start_vzd(vzd.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let anchor_path = dir.path().join("ti-ca.pem");
    std::fs::write(&anchor_path, anchor).unwrap();
    let server = TestServer::start_with(|config| {
        let list = &mut config.tim.federation_list;
        list.url = Some(format!("http://{addr}{PATH}"));
        list.access_token = Some(VZD_TOKEN.to_owned());
        list.trust_anchor = Some(anchor_path);
        config.tim.retention.enabled = false;
    })
    .await;
    (server, vzd, dir, task)
}

async fn invite(api: &common::api::Api, room_id: &str, user_id: &str) -> common::api::Reply {
    api.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(room_id)), json!({ "user_id": user_id })).await
}

#[tokio::test]
async fn only_domains_on_the_federation_list_are_invited() {
    let signer = Signer::new("ES256");
    let (server, vzd, _dir, _vzd_task) = server_with_vzd(signer.sign(&federation_list(7, &[])), 7, &signer.ca_pem()).await;
    let staff = server.api_as(&server.register_user("sabine").await.access_token);
    let room_id = staff.create_room(json!({})).await;

    invite(&staff, &room_id, "@anna:listed.example").await.ok();
    let refused = invite(&staff, &room_id, "@mallory:unlisted.example").await;
    refused.assert_error(403, "M_FORBIDDEN");
    assert!(refused.text.contains("federation list"), "{refused}");

    // createRoom's invite is judged the same way.
    staff.post("/_matrix/client/v3/createRoom", json!({ "invite": ["@mallory:unlisted.example"] })).await.assert_error(403, "M_FORBIDDEN");
    staff.post("/_matrix/client/v3/createRoom", json!({ "invite": ["@anna:listed.example"] })).await.ok();
    // Our own users need no list entry.
    server.register_user("tom").await;
    invite(&staff, &room_id, &common::user_id("tom")).await.ok();

    // The provider's token went to the VZD; the list is stored for every
    // worker and the helpers answer from it.
    let requests = vzd.lock().unwrap().requests.clone();
    assert!(requests.iter().all(|(_, auth)| auth.as_deref() == Some(&*format!("Bearer {VZD_TOKEN}"))), "{requests:?}");
    let hs = server.server();
    let (version, stored): (i64, String) =
        sqlx::query_as("SELECT version, jws FROM tim_federation_list").fetch_one(hs.db.global()).await.unwrap();
    assert_eq!(version, 7);
    assert_eq!(stored, vzd.lock().unwrap().jws);
    assert!(hs.federation_list.is_federated("listed.example"));
    assert!(hs.federation_list.is_federated("INSURER.example"), "server names compare case-insensitively");
    assert!(!hs.federation_list.is_federated("unlisted.example"));
    assert!(hs.federation_list.is_insurance("insurer.example"));
    assert!(!hs.federation_list.is_insurance("listed.example"));
    let list = hs.federation_list.current().unwrap();
    assert_eq!(list.list.find_by_ik("109500969").map(|entry| entry.domain.as_str()), Some("insurer.example"));
    assert_eq!(list.list.find_by_telematik_id("1-2arvtst-ap000001").count(), 1);
}

#[tokio::test]
async fn a_25705_insured_persons_do_not_invite_users_of_insurers() {
    let signer = Signer::new("ES256");
    let (server, _vzd, _dir, _vzd_task) = server_with_vzd(signer.sign(&federation_list(1, &[])), 1, &signer.ca_pem()).await;
    let ida = server.api_as(&server.register_insured("ida", KVNR_IDA).await.access_token);
    let staff = server.api_as(&server.register_user("sabine").await.access_token);

    let room_id = ida.create_room(json!({ "initial_state": [{ "type": "m.room.encryption", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] })).await;
    let refused = invite(&ida, &room_id, "@otto:insurer.example").await;
    refused.assert_error(403, "M_FORBIDDEN");
    assert!(refused.text.contains("Insured persons"), "{refused}");
    // A professional's domain is fine for the insured person, and staff may
    // invite the other insurer's insured persons.
    invite(&ida, &room_id, "@dr.who:listed.example").await.ok();
    let staff_room = staff.create_room(json!({})).await;
    invite(&staff, &staff_room, "@otto:insurer.example").await.ok();
}

#[tokio::test]
async fn brainpool_signed_lists_verify() {
    let signer = Signer::new("BP256R1");
    let (server, _vzd, _dir, _vzd_task) = server_with_vzd(signer.sign(&federation_list(3, &[])), 3, &signer.ca_pem()).await;
    let staff = server.api_as(&server.register_user("sabine").await.access_token);
    let room_id = staff.create_room(json!({})).await;
    invite(&staff, &room_id, "@anna:listed.example").await.ok();
    assert_eq!(server.server().federation_list.current().unwrap().list.version, 3);
}

/// A list that does not verify is never used: every remote invite is
/// refused, and the failure is counted.
async fn assert_list_refused(jws: String, anchor: &[u8]) {
    let (server, _vzd, _dir, _vzd_task) = server_with_vzd(jws, 1, anchor).await;
    let staff = server.api_as(&server.register_user("sabine").await.access_token);
    let room_id = staff.create_room(json!({})).await;
    let refused = invite(&staff, &room_id, "@anna:listed.example").await;
    refused.assert_error(403, "M_FORBIDDEN");
    assert!(refused.text.contains("No verified"), "{refused}");
    assert!(server.server().federation_list.current().is_none());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tim_federation_list").fetch_one(server.server().db.global()).await.unwrap();
    assert_eq!(stored, 0);
    let metrics = server.server().metrics.render().unwrap();
    assert!(metrics.contains(r#"tim_federation_list_refreshes_total{result="failed"}"#), "{metrics}");
}

#[tokio::test]
async fn a_list_with_a_bad_signature_is_refused() {
    let signer = Signer::new("ES256");
    let jws = signer.sign(&federation_list(1, &[]));
    // Another payload under the same signature.
    let (_, rest) = jws.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let header = jws.split('.').next().unwrap();
    let forged = format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(federation_list(1, &[json!({ "domain": "evil.example", "telematikID": "x", "isInsurance": false })]).to_string()));
    assert_list_refused(forged, &signer.ca_pem()).await;
}

#[tokio::test]
async fn a_list_signed_outside_the_trusted_chain_is_refused() {
    let trusted = Signer::new("ES256");
    let stranger = Signer::new("BP256R1");
    assert_list_refused(stranger.sign(&federation_list(1, &[])), &trusted.ca_pem()).await;
}

#[tokio::test]
async fn an_unchanged_list_is_answered_with_204_and_a_new_version_replaces_it() {
    let signer = Signer::new("ES256");
    let (server, vzd, _dir, _vzd_task) = server_with_vzd(signer.sign(&federation_list(7, &[])), 7, &signer.ca_pem()).await;
    let hs = server.server();
    hs.federation_list.refresh(&hs.db, true).await.unwrap();
    let first = hs.federation_list.current().unwrap();
    assert_eq!(first.list.version, 7);

    // The next refresh names the held version; the VZD answers 204 and the
    // list counts as confirmed (later refreshed_ts), still version 7.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    hs.federation_list.refresh(&hs.db, true).await.unwrap();
    let confirmed = hs.federation_list.current().unwrap();
    assert_eq!(confirmed.list.version, 7);
    assert!(confirmed.refreshed_ms > first.refreshed_ms);
    assert_eq!(vzd.lock().unwrap().requests.last().unwrap().0, Some(7));
    let stored: i64 = sqlx::query_scalar("SELECT refreshed_ts FROM tim_federation_list").fetch_one(hs.db.global()).await.unwrap();
    assert_eq!(stored, confirmed.refreshed_ms);

    // Version 8 adds a domain: fetched, verified, stored, used.
    {
        let mut vzd = vzd.lock().unwrap();
        vzd.version = 8;
        vzd.jws = signer.sign(&federation_list(8, &[json!({ "domain": "new.example", "telematikID": "1-new", "isInsurance": false })]));
    }
    assert!(!hs.federation_list.is_federated("new.example"));
    // A miss refreshes on the spot.
    let staff = server.api_as(&server.register_user("sabine").await.access_token);
    let room_id = staff.create_room(json!({})).await;
    invite(&staff, &room_id, "@neo:new.example").await.ok();
    // Whichever worker fetched it, the others take it from the database.
    hs.federation_list.refresh(&hs.db, false).await.unwrap();
    assert_eq!(hs.federation_list.current().unwrap().list.version, 8);
    let version: i64 = sqlx::query_scalar("SELECT version FROM tim_federation_list").fetch_one(hs.db.global()).await.unwrap();
    assert_eq!(version, 8);
}

#[tokio::test]
async fn a_list_not_refreshed_for_72_hours_stops_remote_invites() {
    let signer = Signer::new("ES256");
    let (mut server, vzd, _dir, vzd_task) = server_with_vzd(signer.sign(&federation_list(7, &[])), 7, &signer.ca_pem()).await;
    let hs = server.server().clone();
    hs.federation_list.refresh(&hs.db, true).await.unwrap();
    let refreshed = hs.federation_list.current().unwrap().refreshed_ms;
    let hour = 3_600_000;
    // The clock is a parameter: 72 h after the refresh the list still
    // holds, a moment later it does not.
    assert_eq!(hs.federation_list.standing("listed.example", refreshed + 72 * hour), Standing::Federated { is_insurance: false });
    assert_eq!(hs.federation_list.standing("listed.example", refreshed + 72 * hour + 1), Standing::Stale);

    // End to end: the VZD is gone and the stored list was last confirmed
    // 73 h ago; after a restart the worker holds only that list.
    vzd_task.abort();
    let _ = vzd_task.await;
    sqlx::query("UPDATE tim_federation_list SET refreshed_ts = refreshed_ts - $1").bind(73 * hour).execute(hs.db.global()).await.unwrap();
    drop(vzd);
    server.restart().await;
    let staff = server.api_as(&server.register_user("sabine").await.access_token);
    let room_id = staff.create_room(json!({})).await;
    let refused = invite(&staff, &room_id, "@anna:listed.example").await;
    refused.assert_error(403, "M_FORBIDDEN");
    assert!(refused.text.contains("out of date"), "{refused}");
    // Counted by the worker that refused (any of them).
    let mut metrics = String::new();
    for url in server.worker_urls() {
        metrics.push_str(&reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap());
    }
    assert!(metrics.contains(r#"tim_federation_list_refused_invites_total{reason="stale_list"} 1"#), "{metrics}");
    // Local invites go on.
    server.register_user("tom").await;
    invite(&staff, &room_id, &common::user_id("tom")).await.ok();
}

#[tokio::test]
async fn an_offline_setup_reads_the_list_from_a_file() {
    let signer = Signer::new("BP256R1");
    let dir = tempfile::tempdir().unwrap();
    let (list_path, anchor_path) = (dir.path().join("federationList.jws"), dir.path().join("ti-ca.pem"));
    std::fs::write(&list_path, signer.sign(&federation_list(5, &[]))).unwrap();
    std::fs::write(&anchor_path, signer.ca_pem()).unwrap();
    let server = TestServer::start_with(|config| {
        config.tim.federation_list.file = Some(list_path.clone());
        config.tim.federation_list.trust_anchor = Some(anchor_path);
        config.tim.retention.enabled = false;
    })
    .await;
    let staff = server.api_as(&server.register_user("sabine").await.access_token);
    let room_id = staff.create_room(json!({})).await;
    invite(&staff, &room_id, "@anna:listed.example").await.ok();
    invite(&staff, &room_id, "@neo:new.example").await.assert_error(403, "M_FORBIDDEN");

    // The operator drops in a newer list; it counts as refreshed when the
    // file was written.
    std::fs::write(&list_path, signer.sign(&federation_list(6, &[json!({ "domain": "new.example", "telematikID": "1-new", "isInsurance": false })]))).unwrap();
    let hs = server.server();
    hs.federation_list.refresh(&hs.db, true).await.unwrap();
    let loaded = hs.federation_list.current().unwrap();
    assert_eq!(loaded.list.version, 6);
    let written = std::fs::metadata(&list_path).unwrap().modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert_eq!(loaded.refreshed_ms, written);
    assert!(hs.federation_list.is_federated("new.example"));
}
