//! SASL PLAIN (filled in by the write work).
