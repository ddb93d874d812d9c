//! The `Ecs` gRPC service over [`Controller`].

use crate::service::Controller;
use berth_proto::v1::ecs_server::Ecs;
use berth_proto::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the user-facing API.
pub struct EcsApi(pub Arc<Controller>);

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Ecs for EcsApi {
    async fn create_cluster(&self, r: Request<CreateClusterRequest>) -> R<CreateClusterResponse> {
        let cluster = self.0.create_cluster(r.into_inner()).await?;
        Ok(Response::new(CreateClusterResponse {
            cluster: Some(cluster),
        }))
    }

    async fn list_clusters(&self, _r: Request<ListClustersRequest>) -> R<ListClustersResponse> {
        Ok(Response::new(ListClustersResponse {
            cluster_arns: self.0.list_clusters().await,
            next_token: None,
        }))
    }

    async fn describe_clusters(
        &self,
        r: Request<DescribeClustersRequest>,
    ) -> R<DescribeClustersResponse> {
        Ok(Response::new(
            self.0.describe_clusters(r.into_inner()).await?,
        ))
    }

    async fn delete_cluster(&self, r: Request<DeleteClusterRequest>) -> R<DeleteClusterResponse> {
        let cluster = self.0.delete_cluster(&r.into_inner().cluster).await?;
        Ok(Response::new(DeleteClusterResponse {
            cluster: Some(cluster),
        }))
    }

    async fn register_task_definition(
        &self,
        r: Request<RegisterTaskDefinitionRequest>,
    ) -> R<RegisterTaskDefinitionResponse> {
        Ok(Response::new(
            self.0.register_task_definition(r.into_inner()).await?,
        ))
    }

    async fn list_task_definitions(
        &self,
        r: Request<ListTaskDefinitionsRequest>,
    ) -> R<ListTaskDefinitionsResponse> {
        Ok(Response::new(ListTaskDefinitionsResponse {
            task_definition_arns: self.0.list_task_definitions(r.into_inner()).await?,
            next_token: None,
        }))
    }

    async fn describe_task_definition(
        &self,
        r: Request<DescribeTaskDefinitionRequest>,
    ) -> R<DescribeTaskDefinitionResponse> {
        let req = r.into_inner();
        let record = self
            .0
            .describe_task_definition(&req.task_definition)
            .await?;
        let tags = if req.include.iter().any(|i| i == "TAGS") {
            record.tags
        } else {
            Vec::new()
        };
        Ok(Response::new(DescribeTaskDefinitionResponse {
            task_definition: record.task_definition,
            tags,
        }))
    }

    async fn deregister_task_definition(
        &self,
        r: Request<DeregisterTaskDefinitionRequest>,
    ) -> R<DeregisterTaskDefinitionResponse> {
        let td = self
            .0
            .deregister_task_definition(&r.into_inner().task_definition)
            .await?;
        Ok(Response::new(DeregisterTaskDefinitionResponse {
            task_definition: Some(td),
        }))
    }

    async fn run_task(&self, r: Request<RunTaskRequest>) -> R<RunTaskResponse> {
        Ok(Response::new(self.0.run_task(r.into_inner()).await?))
    }

    async fn stop_task(&self, r: Request<StopTaskRequest>) -> R<StopTaskResponse> {
        let task = self.0.stop_task(r.into_inner()).await?;
        Ok(Response::new(StopTaskResponse { task: Some(task) }))
    }

    async fn list_tasks(&self, r: Request<ListTasksRequest>) -> R<ListTasksResponse> {
        Ok(Response::new(ListTasksResponse {
            task_arns: self.0.list_tasks(r.into_inner()).await?,
            next_token: None,
        }))
    }

    async fn describe_tasks(&self, r: Request<DescribeTasksRequest>) -> R<DescribeTasksResponse> {
        Ok(Response::new(self.0.describe_tasks(r.into_inner()).await?))
    }

    async fn list_container_instances(
        &self,
        r: Request<ListContainerInstancesRequest>,
    ) -> R<ListContainerInstancesResponse> {
        Ok(Response::new(ListContainerInstancesResponse {
            container_instance_arns: self.0.list_container_instances(r.into_inner()).await?,
            next_token: None,
        }))
    }

    async fn describe_container_instances(
        &self,
        r: Request<DescribeContainerInstancesRequest>,
    ) -> R<DescribeContainerInstancesResponse> {
        Ok(Response::new(
            self.0.describe_container_instances(r.into_inner()).await?,
        ))
    }

    async fn deregister_container_instance(
        &self,
        _r: Request<DeregisterContainerInstanceRequest>,
    ) -> R<DeregisterContainerInstanceResponse> {
        Err(Status::unimplemented(
            "DeregisterContainerInstance is not implemented yet",
        ))
    }

    async fn put_attributes(&self, _r: Request<PutAttributesRequest>) -> R<PutAttributesResponse> {
        Err(Status::unimplemented(
            "PutAttributes is not implemented yet",
        ))
    }

    async fn delete_attributes(
        &self,
        _r: Request<DeleteAttributesRequest>,
    ) -> R<DeleteAttributesResponse> {
        Err(Status::unimplemented(
            "DeleteAttributes is not implemented yet",
        ))
    }

    async fn list_attributes(
        &self,
        _r: Request<ListAttributesRequest>,
    ) -> R<ListAttributesResponse> {
        Err(Status::unimplemented(
            "ListAttributes is not implemented yet",
        ))
    }

    async fn start_task(&self, _r: Request<StartTaskRequest>) -> R<StartTaskResponse> {
        Err(Status::unimplemented("StartTask is not implemented yet"))
    }

    async fn tag_resource(&self, _r: Request<TagResourceRequest>) -> R<TagResourceResponse> {
        Err(Status::unimplemented("TagResource is not implemented yet"))
    }

    async fn untag_resource(&self, _r: Request<UntagResourceRequest>) -> R<UntagResourceResponse> {
        Err(Status::unimplemented(
            "UntagResource is not implemented yet",
        ))
    }

    async fn list_tags_for_resource(
        &self,
        _r: Request<ListTagsForResourceRequest>,
    ) -> R<ListTagsForResourceResponse> {
        Err(Status::unimplemented(
            "ListTagsForResource is not implemented yet",
        ))
    }

    async fn list_task_definition_families(
        &self,
        _r: Request<ListTaskDefinitionFamiliesRequest>,
    ) -> R<ListTaskDefinitionFamiliesResponse> {
        Err(Status::unimplemented(
            "ListTaskDefinitionFamilies is not implemented yet",
        ))
    }

    async fn delete_task_definitions(
        &self,
        _r: Request<DeleteTaskDefinitionsRequest>,
    ) -> R<DeleteTaskDefinitionsResponse> {
        Err(Status::unimplemented(
            "DeleteTaskDefinitions is not implemented yet",
        ))
    }

    async fn update_cluster(&self, _r: Request<UpdateClusterRequest>) -> R<UpdateClusterResponse> {
        Err(Status::unimplemented(
            "UpdateCluster is not implemented yet",
        ))
    }

    async fn update_cluster_settings(
        &self,
        _r: Request<UpdateClusterSettingsRequest>,
    ) -> R<UpdateClusterSettingsResponse> {
        Err(Status::unimplemented(
            "UpdateClusterSettings is not implemented yet",
        ))
    }
}
