//! Integration tests: the images read by the real tools (skopeo, umoci) and the fixture binary.

mod fixture;
mod image;
