//! HTTP routes, one module per area, each with its own `router()`.
pub mod batches;
pub mod deliveries;
pub mod events;
pub mod files;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod page;
pub mod thumbnails;
