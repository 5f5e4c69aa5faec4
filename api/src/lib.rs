//! The thumbnail service's REST API: the original Python service's contract, served by axum.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod idempotent;
pub mod kube_launcher;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod pacing;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod views;
pub mod webhook_status;

pub use startup::Application;
