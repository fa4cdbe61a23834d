//! The email receiver: SMTP through `lettre`, with STARTTLS when the server offers it
//! (`smtp://`; `?starttls=required` insists) or TLS from the start (`smtps://`), and
//! authentication when configured (the password an env reference). Each message has a
//! plain-text and an HTML part, a subject people can filter on (`[warden] CRITICAL FIRING
//! cost_burn client:app (2 alerts)`), and a `Message-ID` derived from the notification, so
//! a redelivered copy is recognisable as one.
//!
//! SMTP's own classes decide retries: a 4xx answer or a lost connection is tried again, a
//! 5xx answer (unknown mailbox, refused sender) is not.

use std::fmt::Write as _;
use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::super::config::{EmailConfig, Secret};
use super::super::dispatch::Notification;
use super::content;
use super::{Delivered, Notifier, NotifyError};

#[derive(Debug)]
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    /// The transport for `config` (reads `ca_file` if it names one).
    pub fn new(config: &EmailConfig, password: Option<&Secret>) -> Result<Self, String> {
        let name = &config.name;
        let url = url::Url::parse(&config.smtp)
            .map_err(|err| format!("receiver {name}: smtp {:?}: {err}", config.smtp))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("receiver {name}: smtp has no host"))?
            .to_owned();
        let implicit_tls = url.scheme() == "smtps";
        let port = url.port().unwrap_or(if implicit_tls { 465 } else { 587 });
        let mut parameters = TlsParameters::builder(host.clone());
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file)
                .map_err(|err| format!("receiver {name}: ca_file {}: {err}", ca_file.display()))?;
            let certificate = Certificate::from_pem(&pem)
                .map_err(|err| format!("receiver {name}: ca_file {}: {err}", ca_file.display()))?;
            parameters = parameters.add_root_certificate(certificate);
        }
        let parameters = parameters
            .build_rustls()
            .map_err(|err| format!("receiver {name}: TLS: {err}"))?;
        let starttls_required = url
            .query_pairs()
            .any(|(key, value)| key == "starttls" && value == "required");
        let tls = match (implicit_tls, starttls_required) {
            (true, _) => Tls::Wrapper(parameters),
            (false, true) => Tls::Required(parameters),
            (false, false) => Tls::Opportunistic(parameters),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(10)));
        if let (Some(username), Some(password)) = (&config.username, password) {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose().to_owned(),
            ));
        }
        let mailbox = |address: &str| {
            address
                .parse::<Mailbox>()
                .map_err(|err| format!("receiver {name}: {address:?}: {err}"))
        };
        Ok(Self {
            transport: builder.build(),
            from: mailbox(&config.from)?,
            to: config
                .to
                .iter()
                .map(|to| mailbox(to))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// `[warden] CRITICAL FIRING cost_burn client:app (2 alerts)`.
pub fn subject(notification: &Notification) -> String {
    let status = content::alert_status_of(notification);
    let labels: Vec<&str> = notification
        .group_labels
        .iter()
        .map(|(_, value)| value.as_str())
        .filter(|value| !value.is_empty())
        .collect();
    let count = notification.alerts.len();
    format!(
        "[warden] {} {status} {} ({count} alert{})",
        content::severity(notification).as_str().to_uppercase(),
        if labels.is_empty() {
            "all alerts".to_owned()
        } else {
            labels.join(" ")
        },
        if count == 1 { "" } else { "s" }
    )
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The HTML part: one table per alert.
pub fn html(notification: &Notification) -> String {
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><h2>{}</h2>",
        escape(&content::title(notification))
    );
    for alert in &notification.alerts {
        let _ = write!(
            html,
            "<h3>{} {} <code>{}</code></h3><p>{}</p><table cellpadding=\"4\">",
            content::alert_status(alert),
            escape(alert.severity.as_str()),
            escape(&alert.subject.to_string()),
            escape(&alert.summary)
        );
        let mut row = |name: &str, value: &str| {
            let _ = write!(
                html,
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape(name),
                escape(value)
            );
        };
        row("Detector", &alert.detector);
        row("Observed", &content::measurement(alert));
        row("Window", &content::window(alert));
        if let Some(environment) = &alert.environment {
            row("Environment", environment);
        }
        if let Some(sources) = content::top_sources(alert) {
            row("Top sources", &sources);
        }
        if let Some(samples) = content::sample_requests(alert) {
            row("Sample requests", &samples);
        }
        html.push_str("</table>");
        if let Some(runbook) = &alert.runbook {
            let steps = content::runbook_steps(runbook);
            if !steps.is_empty() {
                let _ = write!(html, "<p>Runbook <b>{}</b>:</p><ol>", escape(runbook));
                for step in steps {
                    let _ = write!(html, "<li>{}</li>", escape(step));
                }
                html.push_str("</ol>");
            }
        }
        let _ = write!(
            html,
            "<p>Investigate:</p><pre>{}</pre>",
            escape(&content::investigate(alert))
        );
    }
    html.push_str("</body></html>");
    html
}

impl Notifier for Email {
    fn notify<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, NotifyError>> {
        Box::pin(async move {
            let mut builder = Message::builder()
                .from(self.from.clone())
                .subject(subject(notification))
                .message_id(Some(format!(
                    "<{}@warden.notification>",
                    notification.idempotency_key()
                )));
            for to in &self.to {
                builder = builder.to(to.clone());
            }
            let message = builder
                .multipart(MultiPart::alternative_plain_html(
                    content::plain_text(notification),
                    html(notification),
                ))
                .map_err(|err| NotifyError::permanent(format!("building the message: {err}")))?;
            match self.transport.send(message).await {
                Ok(response) => Ok(Delivered {
                    status: Some(u16::from(response.code())),
                }),
                Err(err) if err.is_permanent() => Err(NotifyError {
                    status: err.status().map(u16::from),
                    ..NotifyError::permanent(format!("the SMTP server refused: {err}"))
                }),
                Err(err) => Err(NotifyError {
                    status: err.status().map(u16::from),
                    ..NotifyError::retryable(format!("SMTP: {err}"))
                }),
            }
        })
    }
}
