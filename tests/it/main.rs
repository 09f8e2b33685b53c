//! Integration tests: one binary of modules.
mod bad_input;
mod bench;
mod caiso;
mod chain;
mod cli;
mod collect;
mod eia;
mod realdata;
mod reliability;
