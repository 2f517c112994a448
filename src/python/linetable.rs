//! Line-number tables of CPython code objects.
