//! `energy features`
use super::{Context, NotImplemented};
use crate::cli::FeaturesArgs;
use anyhow::Result;

pub(crate) fn run(_context: &Context, _args: &FeaturesArgs) -> Result<()> {
    Err(NotImplemented("features").into())
}
