//! Integration tests of envelope's backends: one KMS contract run against the local KMS
//! and AWS KMS (on moto), one object-store contract run against a directory and S3 (on
//! moto). moto is started once for the binary; without it the AWS tests fail saying
//! what to install.

mod kms;
mod objects;
mod sealed;
mod support;
