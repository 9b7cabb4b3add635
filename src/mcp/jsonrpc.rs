//! The JSON-RPC 2.0 envelope: parsing one incoming message and writing
//! outgoing ones.
//!
//! Parsing is zero-copy up to the handler: the envelope is read, `params`,
//! `result` and the id stay raw JSON (`RawValue`) until the method handler
//! deserializes exactly the shape it needs.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::fmt;
use std::sync::Arc;

use super::error::McpError;

/// A request id exactly as the peer wrote it: a JSON string or integer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Accepts the raw JSON text of an id; MCP forbids null and non-integers.
    pub fn from_raw(raw: &RawValue) -> Result<Self, McpError> {
        let text = raw.get().trim();
        let ok = match text.as_bytes().first() {
            Some(b'"') => true,
            Some(b'-' | b'0'..=b'9') => text.parse::<i64>().is_ok(),
            _ => false,
        };
        if ok {
            Ok(RequestId(Arc::from(text)))
        } else {
            Err(McpError::invalid_request(
                "id must be a string or an integer",
            ))
        }
    }

    /// An id from a JSON value, as found in `notifications/cancelled`.
    pub fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::String(_) | Value::Number(_) => {
                let raw = serde_json::value::to_raw_value(value).ok()?;
                Self::from_raw(&raw).ok()
            }
            _ => None,
        }
    }

    /// A server-minted id for a request we send to the client.
    pub fn server(n: u64) -> Self {
        RequestId(Arc::from(format!("\"erlmcp-{n}\"")))
    }

    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The text was validated as a JSON string or integer when it arrived.
        match RawValue::from_string(self.0.to_string()) {
            Ok(raw) => raw.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

/// One parsed incoming message.
#[derive(Debug)]
pub enum Incoming {
    Request {
        id: RequestId,
        method: String,
        params: Option<Box<RawValue>>,
    },
    Notification {
        method: String,
        params: Option<Box<RawValue>>,
    },
    /// A reply to a request this server sent (sampling, elicitation, roots).
    Response {
        id: RequestId,
        outcome: Result<Value, McpError>,
    },
}

impl Incoming {}

/// Why a message could not be accepted, with the id when one was readable.
#[derive(Debug)]
pub struct Rejected {
    pub id: Option<RequestId>,
    pub error: Box<McpError>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// Keeps an explicit `null` as `Some("null")` so "absent" and "null" differ.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct WireError {
    code: i64,
    message: String,
    #[serde(default)]
    data: Option<Value>,
}

/// Parses one JSON-RPC message. Batches (JSON arrays) are refused: MCP
/// removed them in 2025-06-18 and no client we know sends them.
pub fn parse(bytes: &[u8]) -> Result<Incoming, Rejected> {
    if nesting_exceeds(bytes, MAX_DEPTH) {
        return Err(Rejected {
            id: None,
            error: Box::new(McpError::parse_error(format!(
                "JSON nested deeper than {MAX_DEPTH} levels"
            ))),
        });
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') && serde_json::from_slice::<&RawValue>(bytes).is_ok() {
        return Err(Rejected {
            id: None,
            error: Box::new(McpError::invalid_request(
                "JSON-RPC batches are not supported",
            )),
        });
    }
    let env: Envelope = match serde_json::from_slice(bytes) {
        Ok(env) => env,
        Err(e) if e.is_data() => {
            return Err(Rejected {
                id: None,
                error: Box::new(McpError::invalid_request(format!(
                    "not a JSON-RPC message: {e}"
                ))),
            });
        }
        Err(e) => {
            return Err(Rejected {
                id: None,
                error: Box::new(McpError::parse_error(e)),
            });
        }
    };
    classify(env)
}

/// Deepest nesting accepted; the same bound serde_json applies to values,
/// enforced up front because raw params are not parsed until a handler runs.
pub const MAX_DEPTH: usize = 128;

/// True if brackets outside strings nest deeper than `max`.
fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    // Fewer opening brackets in all than `max` cannot nest deeper; counting
    // them is a vectorised pass, the exact scan below is byte by byte.
    let opening = bytes.iter().filter(|&&b| b == b'{' || b == b'[').count();
    if opening <= max {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn classify(env: Envelope<'_>) -> Result<Incoming, Rejected> {
    let id = match env.id {
        None => None,
        Some(raw) => match RequestId::from_raw(raw) {
            Ok(id) => Some(id),
            Err(error) => {
                return Err(Rejected {
                    id: None,
                    error: Box::new(error),
                });
            }
        },
    };
    let reject = |msg: &str| Rejected {
        id: id.clone(),
        error: Box::new(McpError::invalid_request(msg)),
    };
    if env.jsonrpc.map(|v| v.get().trim()) != Some("\"2.0\"") {
        return Err(reject("jsonrpc must be \"2.0\""));
    }
    if let Some(method) = env.method {
        let method: String =
            serde_json::from_str(method.get()).map_err(|_| reject("method must be a string"))?;
        if env.result.is_some() || env.error.is_some() {
            return Err(reject("a request cannot carry result or error"));
        }
        let params = match env.params {
            None => None,
            Some(p) => {
                let t = p.get().trim_start();
                if !(t.starts_with('{') || t.starts_with('[')) {
                    return Err(reject("params must be an object or an array"));
                }
                Some(p.to_owned())
            }
        };
        return Ok(match id {
            Some(id) => Incoming::Request { id, method, params },
            None => Incoming::Notification { method, params },
        });
    }
    let Some(id) = id.clone() else {
        return Err(reject(
            "a message needs a method, or an id with result or error",
        ));
    };
    let outcome = match (env.result, env.error) {
        (Some(r), None) => serde_json::from_str(r.get()).map_err(|_| reject("bad result"))?,
        (None, Some(e)) => {
            let e: WireError = serde_json::from_str(e.get())
                .map_err(|_| reject("error must have an integer code and a message"))?;
            let mut err = McpError::new(e.code, e.message);
            err.data = e.data;
            return Ok(Incoming::Response {
                id,
                outcome: Err(err),
            });
        }
        _ => return Err(reject("a response needs exactly one of result and error")),
    };
    Ok(Incoming::Response {
        id,
        outcome: Ok(outcome),
    })
}

/// Serializes a success response.
pub fn response(id: &RequestId, result: &impl Serialize) -> Vec<u8> {
    #[derive(Serialize)]
    struct Resp<'a, R> {
        jsonrpc: &'static str,
        id: &'a RequestId,
        result: &'a R,
    }
    to_vec(&Resp {
        jsonrpc: "2.0",
        id,
        result,
    })
}

/// Serializes an error response; `id` is `null` when it could not be read.
pub fn error_response(id: Option<&RequestId>, error: &McpError) -> Vec<u8> {
    #[derive(Serialize)]
    struct Resp<'a> {
        jsonrpc: &'static str,
        id: Option<&'a RequestId>,
        error: &'a McpError,
    }
    to_vec(&Resp {
        jsonrpc: "2.0",
        id,
        error,
    })
}

