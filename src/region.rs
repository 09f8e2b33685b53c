//! Regions' local calendars: the time zone each region's local-time logic uses (calendar
//! features, holidays, the day-ahead issue hour) and the public holidays its calendar marks.
//!
//! A region's zone, first match wins:
//! 1. `[regions.<R>] timezone` in the config file;
//! 2. the zone recorded in the store (`_catalog/regions.json`) by `collect --source file
//!    --timezone` for a region with no zone of its own;
//! 3. the built-in table of US balancing authorities, EIA regions, CAISO TAC areas and the
//!    synthetic `SYN<n>` ([`crate::time::builtin_zone`]);
//! 4. none: UTC, with one warning per region naming the setting to add. (Before, any unknown
//!    code silently got America/New_York.)
//!
//! Holidays: `[regions.<R>] holidays` (`us`, `au-vic` or `none`), else US federal holidays for the
//! regions of the built-in table and none for any other.
//!
//! Commands register the config and the store's records once at start ([`configure`]); the
//! lookups ([`zone`], [`holidays`]) are then plain functions of the region code, so the
//! feature code needs nothing but the code.
use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, RwLock};

/// The public holidays a region's calendar marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Holidays {
    /// US federal holidays (observed dates, [`crate::time::is_us_holiday`]).
    Us,
    /// Victoria, Australia (metropolitan Melbourne), by rule ([`crate::time::victoria_holidays`]).
    #[serde(rename = "au-vic")]
    #[value(name = "au-vic")]
    AuVic,
    /// No holidays: the `holiday` feature is 0 everywhere.
    None,
}

impl Holidays {
    /// Is `date` (a local calendar day) a holiday of this calendar?
    pub fn contains(self, date: NaiveDate) -> bool {
        match self {
            Holidays::Us => crate::time::is_us_holiday(date),
            Holidays::AuVic => crate::time::is_victoria_holiday(date),
            Holidays::None => false,
        }
    }
}

/// What is known of one region besides the built-in table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionSettings {
    pub zone: Option<Tz>,
    pub holidays: Option<Holidays>,
}

/// Where a region's zone came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneOrigin {
    /// `[regions.<R>] timezone`.
    Config,
    /// Recorded in the store by a `--timezone` import.
    Store,
    /// The built-in table.
    BuiltIn,
}

/// The config file's settings and the store's records, by region.
static CONFIGURED: RwLock<BTreeMap<String, (RegionSettings, ZoneOrigin)>> = RwLock::new(BTreeMap::new());
/// Regions already warned about (one warning per region and process).
static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Register what the config file (`origin` [`ZoneOrigin::Config`]) or the store
/// ([`ZoneOrigin::Store`]) says of `region`. A store record never overrides a configured zone.
pub fn configure(region: &str, settings: RegionSettings, origin: ZoneOrigin) {
    let mut table = CONFIGURED.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = table.entry(region.to_string()).or_insert((RegionSettings::default(), origin));
    let keep_zone = origin == ZoneOrigin::Store && entry.1 == ZoneOrigin::Config && entry.0.zone.is_some();
    if let Some(zone) = settings.zone
        && !keep_zone
    {
        entry.0.zone = Some(zone);
        entry.1 = origin;
    }
    if settings.holidays.is_some() {
        entry.0.holidays = settings.holidays;
    }
}

/// The zone of `region` and where it came from, without warning; `None` when it has none.
pub fn known_zone(region: &str) -> Option<(Tz, ZoneOrigin)> {
    let table = CONFIGURED.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((RegionSettings { zone: Some(zone), .. }, origin)) = table.get(region) {
        return Some((*zone, *origin));
    }
    crate::time::builtin_zone(region).map(|zone| (zone, ZoneOrigin::BuiltIn))
}

/// The zone of `region` (see the module doc); UTC with a warning, once, when it has none.
pub fn zone(region: &str) -> Tz {
    if let Some((zone, _)) = known_zone(region) {
        return zone;
    }
    let first = WARNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(region.to_string());
    if first {
        tracing::warn!(
            region,
            "region {region} has no time zone: its local calendar (hours, weekdays, day-ahead issue hour) is \
             read in UTC; set `[regions.{region}] timezone = \"…\"` in the config file (an IANA name such as \
             `Australia/Melbourne` or `Etc/GMT-10` for a fixed UTC+10) or import its file with `--timezone`"
        );
    }
    chrono_tz::UTC
}

/// The holidays of `region`: configured, else US federal holidays for the regions of the
/// built-in table, else none.
pub fn holidays(region: &str) -> Holidays {
    let table = CONFIGURED.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(holidays) = table.get(region).and_then(|(settings, _)| settings.holidays) {
        return holidays;
    }
    if crate::time::builtin_zone(region).is_some() { Holidays::Us } else { Holidays::None }
}

