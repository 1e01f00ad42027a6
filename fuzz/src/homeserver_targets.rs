//! The homeserver's fuzz targets as plain functions: `fuzz_targets/` hands
//! them libFuzzer's input, `homeserver/tests/input_limits.rs` runs them over
//! the seed corpus and the crash regressions on every test run. Each one
//! must not panic on any input and checks a property of what it parses.

use homeserver::{http::limits, sync::filter};
use ruma::{
    CanonicalJsonValue,
    api::client::filter::FilterDefinition,
    canonical_json::redact,
    events::AnyTimelineEvent,
    room_version_rules::RoomVersionRules,
    serde::Raw,
};

/// The server's own depth limit, so inputs go as deep as a request may.
const MAX_JSON_DEPTH: usize = 64;

/// Event JSON as a client or a PDU carries it: canonical JSON is a fixed
/// point (parsing what it prints prints the same), redaction keeps it
/// canonical, and ruma's event types take it or refuse it without panic.
pub fn event_json(data: &[u8]) {
    if limits::check_json_depth(data, MAX_JSON_DEPTH).is_err() {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Raw::<AnyTimelineEvent>::from_json_string(text.to_owned()).map(|raw| raw.deserialize());
    let Some(value) = canonical(text) else { return };
    let printed = value.to_string();
    let reparsed = canonical(&printed).expect("canonical JSON parses");
    assert_eq!(reparsed.to_string(), printed, "canonical JSON is a fixed point");
    if let CanonicalJsonValue::Object(object) = value
        && let Ok(redacted) = redact(object, &RoomVersionRules::V10.redaction, None)
    {
        canonical(&CanonicalJsonValue::Object(redacted).to_string()).expect("a redacted event is canonical JSON");
    }
}

/// `text` as canonical JSON, if it is JSON that has a canonical form (no
/// floats, integers within ±2^53).
fn canonical(text: &str) -> Option<CanonicalJsonValue> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    CanonicalJsonValue::try_from(value).ok()
}

/// A sync filter as `/sync?filter=` or `POST /filter` carries it: the size
/// check and the type patterns (`*` wildcards) never panic, and every
/// pattern matches itself when it has no `*`, and `*` matches anything.
pub fn sync_filter(data: &[u8]) {
    if limits::check_json_depth(data, MAX_JSON_DEPTH).is_err() {
        return;
    }
    let Ok(definition) = serde_json::from_slice::<FilterDefinition>(data) else { return };
    let _ = filter::check_size(&definition, 1_000);
    let timeline = &definition.room.timeline;
    let patterns = timeline.types.iter().flatten().chain(&timeline.not_types);
    for pattern in patterns.clone() {
        for event_type in patterns.clone() {
            filter::type_matches(pattern, event_type);
        }
        assert!(filter::type_matches("*", pattern));
        if !pattern.contains('*') {
            assert!(filter::type_matches(pattern, pattern), "{pattern:?} matches itself");
        }
        let event = serde_json::json!({ "type": pattern, "sender": "@a:example.org", "content": {} });
        filter::allows_event(timeline, &event);
    }
}
