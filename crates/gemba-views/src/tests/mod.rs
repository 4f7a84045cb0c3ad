//! Stages meeting in virtual time: the escalator's engine (simulated, as
//! `gemba simulate` runs it) writes what a server would into a store, and
//! the incident follower and the views read it.

mod crash_loop;
