//! The error type of dacapo-runtime.

use std::path::PathBuf;

use dacapo_core::RunName;

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
    /// The frozen config of an existing run differs from the given one.
    #[error(
        "run `{run}` already exists with a different config ({}); training it with the new \
         config would not resume exactly. Use another run name, or pass --force-config to \
         continue with the new config (differences: {differences})",
        frozen.display()
    )]
    ConfigChanged {
        /// The run.
        run: RunName,
        /// The frozen config file.
        frozen: PathBuf,
        /// The keys that differ.
        differences: String,
    },
    /// A run that has no frozen config under the given root.
    #[error(
        "unknown run `{run}`: no frozen config at {}; check the name and the store root \
         (`dacapo runs ls --root {}`), or train it from its config file",
        path.display(),
        root.display()
    )]
    UnknownRun {
        /// The run.
        run: RunName,
        /// The store root looked in.
        root: PathBuf,
        /// The frozen config looked for.
        path: PathBuf,
    },
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
    /// A device the backend does not have.
    #[error(
        "backend `{backend}` has no device `{device}`; it sees: {seen} (choose one with \
         run.device or --device){hint}"
    )]
    NoSuchDevice {
        /// The backend.
        backend: &'static str,
        /// The device asked for.
        device: String,
        /// The devices the backend sees, listed.
        seen: String,
        /// Extra advice for this backend.
        hint: String,
    },
    /// A backend or device name that does not parse.
    #[error("{0}")]
    UnknownDevice(String),
    /// A network that would not fit in the memory this process may use.
    #[error(
        "{what} need at least {needed} ({parameters} parameters and optimizer state, \
         {activations} activations) but only {available} of memory is available; use a smaller \
         trainer.batch_size, architecture.input_shape, validation.block_shape or \
         architecture.fmaps, or run where more memory is free"
    )]
    TooLarge {
        /// What was estimated, e.g. "training batches of 2 × [132, 132]".
        what: String,
        /// The estimate (GiB).
        needed: String,
        /// Its parameter part (GiB).
        parameters: String,
        /// Its activation part (GiB).
        activations: String,
        /// Memory available (GiB).
        available: String,
    },
    /// The model could not be built or loaded.
    #[error(transparent)]
    Model(#[from] dacapo_models::ModelError),
}
