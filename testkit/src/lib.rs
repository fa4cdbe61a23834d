//! `warden-testkit`: the real peers Warden's tests run against.
//!
//! - [`tgi`]: a TGI emulator (also the `tgi-emulator` binary, for trying Warden by hand).
//! - [`tansu`]: starts a real Kafka-protocol broker (tansu) on a free loopback port.
//! - [`hf_endpoints`]: the Hugging Face Inference Endpoints management API, emulated.
//! - [`load`]: realistic call trails for load (benchmarks).
//! - [`trail`]: reading what Warden produced (audit events, SSE bodies).
//!
//! Nothing here is part of the `warden` binary.

pub mod hf_endpoints;
pub mod load;
pub mod mmdb;
pub mod tansu;
pub mod tgi;
pub mod trail;

pub use hf_endpoints::{EmulatedEndpoint, HfEndpointsEmulator};
pub use tansu::TansuBroker;
pub use tgi::{EmulatorOptions, RecordedRequest, TgiEmulator};

/// A TCP port that was free a moment ago on loopback.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
