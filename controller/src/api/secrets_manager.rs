//! The `SecretsManager` gRPC service: the Secrets Manager-shaped service: secrets tasks reference by ARN. A thin adapter over `crate::security`.

use crate::security::secrets::Secrets;
use berth_proto::v1::secrets_manager_server::SecretsManager;
use berth_proto::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the `SecretsManager` service.
pub struct SecretsManagerApi {
    /// The sealed secrets.
    pub secrets: Arc<Secrets>,
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl SecretsManager for SecretsManagerApi {
    async fn create_secret(&self, r: Request<CreateSecretRequest>) -> R<CreateSecretResponse> {
        Ok(Response::new(self.secrets.create_secret(r.into_inner())?))
    }
    async fn put_secret_value(
        &self,
        r: Request<PutSecretValueRequest>,
    ) -> R<PutSecretValueResponse> {
        Ok(Response::new(
            self.secrets.put_secret_value(r.into_inner())?,
        ))
    }
    /// Berth deletes at once (no recovery window): DeletionDate is now.
    async fn delete_secret(&self, r: Request<DeleteSecretRequest>) -> R<DeleteSecretResponse> {
        Ok(Response::new(self.secrets.delete_secret(r.into_inner())?))
    }
}
