//! The syslog receiver: one RFC 5424 message per alert (SIEMs index events, not groups),
//! over UDP (a datagram each, at most 8 KiB), TCP or TLS (octet-counted frames, RFC 6587
//! §3.4.1 / RFC 5425), with a CEF payload — what ArcSight, QRadar and Sentinel ingest — or
//! the alert as JSON (`rfc5424-json`).
//!
//! CEF escaping follows the spec: in the header `\` and `|`; in extension values `\`, `=`,
//! CR and LF (newlines are escaped, never sent raw, which would split a line-framed event).
//! Header fields are cut to the lengths SIEM parsers accept.

use std::fmt::Write as _;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;
use warden_ingest::alert::{Alert, AlertStatus, Severity, Subject};

use super::super::config::SyslogConfig;
use super::super::dispatch::Notification;
use super::content;
use super::{Delivered, Notifier, NotifyError};

/// The largest datagram sent over UDP.
const MAX_DATAGRAM: usize = 8 * 1024;
/// The largest frame over TCP/TLS.
const MAX_FRAME: usize = 64 * 1024;
/// Facility `auth` (4): security and authorisation messages.
const FACILITY: u8 = 4;

/// Where the messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// An open stream (TCP or TLS), kept between notifications.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

pub struct Syslog {
    transport: Transport,
    host: String,
    port: u16,
    json: bool,
    hostname: String,
    tls: Option<tokio_rustls::TlsConnector>,
    stream: Mutex<Option<Stream>>,
}

impl std::fmt::Debug for Syslog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syslog")
            .field("transport", &self.transport)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Syslog {
    pub fn new(config: &SyslogConfig) -> Result<Self, String> {
        let name = &config.name;
        let url = url::Url::parse(&config.address)
            .map_err(|err| format!("receiver {name}: address: {err}"))?;
        let transport = match url.scheme() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => return Err(format!("receiver {name}: unknown transport {other}")),
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("receiver {name}: address has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url
            .port()
            .ok_or_else(|| format!("receiver {name}: address has no port"))?;
        let tls = match transport {
            Transport::Tls => Some(tls_connector(config)?),
            _ => None,
        };
        Ok(Self {
            transport,
            host,
            port,
            json: config.format == "rfc5424-json",
            hostname: local_hostname(),
            tls,
            stream: Mutex::new(None),
        })
    }

    /// Sends the messages over the kept stream, opening one if needed; a failed write
    /// drops the stream (the next attempt reconnects).
    async fn send_stream(&self, frames: &[Vec<u8>]) -> Result<(), NotifyError> {
        let mut kept = self.stream.lock().await;
        if kept.is_none() {
            *kept = Some(self.connect().await?);
        }
        let Some(stream) = kept.as_mut() else {
            return Err(NotifyError::retryable("no connection"));
        };
        let written = async {
            for frame in frames {
                match stream {
                    Stream::Tcp(tcp) => tcp.write_all(frame).await?,
                    Stream::Tls(tls) => tls.write_all(frame).await?,
                }
            }
            match stream {
                Stream::Tcp(tcp) => tcp.flush().await,
                Stream::Tls(tls) => tls.flush().await,
            }
        }
        .await;
        if let Err(err) = written {
            *kept = None;
            return Err(NotifyError::retryable(format!(
                "writing to the syslog server: {err}"
            )));
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Stream, NotifyError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let tcp = tokio::time::timeout(super::HTTP_TIMEOUT, connect)
            .await
            .map_err(|_| NotifyError::retryable("connecting to the syslog server timed out"))?
            .map_err(|err| {
                NotifyError::retryable(format!("connecting to the syslog server: {err}"))
            })?;
        let _ = tcp.set_nodelay(true);
        let Some(connector) = &self.tls else {
            return Ok(Stream::Tcp(tcp));
        };
        let server_name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|err| NotifyError::permanent(format!("syslog server name: {err}")))?;
        let tls = tokio::time::timeout(super::HTTP_TIMEOUT, connector.connect(server_name, tcp))
            .await
            .map_err(|_| NotifyError::retryable("the TLS handshake timed out"))?
            .map_err(|err| NotifyError::retryable(format!("the TLS handshake failed: {err}")))?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    async fn send_datagrams(&self, messages: &[Vec<u8>]) -> Result<(), NotifyError> {
        let bind = if self.host.contains(':') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|err| NotifyError::retryable(format!("opening a UDP socket: {err}")))?;
        socket
            .connect((self.host.as_str(), self.port))
            .await
            .map_err(|err| NotifyError::retryable(format!("resolving the syslog server: {err}")))?;
        for message in messages {
            socket.send(message).await.map_err(|err| {
                NotifyError::retryable(format!("sending to the syslog server: {err}"))
            })?;
        }
        Ok(())
    }
}

fn tls_connector(config: &SyslogConfig) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut extra_roots = Vec::new();
    if let Some(ca_file) = &config.ca_file {
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .map_err(|err| format!("receiver {}: ca_file: {err}", config.name))?
            .collect::<Result<_, _>>()
            .map_err(|err| format!("receiver {}: ca_file: {err}", config.name))?;
        extra_roots.extend(certificates);
    }
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        extra_roots,
        Arc::clone(&provider),
    )
    .map_err(|err| format!("receiver {}: TLS roots: {err}", config.name))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("receiver {}: TLS: {err}", config.name))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

