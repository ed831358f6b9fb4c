//! Deployment health shared by every replica.
