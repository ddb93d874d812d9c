//! The `Ec2` gRPC service: security groups, EC2-shaped. A thin adapter over the service layer
//! (`crate::service`, security_groups.rs).

use crate::service::Controller;
use berth_proto::v1::ec2_server::Ec2;
use berth_proto::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the `Ec2` service.
pub struct Ec2Api(pub Arc<Controller>);

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Ec2 for Ec2Api {
    async fn create_security_group(
        &self,
        r: Request<CreateSecurityGroupRequest>,
    ) -> R<CreateSecurityGroupResponse> {
        Ok(Response::new(
            self.0.create_security_group(r.into_inner()).await?,
        ))
    }
    async fn describe_security_groups(
        &self,
        r: Request<DescribeSecurityGroupsRequest>,
    ) -> R<DescribeSecurityGroupsResponse> {
        Ok(Response::new(
            self.0.describe_security_groups(r.into_inner()).await?,
        ))
    }
    async fn delete_security_group(
        &self,
        r: Request<DeleteSecurityGroupRequest>,
    ) -> R<DeleteSecurityGroupResponse> {
        Ok(Response::new(
            self.0.delete_security_group(r.into_inner()).await?,
        ))
    }
    async fn authorize_security_group_ingress(
        &self,
        r: Request<SecurityGroupIngressRequest>,
    ) -> R<AuthorizeSecurityGroupIngressResponse> {
        Ok(Response::new(
            self.0
                .authorize_security_group_ingress(r.into_inner())
                .await?,
        ))
    }
    async fn revoke_security_group_ingress(
        &self,
        r: Request<SecurityGroupIngressRequest>,
    ) -> R<RevokeSecurityGroupIngressResponse> {
        Ok(Response::new(
            self.0.revoke_security_group_ingress(r.into_inner()).await?,
        ))
    }
}
