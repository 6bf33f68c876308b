//! Precheck: everything that can be known before anything is written, each item
//! pass / warn / fail with the exact fix. It only reads (catalog queries and `SHOW`), so a
//! failing precheck leaves both servers as they were.
//!
//! The checks of one side stop at the first item that makes the rest meaningless (no
//! connection), so a wrong password gives one clear line, not ten derived ones.

mod checks;
mod fix;
mod objects;
mod report;
mod server;

pub use checks::run;
pub use fix::fix_replica_identity;
pub use report::{Check, Report, Side, Status};
