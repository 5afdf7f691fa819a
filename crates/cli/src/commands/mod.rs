pub(crate) mod registry;
