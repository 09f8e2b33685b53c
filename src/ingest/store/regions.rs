//! Region records, `{root}/_catalog/regions.json`: the time zone a region's files were
//! imported with (`collect --source file --timezone`), so that later commands on the same
//! store read the region's local time in it ([`crate::region`]). Written atomically, versioned
//! with `#[serde(tag = "version")]`.
use super::{CATALOG, Store, write_atomic};
use crate::ingest::IngestError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

const REGIONS_FILE: &str = "regions.json";

/// What the store records of one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRecord {
    /// The IANA name of the zone its files' local timestamps were read in.
    pub timezone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum RegionsFile {
    #[serde(rename = "1")]
    V1 { regions: BTreeMap<String, RegionRecord> },
}

impl Store {
    fn regions_path(&self) -> PathBuf {
        self.root.join(CATALOG).join(REGIONS_FILE)
    }

    /// The region records (none for a new store).
    pub fn regions(&self) -> Result<BTreeMap<String, RegionRecord>, IngestError> {
        let file: Option<RegionsFile> = self.read_catalog_json(&self.regions_path(), "region records")?;
        Ok(file.map(|RegionsFile::V1 { regions }| regions).unwrap_or_default())
    }

    /// Record (or replace) what the store knows of `region`. The caller holds the lock.
    pub fn record_region(&self, region: &str, record: RegionRecord) -> Result<(), IngestError> {
        crate::ingest::check_name("region", region)?;
        let mut regions = self.regions()?;
        regions.insert(region.to_string(), record);
        self.write_catalog_json(&self.regions_path(), &RegionsFile::V1 { regions })
    }

    /// A JSON file of the catalog (`None` when absent); `what` names it in errors.
    pub(super) fn read_catalog_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &std::path::Path,
        what: &str,
    ) -> Result<Option<T>, IngestError> {
        self.refuse_links(path)?;
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| IngestError::StoreData { path: path.to_owned(), message: format!("corrupt {what}: {e}") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(path)(e)),
        }
    }

    /// Write a JSON file of the catalog atomically (the catalog folder created).
    pub(super) fn write_catalog_json<T: Serialize>(
        &self,
        path: &std::path::Path,
        value: &T,
    ) -> Result<(), IngestError> {
        self.refuse_links(path)?;
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| IngestError::StoreData { path: path.to_owned(), message: e.to_string() })?;
        if let Some(catalog) = path.parent() {
            fs::create_dir_all(catalog).map_err(Store::io(catalog))?;
        }
        write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.regions().unwrap().is_empty());
        store.record_region("VIC", RegionRecord { timezone: "Etc/GMT-10".into() }).unwrap();
        store.record_region("XYZ", RegionRecord { timezone: "UTC".into() }).unwrap();
        store.record_region("VIC", RegionRecord { timezone: "Australia/Brisbane".into() }).unwrap();
        let regions = store.regions().unwrap();
        assert_eq!(regions.len(), 2);
        assert_eq!(regions["VIC"].timezone, "Australia/Brisbane");
        assert!(store.record_region("../x", RegionRecord { timezone: "UTC".into() }).is_err());
        fs::write(store.regions_path(), b"{not json").unwrap();
        let e = store.regions().unwrap_err().to_string();
        assert!(e.contains("regions.json"), "{e}");
    }
}
