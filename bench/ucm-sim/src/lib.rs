//! ucm-sim, a Unified CM stand-in: being written (issue 5).
