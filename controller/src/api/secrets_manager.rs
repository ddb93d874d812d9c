//! The `SecretsManager` gRPC service: the Secrets Manager-shaped service: secrets tasks reference by ARN. A thin adapter over `crate::security`.

use berth_proto::v1::secrets_manager_server::SecretsManager;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

/// Serves the `SecretsManager` service.
pub struct SecretsManagerApi;

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl SecretsManager for SecretsManagerApi {
    async fn create_secret(&self, _: Request<CreateSecretRequest>) -> R<CreateSecretResponse> {
        Err(Status::unimplemented("CreateSecret is not served yet"))
    }
    async fn put_secret_value(
        &self,
        _: Request<PutSecretValueRequest>,
    ) -> R<PutSecretValueResponse> {
        Err(Status::unimplemented("PutSecretValue is not served yet"))
    }
    async fn delete_secret(&self, _: Request<DeleteSecretRequest>) -> R<DeleteSecretResponse> {
        Err(Status::unimplemented("DeleteSecret is not served yet"))
    }
}
