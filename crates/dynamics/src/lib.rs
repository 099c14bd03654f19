//! The Microsoft Dynamics 365 (Dataverse) adapter.

#[cfg(feature = "sandbox")]
pub mod sandbox;
