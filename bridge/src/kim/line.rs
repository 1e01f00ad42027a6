//! Line-based reading and writing for the SMTP and POP3 clients, with hard limits so a
//! hostile or broken server can only make a call fail.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// A byte stream (plain TCP or TLS) the protocol clients run over.
pub(crate) trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// A buffered connection that reads CRLF (or LF) terminated lines.
pub(crate) struct LineConnection<S> {
    inner: BufReader<S>,
    io_timeout: Duration,
}

impl<S: IoStream> LineConnection<S> {
    pub(crate) fn new(stream: S, io_timeout: Duration) -> Self {
        Self {
            inner: BufReader::new(stream),
            io_timeout,
        }
    }

    /// Reads one line without its line end. Fails on end of stream, on timeout and when
    /// the line is longer than `max_len` bytes.
    pub(crate) async fn read_line(&mut self, max_len: usize) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let buf = tokio::time::timeout(self.io_timeout, self.inner.fill_buf())
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&buf[..end]);
                self.inner.consume(end + 1);
                break;
            }
            let n = buf.len();
            line.extend_from_slice(buf);
            self.inner.consume(n);
            if line.len() > max_len + 1 {
                return Err(too_long(max_len));
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > max_len {
            return Err(too_long(max_len));
        }
        Ok(line)
    }

    /// Writes and flushes `data`.
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let write = async {
            let stream = self.inner.get_mut();
            stream.write_all(data).await?;
            stream.flush().await
        };
        tokio::time::timeout(self.io_timeout, write)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }

    /// The underlying stream, for the TLS upgrade. Fails if the server sent anything after
    /// its go-ahead (bytes injected before the handshake, CVE-2011-0411 style).
    pub(crate) fn into_stream(self) -> io::Result<S> {
        if !self.inner.buffer().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "server sent data before the TLS handshake",
            ));
        }
        Ok(self.inner.into_inner())
    }

    /// Shuts the stream down (TLS close_notify), ignoring errors: used after QUIT.
    pub(crate) async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(self.io_timeout, self.inner.get_mut().shutdown()).await;
    }
}

fn too_long(max_len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("server sent a line longer than {max_len} bytes"),
    )
}
