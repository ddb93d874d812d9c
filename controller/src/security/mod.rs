//! The controller's security (issue 7): what authenticates agents and API callers and what keeps
//! secrets. A plain service layer like `service/`, over the same [`crate::store::Store`]:
//!
//! - [`seal`]: the master key and AEAD sealing of everything secret at rest;
//! - [`pki`]: the CA, the server certificate and the agents' client certificates;
//! - [`activations`]: SSM-style activations and the enrollment they allow;
//! - [`access_keys`] and [`auth`]: IAM-style access keys, SigV4 verification and the audit log;
//! - [`secrets`]: Secrets Manager secrets and SSM parameters, and their resolution for tasks;
//! - [`tls`]: TLS on the port, offering both HTTP/2 (gRPC) and HTTP/1.1 (AWS JSON 1.1).

pub mod access_keys;
pub mod activations;
pub mod audit;
pub mod auth;
pub mod pki;
pub mod seal;
pub mod secrets;
pub mod tls;
