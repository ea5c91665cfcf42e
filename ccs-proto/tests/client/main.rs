//! The client's tests, one binary: a `Client` against the crate's real server role over the
//! in-memory network of `ccs_proto::testing::net`, scenario by scenario, and the seeded
//! simulation (`simulation`, run by `simulator`).
#![allow(missing_docs, unreachable_pub)]

mod fixtures;
mod simulator;

mod basic;
mod close;
mod expiry;
mod priority;
mod reconnect;
mod resend;
mod retry;
mod simulation;
mod upstream;