/// This machine's name for the HOSTNAME field (printable ASCII, at most 255), else `-`.
fn local_hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() {
        "-".to_owned()
    } else {
        name
    }
}

/// The syslog severity of an alert publication.
fn syslog_severity(alert: &Alert) -> u8 {
    match (alert.status, alert.severity) {
        (AlertStatus::Resolved, _) => 5,
        (_, Severity::Critical) => 2,
        (_, Severity::Warning) => 4,
        (_, Severity::Info) => 6,
    }
}

/// CEF severity (0–10).
fn cef_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 3,
        Severity::Warning => 6,
        Severity::Critical => 9,
    }
}

/// A CEF header field: `\` and `|` escaped, cut to `max` characters.
pub fn cef_header(value: &str, max: usize) -> String {
    let mut escaped = String::new();
    for c in value.chars().take(max) {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '|' => escaped.push_str("\\|"),
            '\r' | '\n' => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A CEF extension value: `\`, `=`, CR and LF escaped.
pub fn cef_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '=' => escaped.push_str("\\="),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The CEF event of one alert.
pub fn cef(alert: &Alert) -> String {
    let mut line = format!(
        "CEF:0|Warden|Warden|{}|{}|{}|{}|",
        cef_header(env!("CARGO_PKG_VERSION"), 31),
        cef_header(&alert.detector, 1023),
        cef_header(&alert.summary, 512),
        cef_severity(alert.severity)
    );
    let mut extension = |key: &str, value: &str| {
        if !line.ends_with('|') {
            line.push(' ');
        }
        let _ = write!(line, "{key}={}", cef_value(value));
    };
    extension("rt", &alert.ts.timestamp_millis().to_string());
    extension("externalId", &alert.alert_id.0.to_string());
    extension(
        "act",
        match alert.status {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        },
    );
    extension("cat", &alert.detector);
    extension("msg", &alert.summary);
    extension("start", &alert.window_start.timestamp_millis().to_string());
    extension("end", &alert.window_end.timestamp_millis().to_string());
    extension("cs1Label", "subject");
    extension("cs1", &alert.subject.to_string());
    extension("cs2Label", "dedupKey");
    extension("cs2", &alert.dedup_key);
    if let Some(environment) = &alert.environment {
        extension("cs3Label", "environment");
        extension("cs3", environment);
    }
    if let Some(runbook) = &alert.runbook {
        extension("cs4Label", "runbook");
        extension("cs4", runbook);
    }
    extension("cfp1Label", "observed");
    extension("cfp1", &alert.observed.to_string());
    extension("cfp2Label", "threshold");
    extension("cfp2", &alert.threshold.to_string());
    match &alert.subject {
        Subject::Ip(ip) => extension("src", ip),
        Subject::Client(client) => extension("suser", client),
        Subject::Target(target) => extension("dhost", target),
        _ => {}
    }
    if let Some(samples) = content::sample_requests(alert) {
        extension("cs5Label", "sampleRequestIds");
        extension("cs5", &samples);
    }
    line
}

impl Syslog {
    /// The RFC 5424 message of one alert (NILVALUE structured data; CEF or JSON as MSG).
    fn message(&self, alert: &Alert) -> String {
        let body = if self.json {
            serde_json::to_string(alert).unwrap_or_default()
        } else {
            cef(alert)
        };
        format!(
            "<{}>1 {} {} warden {} alert - {body}",
            FACILITY * 8 + syslog_severity(alert),
            alert
                .ts
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.hostname,
            std::process::id(),
        )
    }
}

/// Cuts `message` to at most `max` bytes, at a character boundary.
fn cut(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

impl Notifier for Syslog {
    fn notify<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, NotifyError>> {
        Box::pin(async move {
            let messages = notification.alerts.iter().map(|alert| self.message(alert));
            match self.transport {
                Transport::Udp => {
                    let datagrams: Vec<Vec<u8>> = messages
                        .map(|message| cut(message, MAX_DATAGRAM).into_bytes())
                        .collect();
                    self.send_datagrams(&datagrams).await?;
                }
                Transport::Tcp | Transport::Tls => {
                    let frames: Vec<Vec<u8>> = messages
                        .map(|message| {
                            let message = cut(message, MAX_FRAME);
                            format!("{} {message}", message.len()).into_bytes()
                        })
                        .collect();
                    self.send_stream(&frames).await?;
                }
            }
            Ok(Delivered::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::labels::tests::alert;
    use super::*;

    #[test]
    fn cef_escapes_its_header_and_extension_per_the_spec() {
        assert_eq!(cef_header(r"a|b\c", 63), r"a\|b\\c");
        assert_eq!(cef_value("a=b\\c\nd\re"), r"a\=b\\c\nd\re");
        let mut burn = alert("cost_burn", Severity::Critical, "ip:203.0.113.7");
        burn.summary = "burn | 10x = bad\nreally".into();
        let line = cef(&burn);
        assert!(line.starts_with("CEF:0|Warden|Warden|"), "{line}");
        assert!(
            line.contains("|cost_burn|burn \\| 10x = bad really|9|"),
            "{line}"
        );
        assert!(line.contains(r"msg=burn | 10x \= bad\nreally"), "{line}");
        assert!(line.contains("src=203.0.113.7"), "{line}");
        assert!(!line.contains('\n'));
    }
}
