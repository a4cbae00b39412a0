//! The one place errors become gRPC status codes.

use tonic::{Code, Status};

use crate::app::AppError;
use crate::forecast::ForecastError;
use crate::ingest::prometheus::RemoteWriteError;
use crate::registry::RegistryError;
use crate::store::StoreError;

/// Maps a use-case error to the status a client sees. Client mistakes are `InvalidArgument`, missing
/// things `NotFound`, too little history `FailedPrecondition` (the message says needed and got);
/// pushed samples the fleet's TSDB could not take `Unavailable` (unreachable, 5xx) or
/// `FailedPrecondition` (it refused them, e.g. too old for its head block), nothing stored;
/// failures of the server itself are `Internal` and logged.
pub(crate) fn status(error: &AppError) -> Status {
    let code = match error {
        AppError::Domain(_)
        | AppError::Ingest(_)
        | AppError::Events(_)
        | AppError::Plan(_)
        | AppError::InvalidRequest { .. } => Code::InvalidArgument,
        AppError::Store(store) => match store {
            StoreError::NonFiniteValue { .. }
            | StoreError::TimestampOutOfRange { .. }
            | StoreError::LabelLimit { .. }
            | StoreError::WindowTooLarge { .. } => Code::InvalidArgument,
            StoreError::UnknownSeries { .. } => Code::NotFound,
            StoreError::TooManySeries { .. } => Code::ResourceExhausted,
            StoreError::Poisoned { .. } | StoreError::ChangedWhileReading { .. } => {
                Code::Unavailable
            }
            StoreError::ReadOnly { .. }
            | StoreError::Io { .. }
            | StoreError::CorruptLog { .. }
            | StoreError::Checkpoint { .. } => Code::Internal,
        },
        AppError::Forecast(forecast) => match forecast {
            ForecastError::NotEnoughHistory { .. } => Code::FailedPrecondition,
            ForecastError::InvalidParameter { .. } | ForecastError::Domain(_) => {
                Code::InvalidArgument
            }
            _ => Code::Internal,
        },
        AppError::NoStep { .. } => Code::FailedPrecondition,
        AppError::NotFound { .. } => Code::NotFound,
        AppError::TsdbWrite(write) => match write {
            RemoteWriteError::Refused { .. } => Code::FailedPrecondition,
            RemoteWriteError::Unavailable { .. } | RemoteWriteError::Client(_) => Code::Unavailable,
        },
        AppError::PlanPending { .. }
        | AppError::ShuttingDown
        | AppError::Refitting { .. }
        | AppError::Fleet { .. }
        | AppError::Registry(RegistryError::ObjectStore { .. })
        // Transient: the replica leaves read-only once etcd answers; another may take it now.
        | AppError::FleetReadOnly { .. } => Code::Unavailable,
        AppError::Simulate(_)
        | AppError::Registry(_)
        | AppError::TemporaryStore { .. }
        | AppError::Worker { .. }
        | AppError::Input { .. }
        | AppError::Output { .. } => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(%error, "request failed inside the server");
    }
    Status::new(code, error.to_string())
}

/// A workload that exists but has no plan, because making its plan failed with `error`: the
/// failure's own code, but `FailedPrecondition` where it would read as a missing or malformed
/// request (`NotFound`, `InvalidArgument`: an unknown series, a failing source), since those codes
/// name the workload asked for, which exists.
pub(crate) fn plan_failure_status(workload: &str, error: &AppError) -> Status {
    let failure = status(error);
    let code = match failure.code() {
        Code::NotFound | Code::InvalidArgument => Code::FailedPrecondition,
        code => code,
    };
    Status::new(
        code,
        format!("workload {workload:?} has no plan: {}", failure.message()),
    )
}

impl From<AppError> for Status {
    fn from(error: AppError) -> Self {
        status(&error)
    }
}

/// The code a client sees for `code` as tonic produced it: tonic reports a message over the size
/// limit (a request too large to read, a response too large to send) as `OutOfRange`, and the API
/// promises `ResourceExhausted`. No handler of prescale answers `OutOfRange` itself.
pub(crate) fn promised_code(code: Code) -> Code {
    match code {
        Code::OutOfRange => Code::ResourceExhausted,
        code => code,
    }
}

/// A request field is malformed.
pub(crate) fn invalid(reason: impl Into<String>) -> Status {
    Status::invalid_argument(reason)
}

impl From<super::scaler_handlers::ScalerError> for Status {
    /// A trigger that names no workload or sets a malformed value is the ScaledObject's mistake
    /// (`InvalidArgument`); a forecast-only workload is not to be scaled (`FailedPrecondition`);
    /// a plan that has gone stale is the server's passing trouble (`Unavailable`), logged.
    fn from(error: super::scaler_handlers::ScalerError) -> Self {
        use super::scaler_handlers::ScalerError;
        let code = match &error {
            ScalerError::MissingWorkload { .. } | ScalerError::InvalidMetadata { .. } => {
                Code::InvalidArgument
            }
            ScalerError::ForecastOnly { .. } => Code::FailedPrecondition,
            ScalerError::PlanDoesNotCoverNow { .. } => {
                tracing::warn!(%error, "the scaler has no plan for now");
                Code::Unavailable
            }
        };
        Status::new(code, error.to_string())
    }
}
