//! Limits on what one request may carry, in one place: the spec's fixed
//! limits as constants, the operator's in `[limits]` (`config::LimitsConfig`).
//! The extractor (`ruma.rs`) enforces body size, JSON depth and path
//! parameter length for every endpoint; handlers call [`check_count`] for the
//! number of items their request type holds. Every refusal is a client
//! error with the spec's errcode, never a 500.

use super::error::{ApiError, ApiResult};

/// The spec's limit on an event's size, signatures and hashes included
/// (413 `M_TOO_LARGE`).
pub const MAX_EVENT_BYTES: usize = 65_535;

/// The spec's limit on an event's `type` and `state_key` and on every
/// identifier (user ids, room ids and aliases, event ids): 255 bytes. Path
/// parameters are all of these (or transaction, device and media ids, which
/// we hold to the same), so no path parameter may be longer.
pub const MAX_ID_BYTES: usize = 255;

/// 400 `M_BAD_JSON` when `json` nests arrays and objects deeper than
/// `max_depth`. A linear scan of the bytes, before any parser recurses into
/// them (serde_json stops at 128 levels, canonical JSON and drop glue do
/// not).
pub fn check_json_depth(json: &[u8], max_depth: usize) -> ApiResult<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ApiError::bad_json(format!("JSON is nested deeper than {max_depth} levels")));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// 400 `M_INVALID_PARAM` when a path parameter is longer than any
/// identifier may be.
pub fn check_path_params(params: &[String]) -> ApiResult<()> {
    match params.iter().find(|param| param.len() > MAX_ID_BYTES) {
        Some(param) => Err(ApiError::invalid_param(format!("Path parameter of {} bytes; at most {MAX_ID_BYTES} are allowed", param.len()))),
        None => Ok(()),
    }
}

/// 413 `M_TOO_LARGE` when a request carries more than `max` items of one
/// kind (to-device messages, users whose keys are queried, …): each costs
/// the server work that the body size alone does not bound.
pub fn check_count(count: usize, max: usize, what: &str) -> ApiResult<()> {
    if count > max {
        return Err(ApiError::too_large(format!("Request carries {count} {what}; at most {max} are allowed")));
    }
    Ok(())
}

/// 413 `M_TOO_LARGE` when an event's `type` or `state_key` is longer than
/// the spec allows.
pub fn check_event_field(name: &str, value: &str) -> ApiResult<()> {
    if value.len() > MAX_ID_BYTES {
        return Err(ApiError::too_large(format!("Event {name} is longer than {MAX_ID_BYTES} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(check_json_depth(br#"{"a":[{"b":1}]}"#, 3).is_ok());
        assert!(check_json_depth(br#"{"a":[{"b":[1]}]}"#, 3).is_err());
        assert!(check_json_depth(br#"{"a":"[[[[{{{{\"[[["}"#, 1).is_ok());
        assert!(check_json_depth(br#"{"a":"\\"}"#, 1).is_ok());
    }

    #[test]
    fn stray_closing_brackets_do_not_underflow() {
        assert!(check_json_depth(b"]]]]{}", 1).is_ok());
    }
}
