//! Integration tests: one binary of modules.
mod bad_input;
mod bench;
mod caiso;
mod chain;
mod cli;
mod collect;
mod common;
mod distributed;
mod eia;
mod faults;
mod files;
mod isolation;
mod openmeteo;
mod realdata;
mod reliability;
mod resume;
mod sources;
