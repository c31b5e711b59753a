//! Serving the simulator: the router, a background server with a handle, and a foreground `serve`.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::{middleware, Router};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{admin, api, pipeline, Sim, SimConfig};

/// How long [`SimHandle::shutdown`] waits for in-flight calls before aborting the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The whole simulator as a router: the Sunshine and Zendesk Support paths plus `/__admin`.
pub fn router(sim: Sim) -> Router {
    let api = api::routes().layer(middleware::from_fn_with_state(sim.clone(), pipeline::pipeline));
    Router::new().nest("/__admin", admin::routes()).merge(api).with_state(sim)
}

/// Serves `sim` on `listener` until `shutdown` completes (then finishes in-flight calls).
///
/// # Errors
/// When accepting connections fails.
pub async fn serve(
    listener: TcpListener,
    sim: Sim,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(sim)).with_graceful_shutdown(shutdown).await
}

/// Starts a simulator on `127.0.0.1` with a free port, served by a background task.
///
/// # Errors
/// When the listener cannot be bound.
pub async fn spawn(config: SimConfig) -> io::Result<SimHandle> {
    spawn_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
}

/// Starts a simulator on `addr` (e.g. `127.0.0.1:8089`), served by a background task.
///
/// # Errors
/// When the listener cannot be bound.
pub async fn spawn_on(addr: SocketAddr, config: SimConfig) -> io::Result<SimHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let sim = Sim::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, sim.clone(), async {
        // A dropped sender stops the server as well.
        let _ = stopped.await;
    }));
    tracing::debug!(%addr, "sunshine-sim listening");
    Ok(SimHandle { addr, sim, stop: Some(stop), task: Some(task) })
}

/// A running simulator. Dropping it stops the server (in-flight calls finish in the background).
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    sim: Sim,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: `SUNSHINE_BASE_URL` (and the Zendesk Support base in tests).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulated app, for control and inspection.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Stops accepting calls and waits (up to 5 s) for in-flight ones, then aborts the rest
    /// (e.g. calls held by a [`crate::FaultKind::Hang`]).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
