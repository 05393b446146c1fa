//! A value on cache lines of its own, for state that several threads write: beside read-mostly
//! fields or another thread's lock, every write would take the line from the other core and
//! every read there would miss. 128 bytes, as x86 prefetches lines in pairs.

use std::ops::Deref;

/// `T` alone on its cache lines.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
