//! The `Ssm` gRPC service: the SSM-shaped service: activations (the agents' registration) and Parameter Store. A thin adapter over `crate::security`.

use crate::security::secrets::Secrets;
use berth_proto::v1::ssm_server::Ssm;
use berth_proto::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the `Ssm` service.
pub struct SsmApi {
    /// Parameter Store (sealed parameters).
    pub secrets: Arc<Secrets>,
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Ssm for SsmApi {
    async fn create_activation(
        &self,
        _: Request<CreateActivationRequest>,
    ) -> R<CreateActivationResponse> {
        Err(Status::unimplemented("CreateActivation is not served yet"))
    }
    async fn describe_activations(
        &self,
        _: Request<DescribeActivationsRequest>,
    ) -> R<DescribeActivationsResponse> {
        Err(Status::unimplemented(
            "DescribeActivations is not served yet",
        ))
    }
    async fn delete_activation(
        &self,
        _: Request<DeleteActivationRequest>,
    ) -> R<DeleteActivationResponse> {
        Err(Status::unimplemented("DeleteActivation is not served yet"))
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
