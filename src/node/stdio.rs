//! `erlmcp stdio`: one client on stdin/stdout, as a small supervision tree:
//! the stdio loop (its end ends the tree), the store writer's keeper and
//! the file watchers.

use futures::FutureExt;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::NodeError;
use crate::config::Config;
use crate::supervisor::{ChildSpec, Intensity, Restart, Strategy, Supervisor};
use crate::transport::stdio;

/// Serves until stdin closes or `shutdown` resolves.
pub(crate) async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let (store, server) = super::build(config).await?;
    let (files_tx, _) = tokio::sync::watch::channel(config.toolsets.files.clone());
    let max = config.http.max_body_bytes;
    let (srv, st, hub) = (server.clone(), store.clone(), server.hub.clone());
    let tree = Supervisor::new(
        "stdio",
        Strategy::OneForOne,
        Intensity {
            max_restarts: config.supervisor.max_restarts,
            within: Duration::from_secs(config.supervisor.within_secs),
        },
    )
    .child(ChildSpec::new("store", Restart::Permanent, move |stop| {
        let st = st.clone();
        async move {
            st.restart_writer()?;
            stop.cancelled().await;
            Ok(())
        }
        .boxed()
    }))
    .child(ChildSpec::new(
        "file-watch",
        Restart::Permanent,
        move |stop| {
            crate::toolsets::files::watch_roots(files_tx.subscribe(), hub.clone(), stop).boxed()
        },
    ))
    .child(
        // stdin cannot be read twice: the loop is not restarted.
        ChildSpec::new("stdio", Restart::Temporary, move |stop| {
            let srv = srv.clone();
            async move {
                let (stdin, stdout) = (tokio::io::stdin(), tokio::io::stdout());
                tokio::select! {
                    r = stdio::serve(srv, stdin, stdout, max, Duration::from_secs(5)) => Ok(r?),
                    _ = stop.cancelled() => Ok(()),
                }
            }
            .boxed()
        })
        .ends_tree(),
    );
    let stop = CancellationToken::new();
    tokio::select! {
        r = tree.run(stop.clone()) => r?,
        _ = shutdown => stop.cancel(),
    }
    store.checkpoint().await?;
    Ok(())
}
