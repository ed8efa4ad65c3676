//! The tamper-evident audit log: event model, canonical encoding and per-tenant hash
//! chain, Ed25519 checkpoints, export bundles (NDJSON + signed manifest) and their
//! streaming verification. Pure: no IO except reading a bundle from a reader, no SQL.
//! The byte formats are specified in `docs/audit.md`; a change to any of them is a new
//! format version, never an edit.

mod anchor;
mod bundle;
mod chain;
mod checkpoint;
mod event;
mod json;
mod signing;
pub mod time;
mod verify;

pub use anchor::{
    ANCHOR_PREFIX, AnchorParseError, AnchoredSummary, MAX_ANCHOR_BYTES, anchor_json, anchor_name,
    anchor_prefix, parse_anchor, parse_anchor_name, verify_bundle_against_anchors,
};
pub use bundle::{
    BundleError, BundleWriter, Manifest, ManifestCheckpoint, ManifestInput, build_manifest,
    event_line, manifest_line, manifest_payload,
};
pub use chain::{
    CANONICAL_VERSION, Head, canonical, event_hash, genesis, next, truncate_to_micros, verify_link,
};
pub use checkpoint::{
    Checkpoint, CheckpointError, checkpoint_payload, sign_checkpoint, verify_checkpoint,
};
pub use event::{
    Action, Actor, ActorKind, Event, Hash, HashParseError, NewEvent, Outcome, UnknownValue,
};
pub use json::EventJsonError;
pub use signing::{
    KeyList, KeySet, KeySetError, PublicKey, Signature, SignatureParseError, SigningKey,
};
pub use verify::{Fault, MAX_LINE_BYTES, Summary, VerifyError, verify_bundle};
