//! Integration tests: one binary of modules.
mod cli;
mod collect;
mod eia;
mod realdata;
