//! The `Iam` gRPC service: the IAM-shaped service: the access keys API calls are signed with. A thin adapter over `crate::security`.

use berth_proto::v1::iam_server::Iam;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

/// Serves the `Iam` service.
pub struct IamApi;

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Iam for IamApi {
    async fn create_access_key(
        &self,
        _: Request<CreateAccessKeyRequest>,
    ) -> R<CreateAccessKeyResponse> {
        Err(Status::unimplemented("CreateAccessKey is not served yet"))
    }
    async fn list_access_keys(
        &self,
        _: Request<ListAccessKeysRequest>,
    ) -> R<ListAccessKeysResponse> {
        Err(Status::unimplemented("ListAccessKeys is not served yet"))
    }
    async fn delete_access_key(
        &self,
        _: Request<DeleteAccessKeyRequest>,
    ) -> R<DeleteAccessKeyResponse> {
        Err(Status::unimplemented("DeleteAccessKey is not served yet"))
    }
}
