//! Features and sequences (cleaning, calendar, lags, scaling, windows, splits): filled in by
//! the features issue. It reads data only through `ingest::store`.
