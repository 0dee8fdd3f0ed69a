//! The error type of dacapo-runtime.

/// Everything that can go wrong while opening a run's stores, picking its device or loading
/// its model.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The run config is invalid.
    #[error(transparent)]
    Config(#[from] dacapo_core::CoreError),
    /// A store could not be opened or read.
    #[error(transparent)]
    Store(#[from] dacapo_store::StoreError),
    /// A store URL of the `[stores]` section that cannot be used.
    #[error("stores.{field} = {url:?}: {reason}")]
    StoreUrl {
        /// The config key (`stats` or `weights`).
        field: &'static str,
        /// The URL as written (it holds no credentials, or it is refused for that).
        url: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// A backend that this binary was built without.
    #[error(
        "backend `{backend}` is not compiled into this binary: rebuild with `--features {backend}` \
         (e.g. `cargo run --release -p dacapo-cli --features {backend} -- train ...`){hint}"
    )]
    BackendNotCompiled {
        /// The backend asked for.
        backend: &'static str,
        /// Extra advice for this backend.
        hint: &'static str,
    },
    /// The model could not be built or loaded.
    #[error(transparent)]
    Model(#[from] dacapo_models::ModelError),
}
