//! Client listeners: TCP addresses, and Unix sockets (`unix:/path`, DESIGN
//! §10) for sidecars that share a volume rather than a network namespace.
//! A stale socket file left by a crash is replaced at start; a live one is
//! refused; the file is removed on shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::Listen;

/// A bound client listener.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixSocket),
}

/// A bound Unix socket; its file is removed when this is dropped.
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An accepted client connection.
pub enum Stream {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Listener {
    /// Binds `listen`; a Unix socket gets file mode `unix_mode`.
    pub async fn bind(listen: &Listen, unix_mode: u32) -> Result<Listener, String> {
        match listen {
            Listen::Tcp(addr) => TcpListener::bind(addr)
                .await
                .map(Listener::Tcp)
                .map_err(|e| format!("cannot listen on {addr}: {e}")),
            Listen::Unix(path) => bind_unix(path, unix_mode).map(Listener::Unix),
        }
    }

    pub async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s, peer))
            }
            Listener::Unix(u) => u.listener.accept().await.map(|(s, _)| Stream::Unix(s)),
        }
    }

    /// The TCP address bound (port 0 resolved), if this is a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    /// What this listens on, for logs: `http://127.0.0.1:8080` or `unix:/path`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| format!("http://{a}")),
            Listener::Unix(u) => format!("unix:{}", u.path.display()),
        }
    }
}

fn bind_unix(path: &Path, mode: u32) -> Result<UnixSocket, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "cannot listen on unix:{}: the file exists and is not a socket",
                path.display()
            ));
        }
        // A socket file that answers belongs to a running process; one that
        // does not was left behind (a crash) and is replaced.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "cannot listen on unix:{}: another process is listening on it",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot replace the stale socket {}: {e}", path.display()))?;
        tracing::info!("replaced the stale socket file {}", path.display());
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    Ok(UnixSocket {
        listener,
        path: path.to_owned(),
    })
}
