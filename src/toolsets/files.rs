//! The `files` toolset: files under configured directories as `file://`
//! resources, with MIME types, a URI template per root, and subscriptions
//! that fire when a file changes. A path never escapes its root: `..` and
//! symlinks are resolved first and the result must still lie inside.

use async_trait::async_trait;
use base64::Engine;
use notify::{EventKind, RecursiveMode, Watcher};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::FilesConfig;
use crate::mcp::context::RequestContext;
use crate::mcp::error::McpError;
use crate::mcp::notify::{Change, Hub};
use crate::mcp::toolset::{Page, ResourceDef, ResourceTemplateDef, ToolError, Toolset};

/// Characters escaped in file URIs (path separators stay).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// How many files one listing walks at most, so a huge tree cannot stall it.
const MAX_LISTED: usize = 100_000;

struct Root {
    name: String,
    /// Canonical (symlinks resolved) absolute path.
    path: PathBuf,
}

pub struct Files {
    roots: Vec<Root>,
    max_file_bytes: u64,
}

/// Resolves configured roots; a missing root or a non-directory is an error.
fn resolve_roots(cfg: &FilesConfig) -> Result<Vec<Root>, String> {
    cfg.roots
        .iter()
        .map(|r| {
            let path = std::fs::canonicalize(&r.path)
                .map_err(|e| format!("file root {:?} ({}): {e}", r.name, r.path.display()))?;
            if !path.is_dir() {
                return Err(format!(
                    "file root {:?} ({}) is not a directory",
                    r.name,
                    path.display()
                ));
            }
            Ok(Root {
                name: r.name.clone(),
                path,
            })
        })
        .collect()
}

impl Files {
    pub fn new(cfg: &FilesConfig) -> Result<Self, String> {
        Ok(Files {
            roots: resolve_roots(cfg)?,
            max_file_bytes: cfg.max_file_bytes,
        })
    }

    /// The canonical path behind `uri` if it is a file inside a root.
    fn resolve(&self, uri: &str) -> Option<PathBuf> {
        let raw = uri.strip_prefix("file://")?;
        let decoded = percent_decode_str(raw).decode_utf8().ok()?;
        let real = std::fs::canonicalize(Path::new(decoded.as_ref())).ok()?;
        self.roots
            .iter()
            .any(|r| real.starts_with(&r.path))
            .then_some(real)
    }

    fn all_files(&self) -> Vec<(String, PathBuf, u64)> {
        let mut out = Vec::new();
        for root in &self.roots {
            walk(&root.path, &root.path, &root.name, &mut out);
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }
}

/// Watches every configured root and reports changes to the hub until
/// `stop`; a supervised child (restarted, with fresh watchers, if it fails).
/// `config` carries the current files configuration; a change re-creates
/// the watchers.
pub async fn watch_roots(
    mut config: tokio::sync::watch::Receiver<FilesConfig>,
    hub: Arc<Hub>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), crate::supervisor::ChildError> {
    loop {
        let cfg = config.borrow_and_update().clone();
        let watchers = if cfg.enabled {
            resolve_roots(&cfg)?
                .iter()
                .map(|r| watch(&r.path, hub.clone()))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            changed = config.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
        drop(watchers);
    }
}

fn watch(path: &Path, hub: Arc<Hub>) -> Result<notify::RecommendedWatcher, String> {
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        let structural = matches!(event.kind, EventKind::Create(_) | EventKind::Remove(_))
            || matches!(
                event.kind,
                EventKind::Modify(notify::event::ModifyKind::Name(_))
            );
        for p in &event.paths {
            hub.publish(Change::ResourceUpdated(file_uri(p)));
        }
        if structural {
            hub.publish(Change::ResourcesListChanged);
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", path.display()))?;
    w.watch(path, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", path.display()))?;
    Ok(w)
}

/// Collects regular files under `dir` that resolve inside `root`.
fn walk(root: &Path, dir: &Path, root_name: &str, out: &mut Vec<(String, PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if out.len() >= MAX_LISTED {
            return;
        }
        let Ok(real) = std::fs::canonicalize(entry.path()) else {
            continue;
        };
        if !real.starts_with(root) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&real) else {
            continue;
        };
        if meta.is_dir() {
            // A symlink to a directory inside the root would be walked twice.
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &real, root_name, out);
            }
        } else if meta.is_file() {
            out.push((root_name.to_owned(), real, meta.len()));
        }
    }
}

pub fn file_uri(path: &Path) -> String {
    format!(
        "file://{}",
        utf8_percent_encode(&path.to_string_lossy(), PATH)
    )
}

fn mime_of(path: &Path) -> String {
    mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_owned()
}

fn is_textual(mime: &str) -> bool {
    mime.starts_with("text/")
        || matches!(
            mime,
            "application/json"
                | "application/xml"
                | "application/toml"
                | "application/javascript"
                | "application/x-sh"
                | "application/yaml"
        )
}

#[async_trait]
impl Toolset for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    async fn list_resources(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ResourceDef>, McpError> {
        let start: usize = match cursor {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| McpError::invalid_params("invalid cursor"))?,
        };
        let files = self.all_files();
        let end = (start + limit).min(files.len());
        let items = files
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|(root, path, size)| ResourceDef {
                uri: file_uri(path),
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                title: None,
                description: Some(format!("{} in root {root}", path.display())),
                mime_type: Some(mime_of(path)),
                size: Some(*size),
            })
            .collect();
        let next = (end < files.len()).then(|| end.to_string());
        Ok(Page { items, next })
    }

    fn resource_templates(&self) -> Vec<ResourceTemplateDef> {
        self.roots
            .iter()
            .map(|r| ResourceTemplateDef {
                uri_template: format!("{}/{{+path}}", file_uri(&r.path)),
                name: format!("files-{}", r.name),
                title: Some(format!("Files in {}", r.name)),
                description: Some(format!("Any file under {}", r.path.display())),
                mime_type: None,
            })
            .collect()
    }

    fn owns_uri(&self, uri: &str) -> bool {
        uri.starts_with("file://")
    }

    async fn read_resource(
        &self,
        uri: &str,
        _ctx: &RequestContext,
    ) -> Result<Option<Vec<Value>>, ToolError> {
        let Some(path) = self.resolve(uri) else {
            return Ok(None);
        };
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(ToolError::failed)?;
        if !meta.is_file() {
            return Ok(None);
        }
        if meta.len() > self.max_file_bytes {
            return Err(ToolError::Failed(format!(
                "{} is {} bytes, over the limit of {}",
                path.display(),
                meta.len(),
                self.max_file_bytes
            )));
        }
        let bytes = tokio::fs::read(&path).await.map_err(ToolError::failed)?;
        let mime = mime_of(&path);
        let content = match (is_textual(&mime), String::from_utf8(bytes)) {
            (true, Ok(text)) => json!({ "uri": uri, "mimeType": mime, "text": text }),
            (_, Ok(text)) => json!({
                "uri": uri, "mimeType": mime,
                "blob": base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
            }),
            (_, Err(e)) => json!({
                "uri": uri, "mimeType": mime,
                "blob": base64::engine::general_purpose::STANDARD.encode(e.into_bytes())
            }),
        };
        Ok(Some(vec![content]))
    }
}