/// A time zone as users write it: an IANA name (`Australia/Melbourne`, `Etc/GMT-10`, `UTC`;
/// letter case is not significant), or a fixed whole-hour offset `UTC+10`, `UTC-05:00`, which is
/// the IANA zone `Etc/GMT-10`, `Etc/GMT+5` (IANA's `Etc` signs are inverted).
pub fn parse_zone(text: &str) -> Result<Tz, String> {
    let text = text.trim();
    if let Some(offset) = text.strip_prefix("UTC").or_else(|| text.strip_prefix("GMT"))
        && let Some(sign) = offset.chars().next().filter(|c| *c == '+' || *c == '-')
    {
        let digits = offset[1..].strip_suffix(":00").unwrap_or(&offset[1..]);
        let hours: i32 = digits.parse().ok().filter(|h| (0..=14).contains(h)).ok_or_else(|| {
            format!("unknown time zone `{text}`: a fixed offset is written UTC+10 or UTC-05:00 (whole hours, up to 14)")
        })?;
        // Etc/GMT-10 is UTC+10
        let name = match (sign, hours) {
            (_, 0) => "Etc/UTC".to_string(),
            ('+', h) => format!("Etc/GMT-{h}"),
            (_, h) => format!("Etc/GMT+{h}"),
        };
        return name.parse().map_err(|_| format!("unknown time zone `{text}`"));
    }
    let insensitive = || chrono_tz::TZ_VARIANTS.iter().copied().find(|zone| zone.name().eq_ignore_ascii_case(text));
    text.parse::<Tz>().ok().or_else(insensitive).ok_or_else(|| {
        format!("unknown time zone `{text}`: give an IANA name such as `Australia/Melbourne`, `Etc/GMT-10` or `UTC+10`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_parse_as_users_write_them() {
        assert_eq!(parse_zone("Australia/Brisbane").unwrap(), chrono_tz::Australia::Brisbane);
        assert_eq!(parse_zone("australia/melbourne").unwrap(), chrono_tz::Australia::Melbourne);
        assert_eq!(parse_zone("Etc/GMT-10").unwrap(), chrono_tz::Etc::GMTMinus10);
        assert_eq!(parse_zone("UTC+10").unwrap(), chrono_tz::Etc::GMTMinus10);
        assert_eq!(parse_zone("UTC-05:00").unwrap(), chrono_tz::Etc::GMTPlus5);
        assert_eq!(parse_zone("UTC").unwrap(), chrono_tz::UTC);
        for bad in ["Mars/Olympus", "UTC+5:30", "UTC+15", ""] {
            let e = parse_zone(bad).unwrap_err();
            assert!(e.contains("unknown time zone"), "{bad}: {e}");
        }
    }

    /// Known US codes and SYN<n> keep their zones and US holidays; an unknown code gets UTC
    /// and no holidays (never America/New_York); configured settings win over the table, and a
    /// store record never over the config.
    #[test]
    fn configured_zone_wins_and_unknown_regions_get_utc() {
        assert_eq!(zone("ERCO"), chrono_tz::America::Chicago);
        assert_eq!(zone("SYN2"), chrono_tz::America::Chicago);
        assert_eq!(holidays("PJM"), Holidays::Us);
        assert_eq!(zone("TEST_UNKNOWN_ZONE"), chrono_tz::UTC);
        assert_eq!(holidays("TEST_UNKNOWN_ZONE"), Holidays::None);
        assert_eq!(known_zone("TEST_UNKNOWN_ZONE"), None);

        let melbourne = RegionSettings { zone: Some(chrono_tz::Australia::Melbourne), holidays: None };
        configure("TEST_CONFIGURED", melbourne, ZoneOrigin::Config);
        let fixed = RegionSettings { zone: Some(chrono_tz::Etc::GMTMinus10), holidays: None };
        configure("TEST_CONFIGURED", fixed, ZoneOrigin::Store);
        assert_eq!(known_zone("TEST_CONFIGURED"), Some((chrono_tz::Australia::Melbourne, ZoneOrigin::Config)));
        configure("TEST_STORED", fixed, ZoneOrigin::Store);
        assert_eq!(zone("TEST_STORED"), chrono_tz::Etc::GMTMinus10);

        let no_holidays = RegionSettings { zone: None, holidays: Some(Holidays::None) };
        configure("TEST_TEX_NO_HOLIDAYS", no_holidays, ZoneOrigin::Config);
        assert_eq!(holidays("TEST_TEX_NO_HOLIDAYS"), Holidays::None);
        let us = RegionSettings { zone: Some(chrono_tz::America::Chicago), holidays: Some(Holidays::Us) };
        configure("TEST_US_CONFIGURED", us, ZoneOrigin::Config);
        assert_eq!(holidays("TEST_US_CONFIGURED"), Holidays::Us);
        let thanksgiving = NaiveDate::from_ymd_opt(2024, 11, 28).unwrap();
        assert!(Holidays::Us.contains(thanksgiving) && !Holidays::None.contains(thanksgiving));
    }
}
