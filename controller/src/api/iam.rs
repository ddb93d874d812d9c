//! The `Iam` gRPC service: the IAM-shaped service: the access keys API calls are signed with. A thin adapter over `crate::security`.

use crate::security::access_keys::{AccessKeyError, AccessKeys, Permissions, ADMIN_USER};
use crate::security::auth::Caller;
use berth_proto::v1::iam_server::Iam;
use berth_proto::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the `Iam` service.
pub struct IamApi {
    /// The access keys.
    pub keys: Arc<AccessKeys>,
}

type R<T> = Result<Response<T>, Status>;

/// IAM's default and largest MaxItems.
const DEFAULT_MAX_ITEMS: i32 = 100;
const MAX_MAX_ITEMS: i32 = 1000;

/// The user a call without UserName acts on: the caller's (IAM's rule), else the admin's.
fn implied_user<T>(req: &Request<T>) -> Option<String> {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.user_name.clone())
}

#[tonic::async_trait]
impl Iam for IamApi {
    async fn create_access_key(
        &self,
        req: Request<CreateAccessKeyRequest>,
    ) -> R<CreateAccessKeyResponse> {
        let caller_user = implied_user(&req);
        let r = req.into_inner();
        let user = r
            .user_name
            .or(caller_user)
            .unwrap_or_else(|| ADMIN_USER.to_string());
        let permissions = match r.permissions.as_deref() {
            None => Permissions::Full,
            Some(p) => Permissions::parse(p)?,
        };
        let k = self.keys.create(&user, permissions)?;
        tracing::info!(access_key_id = %k.record.access_key_id, user_name = %user,
            permissions = permissions.as_str(), "access key created");
        Ok(Response::new(CreateAccessKeyResponse {
            access_key: Some(AccessKey {
                user_name: k.record.user_name,
                access_key_id: k.record.access_key_id,
                status: "Active".into(),
                secret_access_key: k.secret,
                create_date: k.record.create_date,
                permissions: k.record.permissions,
            }),
        }))
    }

    async fn list_access_keys(
        &self,
        req: Request<ListAccessKeysRequest>,
    ) -> R<ListAccessKeysResponse> {
        let caller_user = implied_user(&req);
        let r = req.into_inner();
        let max = r.max_items.unwrap_or(DEFAULT_MAX_ITEMS);
        if !(1..=MAX_MAX_ITEMS).contains(&max) {
            return Err(AccessKeyError::InvalidInput(format!(
                "MaxItems {max} is not valid: it must be between 1 and {MAX_MAX_ITEMS}"
            ))
            .into());
        }
        let user = r.user_name.or(caller_user);
        let mut keys: Vec<AccessKeyMetadata> = self
            .keys
            .list()?
            .into_iter()
            .filter(|k| user.as_ref().is_none_or(|u| *u == k.user_name))
            .filter(|k| r.marker.as_ref().is_none_or(|m| k.access_key_id >= *m))
            .map(|k| AccessKeyMetadata {
                user_name: k.user_name,
                access_key_id: k.access_key_id,
                status: "Active".into(),
                create_date: k.create_date,
                permissions: k.permissions,
            })
            .collect();
        let rest = keys.split_off(keys.len().min(max as usize));
        let marker = rest.first().map(|k| k.access_key_id.clone());
        Ok(Response::new(ListAccessKeysResponse {
            access_key_metadata: keys,
            is_truncated: marker.is_some(),
            marker,
        }))
    }

    async fn delete_access_key(
        &self,
        req: Request<DeleteAccessKeyRequest>,
    ) -> R<DeleteAccessKeyResponse> {
        let r = req.into_inner();
        if r.access_key_id.is_empty() {
            return Err(AccessKeyError::InvalidInput("AccessKeyId is required".into()).into());
        }
        self.keys.delete(&r.access_key_id, r.user_name.as_deref())?;
        tracing::info!(access_key_id = %r.access_key_id, "access key deleted");
        Ok(Response::new(DeleteAccessKeyResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::seal::Sealer;
    use crate::store::memory::MemoryStore;

    fn api() -> IamApi {
        IamApi {
            keys: Arc::new(AccessKeys::new(
                Arc::new(MemoryStore::default()),
                Sealer::new(&[3; 32]),
            )),
        }
    }

    fn as_caller<T>(msg: T, user: &str) -> Request<T> {
        let mut r = Request::new(msg);
        r.extensions_mut().insert(Caller {
            access_key_id: "AKIACALLER".into(),
            user_name: user.into(),
            permissions: Permissions::Full,
        });
        r
    }

    #[tokio::test]
    async fn keys_default_to_the_callers_user_and_list_in_pages_without_secrets() {
        let api = api();
        let made = api
            .create_access_key(as_caller(CreateAccessKeyRequest::default(), "ops"))
            .await
            .unwrap()
            .into_inner()
            .access_key
            .unwrap();
        assert_eq!(
            (made.user_name.as_str(), made.permissions.as_str()),
            ("ops", "full")
        );
        assert_eq!(made.secret_access_key.len(), 40);
        for user in ["a", "b", "c"] {
            let req = CreateAccessKeyRequest {
                user_name: Some(user.into()),
                permissions: Some("read-only".into()),
            };
            api.create_access_key(Request::new(req)).await.unwrap();
        }
        let bad = CreateAccessKeyRequest {
            permissions: Some("root".into()),
            ..Default::default()
        };
        let e = api.create_access_key(Request::new(bad)).await.unwrap_err();
        assert_eq!(berth_proto::exceptions::of(&e), "InvalidInput");

        // The caller's own keys when no UserName is given.
        let mine = api
            .list_access_keys(as_caller(ListAccessKeysRequest::default(), "ops"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(mine.access_key_metadata.len(), 1);
        assert_eq!(
            mine.access_key_metadata[0].access_key_id,
            made.access_key_id
        );

        // Auth off (no caller): every key, two at a time, each exactly once.
        let mut seen = Vec::new();
        let mut marker = None;
        loop {
            let req = ListAccessKeysRequest {
                max_items: Some(2),
                marker: marker.clone(),
                ..Default::default()
            };
            let page = api
                .list_access_keys(Request::new(req))
                .await
                .unwrap()
                .into_inner();
            assert!(page.access_key_metadata.len() <= 2);
            seen.extend(
                page.access_key_metadata
                    .into_iter()
                    .map(|k| k.access_key_id),
            );
            assert_eq!(page.is_truncated, page.marker.is_some());
            marker = page.marker;
            if marker.is_none() {
                break;
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((seen.len(), sorted.len()), (4, 4));
        let req = ListAccessKeysRequest {
            max_items: Some(0),
            ..Default::default()
        };
        let e = api.list_access_keys(Request::new(req)).await.unwrap_err();
        assert_eq!(berth_proto::exceptions::of(&e), "InvalidInput");
    }
}
