//! Warden's end-to-end tests, in one test binary: each module drives the real `warden` binary
//! (and real brokers, clients and readers) through one capability. One binary rather than one per
//! file because each links the whole workspace (DataFusion, rdkafka, arrow): a dozen of them
//! took ~6 GB of disk and a dozen slow links. nextest still runs every test in its own process.

mod support;

mod archive_alerts_actions;
mod archive_integrity;
mod archive_retention;
mod archive_s3;
mod archive_signatures;
mod control_plane;
mod crash_durability;
mod dead_letters;
mod deploy_files;
mod detect_restart;
mod detect_spike;
mod detect_two_workers;
mod durability;
mod end_to_end;
mod graceful_shutdown;
mod guardrails;
mod hostile_upstream;
mod respond;
mod runbooks;
mod sdk_clients;
mod simulate;
