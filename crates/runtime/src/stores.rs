//! Opening a run's stores from its config: `[stores] stats` and `weights` URLs, or the local
//! stores under `stores.root`.

use std::path::PathBuf;
use std::sync::Arc;

use dacapo_core::config::{RunConfig, StoresConfig};
use dacapo_store::{FileStatsStore, LocalWeightsStore, StatsStore, StoreUrl, WeightsStore};
use dacapo_store_object::ObjectWeightsStore;
use dacapo_store_postgres::PostgresStatsStore;

use crate::error::RuntimeError;

/// The stores of a run.
#[derive(Clone)]
pub struct Stores {
    /// Root directory of the run directories (frozen config, lock).
    pub root: PathBuf,
    /// Checkpoints and best records.
    pub weights: Arc<dyn WeightsStore>,
    /// Training stats and validation scores.
    pub stats: Arc<dyn StatsStore>,
}

impl Stores {
    /// The stores `config.stores` names: `stats = "postgres://..."` and `weights =
    /// "s3://..."` (or `file://`, `memory://`) when set, the local stores under `root`
    /// otherwise. The frozen config and the run lock always live under `root`.
    pub fn open(config: &RunConfig) -> Result<Self, RuntimeError> {
        Ok(Self {
            root: config.stores.root.clone(),
            weights: Self::open_weights(config)?,
            stats: open_stats(&config.stores)?,
        })
    }

    /// The weights store `config.stores.weights` names, or the local one under `root`.
    pub fn open_weights(config: &RunConfig) -> Result<Arc<dyn WeightsStore>, RuntimeError> {
        let stores = &config.stores;
        let Some(text) = &stores.weights else {
            return Ok(Arc::new(LocalWeightsStore::new(stores.root.clone())));
        };
        let url = parse("weights", text)?;
        if url.is_stats() {
            return Err(RuntimeError::StoreUrl {
                field: "weights",
                url: text.clone(),
                reason: "a PostgreSQL database keeps stats only; name an object store \
                         (s3://bucket/prefix, file:///path) or remove the key to keep \
                         checkpoints under stores.root"
                    .into(),
            });
        }
        Ok(Arc::new(ObjectWeightsStore::open(&url)?))
    }

    /// The local stores under `config.stores.root`.
    pub fn local(config: &RunConfig) -> Self {
        let root = config.stores.root.clone();
        Self {
            weights: Arc::new(LocalWeightsStore::new(root.clone())),
            stats: Arc::new(FileStatsStore::new(root.clone())),
            root,
        }
    }
}

/// The stats store `stores.stats` names, or the file store under `root`.
fn open_stats(stores: &StoresConfig) -> Result<Arc<dyn StatsStore>, RuntimeError> {
    let Some(text) = &stores.stats else {
        return Ok(Arc::new(FileStatsStore::new(stores.root.clone())));
    };
    match parse("stats", text)? {
        StoreUrl::Postgres(url) => Ok(Arc::new(PostgresStatsStore::connect(url.as_str())?)),
        _ => Err(RuntimeError::StoreUrl {
            field: "stats",
            url: text.clone(),
            reason: "not a postgres:// URL: stats go to PostgreSQL, or to files under \
                     stores.root when the key is removed"
                .into(),
        }),
    }
}

/// `text` parsed as a store URL; errors name the config key.
fn parse(field: &'static str, text: &str) -> Result<StoreUrl, RuntimeError> {
    StoreUrl::parse(text).map_err(|e| RuntimeError::StoreUrl {
        field,
        url: redact(text),
        reason: e.to_string(),
    })
}

/// `text` without anything between `://` and `@` (user and password).
fn redact(text: &str) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &text[..s], &text[at..]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dacapo_core::testing::TinyRun;
    use std::path::Path;

    fn config(stats: Option<&str>, weights: Option<&str>) -> RunConfig {
        TinyRun::new("r", Path::new("/nonexistent"))
            .with(|c| {
                c.stores.stats = stats.map(str::to_owned);
                c.stores.weights = weights.map(str::to_owned);
            })
            .build()
    }

    #[test]
    fn a_url_for_the_wrong_store_names_the_key() {
        let err = Stores::open(&config(Some("s3://bucket/p"), None))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("stores.stats = \"s3://bucket/p\""),
            "{err}"
        );
        let err = Stores::open(&config(None, Some("postgres://h/db")))
            .err()
            .unwrap();
        assert!(err.to_string().contains("stores.weights"), "{err}");
        assert!(err.to_string().contains("stats only"), "{err}");
        let err = Stores::open(&config(Some("postgres://u:secret@h/db"), None))
            .err()
            .unwrap();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("PGPASSWORD"), "{err}");
    }

    #[test]
    fn object_urls_open_object_stores() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/w", dir.path().display());
        let stores = Stores::open(&config(None, Some(&url))).unwrap();
        assert_eq!(
            stores
                .weights
                .latest_iteration(&dacapo_core::RunName::new("r").unwrap())
                .unwrap(),
            None
        );
        assert!(dir.path().join("w").is_dir());
    }
}
