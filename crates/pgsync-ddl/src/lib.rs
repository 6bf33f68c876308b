//! DDL sync: schema changes made on the source reach the destination at their exact
//! place in the change stream.
//!
//! ```text
//!  source                                   destination (applier, same transaction)
//!  DDL ─ event trigger ─ pgsync.ddl message ──> Planner::plan ─ SET LOCAL search_path
//!        (capture)       (message)              (plan)          statement(s); caches
//!                                                               of the table refreshed
//! ```
//! * [`capture`]: the event triggers and `pgsync.replicate_ddl(text)` on the source,
//!   installed per task and shared by the tasks of a database;
//! * [`message`]: what the trigger writes (JSON);
//! * [`plan`]: PostgreSQL's own parser (libpg_query) picks the statement out of the query
//!   text, checks it against the task's selection and the unsupported forms, and applies
//!   the task's name mapping.

pub mod capture;
mod error;
pub mod message;
pub mod plan;
mod rewrite;
mod statement;

pub use capture::{CaptureTask, NameHistory};
pub use error::DdlError;
pub use message::{DdlMessage, PREFIX};
pub use plan::{Decision, Plan, Planner, Unsupported};
