//! The `Ssm` gRPC service: the SSM-shaped service: activations (the agents' registration) and Parameter Store. A thin adapter over `crate::security`.

use berth_proto::v1::ssm_server::Ssm;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

/// Serves the `Ssm` service.
pub struct SsmApi;

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
