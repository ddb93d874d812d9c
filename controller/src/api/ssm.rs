//! The `Ssm` gRPC service: the SSM-shaped service: activations (the agents' registration) and Parameter Store. A thin adapter over `crate::security`.

use crate::security::activations::Activations;
use berth_proto::v1::ssm_server::Ssm;
use berth_proto::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the `Ssm` service.
pub struct SsmApi {
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
    async fn put_parameter(&self, _: Request<PutParameterRequest>) -> R<PutParameterResponse> {
        Err(Status::unimplemented("PutParameter is not served yet"))
    }
    async fn get_parameter(&self, _: Request<GetParameterRequest>) -> R<GetParameterResponse> {
        Err(Status::unimplemented("GetParameter is not served yet"))
    }
    async fn delete_parameter(
        &self,
        _: Request<DeleteParameterRequest>,
    ) -> R<DeleteParameterResponse> {
        Err(Status::unimplemented("DeleteParameter is not served yet"))
    }
}