/// Serializes a notification.
pub fn notification(method: &str, params: &Value) -> Vec<u8> {
    to_vec(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
}

/// Serializes a server-to-client request.
pub fn request(id: &RequestId, method: &str, params: &Value) -> Vec<u8> {
    #[derive(Serialize)]
    struct Req<'a> {
        jsonrpc: &'static str,
        id: &'a RequestId,
        method: &'a str,
        params: &'a Value,
    }
    to_vec(&Req {
        jsonrpc: "2.0",
        id,
        method,
        params,
    })
}

fn to_vec(v: &impl Serialize) -> Vec<u8> {
    // Serializing our own types into memory cannot fail: every map key is a
    // string and no Serialize impl here returns an error for valid data.
    serde_json::to_vec(v).unwrap_or_else(|e| {
        format!(
            r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":-32603,"message":"serialization failed: {}"}}}}"#,
            e.to_string().replace('"', "'")
        )
        .into_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(body: &str) -> Rejected {
        parse(body.as_bytes()).expect_err("should be rejected")
    }

    #[test]
    fn request_notification_and_response_are_told_apart() {
        let r = parse(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#).unwrap();
        assert!(matches!(r, Incoming::Request { ref id, .. } if id.to_string() == "7"));
        let n = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(n, Incoming::Notification { .. }));
        let s = parse(br#"{"jsonrpc":"2.0","id":"a","result":{"x":1}}"#).unwrap();
        assert!(matches!(s, Incoming::Response { outcome: Ok(_), .. }));
        let e = parse(br#"{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"no"}}"#).unwrap();
        assert!(matches!(
            e,
            Incoming::Response {
                outcome: Err(_),
                ..
            }
        ));
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        assert_eq!(rejected("{not json").error.code, -32700);
        assert_eq!(rejected("").error.code, -32700);
        let bad_utf8 = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}";
        assert_eq!(parse(bad_utf8).unwrap_err().error.code, -32700);
    }

    #[test]
    fn wrong_shapes_are_invalid_requests() {
        for body in [
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":3}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            r#""just a string""#,
            "42",
        ] {
            assert_eq!(rejected(body).error.code, -32600, "{body}");
        }
    }

    #[test]
    fn invalid_request_keeps_a_readable_id() {
        let r = rejected(r#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#);
        assert_eq!(r.id.unwrap().to_string(), "\"x\"");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"a":{}1{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(parse(deep.as_bytes()).unwrap_err().error.code, -32700);
        let ok = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"s":"{}","a":{}1{}}}}}"#,
            "[".repeat(500),
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(
            parse(ok.as_bytes()).is_ok(),
            "brackets inside strings do not count"
        );
    }

    #[test]
    fn ids_round_trip_verbatim() {
        let Incoming::Request { id, .. } =
            parse(br#"{"jsonrpc":"2.0","id":"r-1","method":"ping"}"#).unwrap()
        else {
            panic!("not a request")
        };
        let out = String::from_utf8(response(&id, &json!({}))).unwrap();
        assert_eq!(out, r#"{"jsonrpc":"2.0","id":"r-1","result":{}}"#);
        let cancelled = RequestId::from_value(&json!("r-1")).unwrap();
        assert_eq!(cancelled, id);
    }
}
