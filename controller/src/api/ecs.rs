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

    async fn list_clusters(&self, r: Request<ListClustersRequest>) -> R<ListClustersResponse> {
        let page = self.0.list_clusters(r.into_inner()).await?;
        Ok(Response::new(ListClustersResponse {
            cluster_arns: page.items,
            next_token: page.next_token,
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
        let page = self.0.list_task_definitions(r.into_inner()).await?;
        Ok(Response::new(ListTaskDefinitionsResponse {
            task_definition_arns: page.items,
            next_token: page.next_token,
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
        let page = self.0.list_tasks(r.into_inner()).await?;
        Ok(Response::new(ListTasksResponse {
            task_arns: page.items,
            next_token: page.next_token,
        }))
    }

    async fn describe_tasks(&self, r: Request<DescribeTasksRequest>) -> R<DescribeTasksResponse> {
        Ok(Response::new(self.0.describe_tasks(r.into_inner()).await?))
    }

    async fn list_container_instances(
        &self,
        r: Request<ListContainerInstancesRequest>,
    ) -> R<ListContainerInstancesResponse> {
        let page = self.0.list_container_instances(r.into_inner()).await?;
        Ok(Response::new(ListContainerInstancesResponse {
            container_instance_arns: page.items,
            next_token: page.next_token,
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
        r: Request<DeregisterContainerInstanceRequest>,
    ) -> R<DeregisterContainerInstanceResponse> {
        let ci = self.0.deregister_container_instance(r.into_inner()).await?;
        Ok(Response::new(DeregisterContainerInstanceResponse {
            container_instance: Some(ci),
        }))
    }

    async fn put_attributes(&self, r: Request<PutAttributesRequest>) -> R<PutAttributesResponse> {
        Ok(Response::new(PutAttributesResponse {
            attributes: self.0.put_attributes(r.into_inner()).await?,
        }))
    }

    async fn delete_attributes(
        &self,
        r: Request<DeleteAttributesRequest>,
    ) -> R<DeleteAttributesResponse> {
        Ok(Response::new(DeleteAttributesResponse {
            attributes: self.0.delete_attributes(r.into_inner()).await?,
        }))
    }

    async fn list_attributes(
        &self,
        r: Request<ListAttributesRequest>,
    ) -> R<ListAttributesResponse> {
        let page = self.0.list_attributes(r.into_inner()).await?;
        Ok(Response::new(ListAttributesResponse {
            attributes: page.items,
            next_token: page.next_token,
        }))
    }

    async fn start_task(&self, r: Request<StartTaskRequest>) -> R<StartTaskResponse> {
        Ok(Response::new(self.0.start_task(r.into_inner()).await?))
    }

    async fn tag_resource(&self, r: Request<TagResourceRequest>) -> R<TagResourceResponse> {
        self.0.tag_resource(r.into_inner()).await?;
        Ok(Response::new(TagResourceResponse {}))
    }

    async fn untag_resource(&self, r: Request<UntagResourceRequest>) -> R<UntagResourceResponse> {
        self.0.untag_resource(r.into_inner()).await?;
        Ok(Response::new(UntagResourceResponse {}))
    }

    async fn list_tags_for_resource(
        &self,
        r: Request<ListTagsForResourceRequest>,
    ) -> R<ListTagsForResourceResponse> {
        let tags = self
            .0
            .list_tags_for_resource(&r.into_inner().resource_arn)
            .await?;
        Ok(Response::new(ListTagsForResourceResponse { tags }))
    }

    async fn list_task_definition_families(
        &self,
        r: Request<ListTaskDefinitionFamiliesRequest>,
    ) -> R<ListTaskDefinitionFamiliesResponse> {
        let page = self.0.list_task_definition_families(r.into_inner()).await?;
        Ok(Response::new(ListTaskDefinitionFamiliesResponse {
            families: page.items,
            next_token: page.next_token,
        }))
    }

    async fn delete_task_definitions(
        &self,
        r: Request<DeleteTaskDefinitionsRequest>,
    ) -> R<DeleteTaskDefinitionsResponse> {
        Ok(Response::new(
            self.0.delete_task_definitions(r.into_inner()).await?,
        ))
    }

    async fn update_cluster(&self, r: Request<UpdateClusterRequest>) -> R<UpdateClusterResponse> {
        let cluster = self.0.update_cluster(r.into_inner()).await?;
        Ok(Response::new(UpdateClusterResponse {
            cluster: Some(cluster),
        }))
    }

    async fn update_cluster_settings(
        &self,
        r: Request<UpdateClusterSettingsRequest>,
    ) -> R<UpdateClusterSettingsResponse> {
        let cluster = self.0.update_cluster_settings(r.into_inner()).await?;
        Ok(Response::new(UpdateClusterSettingsResponse {
            cluster: Some(cluster),
        }))
    }

    async fn describe_task_stats(
        &self,
        r: Request<DescribeTaskStatsRequest>,
    ) -> R<DescribeTaskStatsResponse> {
        Ok(Response::new(
            self.0.describe_task_stats(r.into_inner()).await?,
        ))
    }

    async fn describe_pull_progress(
        &self,
        r: Request<DescribePullProgressRequest>,
    ) -> R<DescribePullProgressResponse> {
        Ok(Response::new(
            self.0.describe_pull_progress(r.into_inner()).await?,
        ))
    }

    async fn create_service(&self, r: Request<CreateServiceRequest>) -> R<CreateServiceResponse> {
        let service = self.0.create_service(r.into_inner()).await?;
        Ok(Response::new(CreateServiceResponse {
            service: Some(service),
        }))
    }

    async fn update_service(&self, r: Request<UpdateServiceRequest>) -> R<UpdateServiceResponse> {
        let service = self.0.update_service(r.into_inner()).await?;
        Ok(Response::new(UpdateServiceResponse {
            service: Some(service),
        }))
    }

    async fn delete_service(&self, r: Request<DeleteServiceRequest>) -> R<DeleteServiceResponse> {
        let service = self.0.delete_service(r.into_inner()).await?;
        Ok(Response::new(DeleteServiceResponse {
            service: Some(service),
        }))
    }

    async fn list_services(&self, r: Request<ListServicesRequest>) -> R<ListServicesResponse> {
        let page = self.0.list_services(r.into_inner()).await?;
        Ok(Response::new(ListServicesResponse {
            service_arns: page.items,
            next_token: page.next_token,
        }))
    }

    async fn describe_services(
        &self,
        r: Request<DescribeServicesRequest>,
    ) -> R<DescribeServicesResponse> {
        Ok(Response::new(
            self.0.describe_services(r.into_inner()).await?,
        ))
    }

    async fn update_container_instances_state(
        &self,
        r: Request<UpdateContainerInstancesStateRequest>,
    ) -> R<UpdateContainerInstancesStateResponse> {
        Ok(Response::new(
            self.0
                .update_container_instances_state(r.into_inner())
                .await?,
        ))
    }
}
