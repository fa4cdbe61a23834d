//! How alerts are printed for people by `warden simulate` and `warden detect --replay`.

use warden_ingest::alert::{Alert, AlertStatus};

/// One alert as aligned columns: status, severity, detector, subject, summary.
pub fn alert_line(alert: &Alert) -> String {
    let status = match alert.status {
        AlertStatus::Firing => "FIRING",
        AlertStatus::Resolved => "resolved",
    };
    format!(
        "{status:<8} {:<8} {:<22} {:<28} {}",
        alert.severity.as_str(),
        alert.detector,
        alert.subject.to_string(),
        alert.summary
    )
}
