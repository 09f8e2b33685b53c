//! Cached facet lists, `{root}/_catalog/facets.json`: for each route's facet (such as
//! `region-data/respondent`), the values the API listed and when it was asked (`--region all`,
//! [`crate::ingest::eia::respondents`]). Written atomically, versioned with
//! `#[serde(tag = "version")]`.
use super::{CATALOG, Store};
use crate::ingest::IngestError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

const FACETS_FILE: &str = "facets.json";

/// One cached facet list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetRecord {
    pub fetched_at: DateTime<Utc>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum FacetsFile {
    #[serde(rename = "1")]
    V1 { facets: BTreeMap<String, FacetRecord> },
}

impl Store {
    fn facets_path(&self) -> PathBuf {
        self.root.join(CATALOG).join(FACETS_FILE)
    }

    /// The cached facet lists (none for a new store).
    pub fn facets(&self) -> Result<BTreeMap<String, FacetRecord>, IngestError> {
        let file: Option<FacetsFile> = self.read_catalog_json(&self.facets_path(), "facet lists")?;
        Ok(file.map(|FacetsFile::V1 { facets }| facets).unwrap_or_default())
    }

    /// Cache (or replace) the list of facet `name`. The caller holds the lock.
    pub fn record_facet(&self, name: &str, record: FacetRecord) -> Result<(), IngestError> {
        let mut facets = self.facets()?;
        facets.insert(name.to_string(), record);
        self.write_catalog_json(&self.facets_path(), &FacetsFile::V1 { facets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn facet_lists_round_trip_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.facets().unwrap().is_empty());
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let record = FacetRecord { fetched_at: at, values: vec!["AEC".into(), "CISO".into()] };
        store.record_facet("region-data/respondent", record.clone()).unwrap();
        assert_eq!(store.facets().unwrap()["region-data/respondent"], record);
        std::fs::write(store.facets_path(), b"{not json").unwrap();
        let e = store.facets().unwrap_err().to_string();
        assert!(e.contains("facets.json") && e.contains("corrupt facet lists"), "{e}");
    }
}
