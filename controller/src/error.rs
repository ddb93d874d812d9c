//! The controller's domain errors, named after the ECS exceptions a user already knows.

/// What went wrong, as ECS names it. The doc comment of each variant is the exception name the
/// CLI prints (`An error occurred (NAME) when calling the OP operation: MESSAGE`).
#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    /// ClusterNotFoundException
    #[error("Cluster not found.")]
    ClusterNotFound,
    /// ServiceNotFoundException
    #[error("Service not found: {0}")]
    ServiceNotFound(String),
    /// ServiceNotActiveException: the service was deleted (DRAINING or INACTIVE).
    #[error("Service was not ACTIVE.")]
    ServiceNotActive,
    /// ClusterContainsServicesException
    #[error("The Cluster cannot be deleted while Services are active.")]
    ClusterContainsServices,
    /// ClientException: a bad request the caller must change.
    #[error("{0}")]
    Client(String),
    /// InvalidParameterException: a parameter is missing or has a wrong value.
    #[error("{0}")]
    InvalidParameter(String),
    /// ClusterContainsContainerInstancesException
    #[error("The Cluster cannot be deleted while Container Instances are active or draining.")]
    ClusterContainsContainerInstances,
    /// ClusterContainsTasksException
    #[error("The Cluster cannot be deleted while Tasks are active.")]
    ClusterContainsTasks,
    /// TargetNotFoundException: an attribute's target does not exist.
    #[error("{0}")]
    TargetNotFound(String),
    /// AttributeLimitExceededException: more than 10 custom attributes on a resource.
    #[error("{0}")]
    AttributeLimitExceeded(String),
    /// ClientException for an agent registering or opening a session under a container instance
    /// that was deregistered; the link marks it (`berth_proto::link::inactive_refusal`) so the
    /// agent stops for good.
    #[error("container instance {0} was deregistered (INACTIVE)")]
    InactiveInstance(String),
    /// ConflictException: a RunTask clientToken already answered a different request.
    #[error("The clientToken {token} is already in use with a different RunTask request; its tasks: {}", task_arns.join(", "))]
    Conflict {
        /// The token.
        token: String,
        /// The tasks the token's first request started (ECS's resourceIds).
        task_arns: Vec<String>,
    },
    /// An EC2 error (security groups, `berth ec2`), named as EC2 names it
    /// (`InvalidGroup.NotFound`, `InvalidPermission.Duplicate`, ...).
    #[error("{message}")]
    Ec2 {
        /// EC2's error code.
        code: &'static str,
        /// EC2's message.
        message: String,
    },
    /// TargetNotConnectedException: ExecuteCommand cannot reach the agent running the task.
    #[error("{0}")]
    TargetNotConnected(String),
    /// ServerException: the store failed; nothing was changed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl EcsError {
    /// The ECS exception name for this error.
    pub fn exception_name(&self) -> &'static str {
        use berth_proto::exceptions as x;
        match self {
            EcsError::ClusterNotFound => x::CLUSTER_NOT_FOUND,
            EcsError::ServiceNotFound(_) => x::SERVICE_NOT_FOUND,
            EcsError::ServiceNotActive => x::SERVICE_NOT_ACTIVE,
            EcsError::ClusterContainsServices => x::CLUSTER_CONTAINS_SERVICES,
            EcsError::Client(_) => x::CLIENT,
            EcsError::InvalidParameter(_) => x::INVALID_PARAMETER,
            EcsError::ClusterContainsContainerInstances => x::CLUSTER_CONTAINS_CONTAINER_INSTANCES,
            EcsError::ClusterContainsTasks => x::CLUSTER_CONTAINS_TASKS,
            EcsError::TargetNotFound(_) => x::TARGET_NOT_FOUND,
            EcsError::AttributeLimitExceeded(_) => x::ATTRIBUTE_LIMIT_EXCEEDED,
            EcsError::InactiveInstance(_) => x::CLIENT,
            EcsError::Conflict { .. } => x::CONFLICT,
            EcsError::Ec2 { code, .. } => code,
            EcsError::TargetNotConnected(_) => x::TARGET_NOT_CONNECTED,
            EcsError::Store(_) => x::SERVER,
        }
    }

    /// Shorthand for an InvalidParameterException.
    pub fn invalid(msg: impl Into<String>) -> Self {
        EcsError::InvalidParameter(msg.into())
    }

    /// Shorthand for a ClientException.
    pub fn client(msg: impl Into<String>) -> Self {
        EcsError::Client(msg.into())
    }
}

/// The metadata key carrying the ECS exception name on a gRPC error (defined beside the model).
pub use berth_proto::exceptions::METADATA_KEY as EXCEPTION_METADATA;

/// Maps a domain error to a gRPC status, in this one place.
impl From<EcsError> for tonic::Status {
    fn from(e: EcsError) -> Self {
        let code = match &e {
            EcsError::InactiveInstance(arn) => return berth_proto::link::inactive_refusal(arn),
            EcsError::ClusterNotFound
            | EcsError::ServiceNotFound(_)
            | EcsError::TargetNotFound(_) => tonic::Code::NotFound,
            EcsError::Client(_)
            | EcsError::InvalidParameter(_)
            | EcsError::AttributeLimitExceeded(_) => tonic::Code::InvalidArgument,
            EcsError::ClusterContainsContainerInstances
            | EcsError::ClusterContainsTasks
            | EcsError::ClusterContainsServices
            | EcsError::ServiceNotActive => tonic::Code::FailedPrecondition,
            EcsError::Conflict { .. } => tonic::Code::AlreadyExists,
            EcsError::Ec2 { code, .. } if code.ends_with(".NotFound") => tonic::Code::NotFound,
            EcsError::Ec2 { .. } => tonic::Code::InvalidArgument,
            EcsError::TargetNotConnected(_) => tonic::Code::FailedPrecondition,
            EcsError::Store(_) => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(code, e.to_string());
        if let Ok(v) = e.exception_name().parse() {
            status.metadata_mut().insert(EXCEPTION_METADATA, v);
        }
        status
    }
}

/// Maps a refused or failed agent session to a gRPC status.
impl From<crate::service::LinkError> for tonic::Status {
    fn from(e: crate::service::LinkError) -> Self {
        use crate::service::LinkError;
        match e {
            LinkError::Protocol(m) => tonic::Status::failed_precondition(m),
            LinkError::NotRegistered(_) => tonic::Status::not_found(e.to_string()),
            LinkError::Superseded(_) => tonic::Status::aborted(e.to_string()),
            LinkError::Ecs(e) => e.into(),
        }
    }
}

/// Maps a CloudWatch Logs error to a gRPC status, with its exception name as ECS errors carry
/// theirs.
impl From<crate::logs::LogsError> for tonic::Status {
    fn from(e: crate::logs::LogsError) -> Self {
        use crate::logs::LogsError;
        let code = match &e {
            LogsError::ResourceNotFound(_) => tonic::Code::NotFound,
            LogsError::ResourceAlreadyExists(_) => tonic::Code::AlreadyExists,
            LogsError::InvalidParameter(_) => tonic::Code::InvalidArgument,
            LogsError::Store(_) => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(code, e.to_string());
        if let Ok(v) = e.exception_name().parse() {
            status.metadata_mut().insert(EXCEPTION_METADATA, v);
        }
        status
    }
}
