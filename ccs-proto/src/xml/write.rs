//! Encoders (filled in by the write work).
