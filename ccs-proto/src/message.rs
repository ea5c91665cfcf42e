//! Typed CCS JSON (filled in by the message work).
