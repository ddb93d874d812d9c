//! The `Ssm` gRPC service: the SSM-shaped service: activations (the agents' registration) and Parameter Store. A thin adapter over `crate::security`.

use crate::security::activations::Activations;
use crate::security::secrets::Secrets;
use berth_proto::v1::ssm_server::Ssm;
use berth_proto::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the `Ssm` service.
pub struct SsmApi {
    /// Parameter Store (sealed parameters).
    pub secrets: Arc<Secrets>,
    /// Activations (CreateActivation, DescribeActivations, DeleteActivation).
    pub activations: Arc<Activations>,
    /// The controller's CA fingerprint, returned by CreateActivation for the agent to pin.
    pub ca_fingerprint: String,
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Ssm for SsmApi {
    async fn create_activation(
        &self,
        r: Request<CreateActivationRequest>,
    ) -> R<CreateActivationResponse> {
        let c = self
            .activations
            .create(r.into_inner(), std::time::SystemTime::now())
            .await?;
        Ok(Response::new(CreateActivationResponse {
            activation_id: c.activation_id,
            activation_code: c.activation_code,
            ca_fingerprint: self.ca_fingerprint.clone(),
        }))
    }
    async fn describe_activations(
        &self,
        r: Request<DescribeActivationsRequest>,
    ) -> R<DescribeActivationsResponse> {
        Ok(Response::new(
            self.activations
                .describe(r.into_inner(), std::time::SystemTime::now())
                .await?,
        ))
    }
    async fn delete_activation(
        &self,
        r: Request<DeleteActivationRequest>,
    ) -> R<DeleteActivationResponse> {
        self.activations
            .delete(&r.into_inner().activation_id)
            .await?;
        Ok(Response::new(DeleteActivationResponse {}))
    }
    async fn put_parameter(&self, r: Request<PutParameterRequest>) -> R<PutParameterResponse> {
        Ok(Response::new(self.secrets.put_parameter(r.into_inner())?))
    }
    async fn get_parameter(&self, r: Request<GetParameterRequest>) -> R<GetParameterResponse> {
        let decrypt = r.get_ref().with_decryption == Some(true);
        let found = self.secrets.get_parameter(r.get_ref().clone())?;
        // A SecureString's plaintext is a secret: a read-only key may see the parameter but
        // not decrypt it (as IAM's ReadOnlyAccess lacks kms:Decrypt).
        let secure = found
            .parameter
            .as_ref()
            .is_some_and(|p| p.r#type == "SecureString");
        if decrypt && secure {
            crate::security::auth::require_full(&r, "ssm", "GetParameter")?;
        }
        Ok(Response::new(found))
    }
    async fn delete_parameter(
        &self,
        r: Request<DeleteParameterRequest>,
    ) -> R<DeleteParameterResponse> {
        self.secrets.delete_parameter(r.into_inner())?;
        Ok(Response::new(DeleteParameterResponse {}))
    }
}
