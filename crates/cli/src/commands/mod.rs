pub(crate) mod daemon;
pub(crate) mod registry;
