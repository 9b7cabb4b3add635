//! The files toolset: configured roots as file:// resources, no escape
//! through `..` or symlinks, subscriptions that fire when a file changes.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("docs");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("readme.md"), "# hello").unwrap();
    std::fs::write(root.join("sub/data.json"), "{\"a\":1}").unwrap();
    std::fs::write(root.join("blob.bin"), [0u8, 159, 146, 150]).unwrap();
    std::fs::write(tmp.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), root.join("link-out")).unwrap();
    std::os::unix::fs::symlink(root.join("readme.md"), root.join("link-in")).unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[toolsets.files]\nenabled = true\nroots = [{{ name = \"docs\", path = \"{}\" }}]\n",
            root.display()
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", cfg.to_str().unwrap()]);
    let root = std::fs::canonicalize(root).unwrap();
    (tmp, root, server)
}

#[test]
fn files_are_listed_and_read_without_escaping_the_root() {
    let (tmp, root, server) = setup();
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");
    let list = s.request("resources/list", json!({}));
    let uris: Vec<String> = list.result()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap().to_owned())
        .filter(|u| u.starts_with("file://"))
        .collect();
    let readme = format!("file://{}/readme.md", root.display());
    assert!(uris.contains(&readme), "{uris:?}");
    assert!(uris.contains(&format!("file://{}/sub/data.json", root.display())));
    assert!(
        !uris.iter().any(|u| u.contains("secret")),
        "a symlink out of the root is not listed: {uris:?}"
    );

    let r = s.request("resources/read", json!({ "uri": readme }));
    assert_eq!(r.result()["contents"][0]["text"], "# hello");
    assert_eq!(r.result()["contents"][0]["mimeType"], "text/markdown");
    let b = s.request(
        "resources/read",
        json!({ "uri": format!("file://{}/blob.bin", root.display()) }),
    );
    assert_eq!(b.result()["contents"][0]["blob"], "AJ+Slg==");

    for escape in [
        format!("file://{}/../secret.txt", root.display()),
        format!("file://{}/link-out", root.display()),
        format!("file://{}", tmp.path().join("secret.txt").display()),
        "file:///etc/passwd".to_owned(),
    ] {
        let r = s.request("resources/read", json!({ "uri": escape }));
        assert_eq!(r.error_code(), -32002, "{escape} must not be readable");
    }
    let inside = s.request(
        "resources/read",
        json!({ "uri": format!("file://{}/link-in", root.display()) }),
    );
    assert_eq!(
        inside.result()["contents"][0]["text"],
        "# hello",
        "a symlink inside the root is fine"
    );
}

#[test]
fn a_subscribed_file_notifies_when_it_changes() {
    let (_tmp, root, server) = setup();
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");
    let uri = format!("file://{}/readme.md", root.display());
    assert_eq!(
        s.request("resources/subscribe", json!({ "uri": uri }))
            .status,
        200
    );
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(raw, "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: {}\r\n\r\n", s.id).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut lines = BufReader::new(raw);
    let mut line = String::new();
    while line.trim() != "" || line.is_empty() {
        line.clear();
        lines.read_line(&mut line).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(root.join("readme.md"), "# changed").unwrap();
    let mut saw = false;
    for _ in 0..50 {
        line.clear();
        if lines.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains("notifications/resources/updated") && line.contains("readme.md") {
            saw = true;
            break;
        }
    }
    assert!(saw, "no resources/updated for the changed file");
}
