//! JSON-RPC wire pieces: pre-serialized request bodies where only the id
//! changes, and a borrowing classifier for responses (no allocation: the
//! result and error are kept as raw JSON slices of the received bytes).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The protocol version the load generator offers in `initialize`.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

pub fn initialize_body(id: u64) -> Bytes {
    Template::new(
        "initialize",
        Some(&format!(
            r#"{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"erlmcp-loadgen","version":"{}"}}}}"#,
            env!("CARGO_PKG_VERSION")
        )),
    )
    .body(id)
}

pub const INITIALIZED: &[u8] = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// A request body split around its id: `prefix ID suffix`, where the
/// suffix may itself be split around `%UNIQUE%` placeholders (each filled
/// with a number no other request of this process gets: writes that must
/// change something, like `create_entities` of a new name).
pub struct Template {
    prefix: &'static [u8],
    suffix: Vec<Vec<u8>>,
}

/// What `--args` may contain to get a value unique to each request.
pub const UNIQUE: &str = "%UNIQUE%";

static NEXT_UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Template {
    pub fn new(method: &str, params: Option<&str>) -> Self {
        let mut suffix = format!(r#","method":"{method}""#);
        if let Some(p) = params {
            suffix.push_str(r#","params":"#);
            suffix.push_str(p);
        }
        suffix.push('}');
        Self {
            prefix: br#"{"jsonrpc":"2.0","id":"#,
            suffix: suffix.split(UNIQUE).map(|p| p.as_bytes().to_vec()).collect(),
        }
    }

    /// `tools/call` of `tool` with raw JSON `args`, or `tools/list`.
    pub fn for_method(method: &str, tool: &str, args: &str) -> Result<Self, String> {
        match method {
            "tools/call" => {
                serde_json::from_str::<&RawValue>(args)
                    .map_err(|e| format!("--args is not JSON: {e}"))?;
                let name = serde_json::to_string(tool).expect("string");
                Ok(Self::new(
                    "tools/call",
                    Some(&format!(r#"{{"name":{name},"arguments":{args}}}"#)),
                ))
            }
            "tools/list" => Ok(Self::new("tools/list", None)),
            other => Ok(Self::new(other, Some("{}"))),
        }
    }

    pub fn len_hint(&self) -> usize {
        self.prefix.len() + self.suffix.iter().map(|p| p.len() + 20).sum::<usize>() + 20
    }

    /// Appends the body for `id` to `out` (no intermediate allocation).
    pub fn write(&self, id: u64, out: &mut impl BufMut) {
        out.put_slice(self.prefix);
        put_u64(id, out);
        for (i, part) in self.suffix.iter().enumerate() {
            if i > 0 {
                let n = NEXT_UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                put_u64(n, out);
            }
            out.put_slice(part);
        }
    }

    pub fn body(&self, id: u64) -> Bytes {
        let mut b = BytesMut::with_capacity(self.len_hint());
        self.write(id, &mut b);
        b.freeze()
    }
}

pub fn put_u64(mut v: u64, out: &mut impl BufMut) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// What one received JSON-RPC message is.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Class {
    /// A response to request `id`; `ok` is false for a JSON-RPC error or a
    /// tool result with `"isError":true`.
    Response { id: u64, ok: bool },
    /// A notification or server request: not what we wait for.
    Other,
    /// Not JSON-RPC we understand (counted as an error by callers).
    Garbage,
}

pub fn classify(json: &[u8]) -> Class {
    let Ok(m) = serde_json::from_slice::<Msg>(json) else {
        return Class::Garbage;
    };
    match (m.id, m.result, m.error) {
        (Some(id), Some(r), None) => Class::Response {
            id,
            ok: memchr::memmem::find(r.get().as_bytes(), b"\"isError\":true").is_none(),
        },
        (Some(id), _, Some(_)) => Class::Response { id, ok: false },
        _ => Class::Other,
    }
}

/// The `protocolVersion` a server answered `initialize` with.
pub fn negotiated_version(json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    Some(v.get("result")?.get("protocolVersion")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_changes_only_the_id() {
        let t = Template::for_method("tools/call", "test_simple_text", "{}").unwrap();
        assert_eq!(
            &t.body(907)[..],
            br#"{"jsonrpc":"2.0","id":907,"method":"tools/call","params":{"name":"test_simple_text","arguments":{}}}"#
        );
        let l = Template::for_method("tools/list", "", "{}").unwrap();
        assert_eq!(&l.body(0)[..], br#"{"jsonrpc":"2.0","id":0,"method":"tools/list"}"#);
    }

    #[test]
    fn classifies_results_errors_and_notifications() {
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#),
            Class::Response { id: 3, ok: true }
        );
        assert_eq!(
            classify(br#"{"result":{"content":[],"isError":true},"jsonrpc":"2.0","id":4}"#),
            Class::Response { id: 4, ok: false }
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":5,"error":{"code":-32601,"message":"x"}}"#),
            Class::Response { id: 5, ok: false }
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#),
            Class::Other
        );
        assert_eq!(classify(b"nope"), Class::Garbage);
    }
}
