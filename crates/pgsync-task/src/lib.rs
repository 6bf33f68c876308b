//! Task orchestration: the task spec, the precheck, and (built on the other crates) the
//! lifecycle create -> precheck -> slot and publication -> schema -> full -> incremental.

mod endpoint;
mod error;
pub mod forward;
mod names;
pub mod ops;
pub mod precheck;
pub mod release;
mod sequences;
mod spec;
pub mod state;
pub mod status;
pub mod validate;

pub use endpoint::{DsnError, Endpoint};
pub use error::TaskError;
pub use names::{Direction, STATE_SCHEMA, TaskNames};
pub use spec::{
    AlertsSpec, ExistingTables, HeartbeatSpec, MAX_NAME_LEN, RetrySpec, SpecError, SyncSpec,
    TaskSpec, ThrottleSpec,
};
