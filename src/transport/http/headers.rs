//! Reading request headers: what the client accepts, and the 2026-07-28
//! rule that `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` mirror the
//! body exactly (checked so a proxy routing on headers cannot be fooled).

use axum::http::{HeaderMap, header};
use base64::Engine;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::mcp::error::McpError;

/// A header's value with surrounding whitespace removed (RFC 9110 §5.5).
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Which response types the client takes: (JSON, SSE). No Accept header,
/// or `*/*`, takes both.
pub fn accepts(headers: &HeaderMap) -> (bool, bool) {
    let Some(accept) = get(headers, header::ACCEPT.as_str()) else {
        return (true, true);
    };
    let mut json = false;
    let mut sse = false;
    for part in accept.split(',') {
        let mime = part.split(';').next().unwrap_or("").trim();
        let is = |m: &str| mime.eq_ignore_ascii_case(m);
        if is("*/*") {
            json = true;
            sse = true;
        } else if is("application/json") || is("application/*") {
            json = true;
        } else if is("text/event-stream") || is("text/*") {
            sse = true;
        }
    }
    (json, sse)
}

/// Decodes the `=?base64?...?=` sentinel form of a header value; the
/// base64 must be canonical (padding and alphabet are checked).
fn decode_value(v: &str) -> Result<String, McpError> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                McpError::header_mismatch("a base64-encoded header value does not decode")
            }),
        None => Ok(v.to_owned()),
    }
}

/// Checks the standard request headers of a modern POST against its body.
pub fn check_modern(
    headers: &HeaderMap,
    method: &str,
    params: Option<&RawValue>,
    meta_version: &str,
) -> Result<(), McpError> {
    let version = get(headers, super::VERSION_HEADER)
        .ok_or_else(|| McpError::header_mismatch("the MCP-Protocol-Version header is missing"))?;
    if version != meta_version {
        return Err(McpError::header_mismatch(format!(
            "MCP-Protocol-Version header {version:?} does not match _meta protocolVersion {meta_version:?}"
        )));
    }
    let m = get(headers, "mcp-method")
        .ok_or_else(|| McpError::header_mismatch("the Mcp-Method header is missing"))?;
    if m != method {
        return Err(McpError::header_mismatch(format!(
            "Mcp-Method header {m:?} does not match body method {method:?}"
        )));
    }
    let name_field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        // The tasks extension routes on the task id.
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return Ok(()),
    };
    let header_name = get(headers, "mcp-name")
        .ok_or_else(|| McpError::header_mismatch("the Mcp-Name header is missing"))?;
    let body_name = params
        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
        .and_then(|v| v.get(name_field).and_then(Value::as_str).map(str::to_owned));
    let header_name = decode_value(header_name)?;
    if body_name.as_deref() != Some(header_name.as_str()) {
        return Err(McpError::header_mismatch(format!(
            "Mcp-Name header {header_name:?} does not match body {name_field} {:?}",
            body_name.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Checks `Mcp-Param-*` headers against the arguments of a tools/call:
/// a header is required exactly when its argument has a (non-null) value,
/// and must equal it after decoding.
pub fn check_params(
    headers: &HeaderMap,
    params: &[crate::mcp::catalog::HeaderParam],
    args: &Value,
) -> Result<(), McpError> {
    for p in params {
        let name = format!("mcp-param-{}", p.header.to_ascii_lowercase());
        let raw = headers.get(name.as_str());
        let value = p
            .path
            .iter()
            .try_fold(args, |v, k| v.get(k))
            .filter(|v| !v.is_null());
        let header = match raw {
            None if value.is_none() => continue,
            None => {
                return Err(McpError::header_mismatch(format!(
                    "the Mcp-Param-{} header is missing but the argument is present",
                    p.header
                )));
            }
            Some(h) => h
                .to_str()
                .map_err(|_| {
                    McpError::header_mismatch(format!(
                        "Mcp-Param-{} has invalid characters",
                        p.header
                    ))
                })?
                .trim(),
        };
        let Some(value) = value else {
            return Err(McpError::header_mismatch(format!(
                "Mcp-Param-{} is sent but the argument is absent",
                p.header
            )));
        };
        let decoded = decode_value(header)?;
        let matches = match value {
            Value::String(s) => *s == decoded,
            Value::Bool(b) => decoded == if *b { "true" } else { "false" },
            Value::Number(n) => decoded
                .parse::<f64>()
                .ok()
                .zip(n.as_f64())
                .is_some_and(|(a, b)| a == b),
            _ => false,
        };
        if !matches {
            return Err(McpError::header_mismatch(format!(
                "Mcp-Param-{} header {decoded:?} does not match the argument {value}",
                p.header
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn accept_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(accepts(&h), (true, true));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        assert_eq!(accepts(&h), (true, true));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream;q=0.9"),
        );
        assert_eq!(accepts(&h), (false, true));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert_eq!(accepts(&h), (false, false));
    }

    #[test]
    fn modern_headers_must_mirror_the_body() {
        let raw = RawValue::from_string(r#"{"name":"héllo"}"#.into()).unwrap();
        let mut h = HeaderMap::new();
        assert!(check_modern(&h, "tools/call", Some(&raw), "2026-07-28").is_err());
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2026-07-28"),
        );
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        h.insert("mcp-name", HeaderValue::from_static("=?base64?aMOpbGxv?="));
        check_modern(&h, "tools/call", Some(&raw), "2026-07-28").unwrap();
        h.insert("mcp-name", HeaderValue::from_static("other"));
        assert_eq!(
            check_modern(&h, "tools/call", Some(&raw), "2026-07-28")
                .unwrap_err()
                .code,
            -32020
        );
        h.insert("mcp-method", HeaderValue::from_static("tools/list"));
        assert!(check_modern(&h, "tools/call", Some(&raw), "2026-07-28").is_err());
        h.remove("mcp-method");
        assert!(check_modern(&h, "tools/call", Some(&raw), "2026-07-28").is_err());
    }

    #[test]
    fn param_headers_mirror_arguments() {
        use crate::mcp::catalog::HeaderParam;
        use serde_json::json;
        let p = vec![
            HeaderParam {
                path: vec!["region".into()],
                header: "Region".into(),
                kind: "string".into(),
            },
            HeaderParam {
                path: vec!["n".into()],
                header: "N".into(),
                kind: "integer".into(),
            },
        ];
        let mut h = HeaderMap::new();
        assert!(
            check_params(&h, &p, &json!({})).is_ok(),
            "no argument, no header"
        );
        assert!(
            check_params(&h, &p, &json!({ "region": "eu" })).is_err(),
            "argument without header"
        );
        h.insert(
            "mcp-param-region",
            HeaderValue::from_static("=?base64?ZXU=?="),
        );
        h.insert("mcp-param-n", HeaderValue::from_static("42.0"));
        check_params(&h, &p, &json!({ "region": "eu", "n": 42 })).unwrap();
        h.insert(
            "mcp-param-region",
            HeaderValue::from_static("=?base64?ZXU?="),
        );
        assert!(
            check_params(&h, &p, &json!({ "region": "eu", "n": 42 })).is_err(),
            "bad padding"
        );
        h.insert("mcp-param-region", HeaderValue::from_static("us"));
        assert!(check_params(&h, &p, &json!({ "region": "eu", "n": 42 })).is_err());
    }
}
