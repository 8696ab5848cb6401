//! Harness for edgeway-control's end-to-end tests: the shared one in
//! [`edgeway_testkit::control`] (real processes on loopback, port 0).
#![allow(unused_imports)]

pub(crate) use edgeway_testkit::control::*;
