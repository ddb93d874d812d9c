//! The `Logs` gRPC service (CloudWatch Logs): a thin adapter over `crate::logs::LogService`;
//! errors map to CloudWatch's exception names in `error.rs`.

use crate::logs::LogService;
use berth_proto::v1::logs_server::Logs;
use berth_proto::v1::*;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Serves the `Logs` service.
pub struct LogsApi(pub Arc<LogService>);

type R<T> = Result<Response<T>, Status>;

/// Live-tail messages waiting for a slow reader; past this the tail waits (and, should the
/// store's live backlog overflow meanwhile, ends with an error saying so).
const TAIL_WINDOW: usize = 64;

#[tonic::async_trait]
impl Logs for LogsApi {
    async fn create_log_group(
        &self,
        r: Request<CreateLogGroupRequest>,
    ) -> R<CreateLogGroupResponse> {
        self.0.create_log_group(r.into_inner()).await?;
        Ok(Response::new(CreateLogGroupResponse {}))
    }
    async fn delete_log_group(
        &self,
        r: Request<DeleteLogGroupRequest>,
    ) -> R<DeleteLogGroupResponse> {
        self.0.delete_log_group(r.into_inner()).await?;
        Ok(Response::new(DeleteLogGroupResponse {}))
    }
    async fn describe_log_groups(
        &self,
        r: Request<DescribeLogGroupsRequest>,
    ) -> R<DescribeLogGroupsResponse> {
        Ok(Response::new(
            self.0.describe_log_groups(r.into_inner()).await?,
        ))
    }
    async fn put_retention_policy(
        &self,
        r: Request<PutRetentionPolicyRequest>,
    ) -> R<PutRetentionPolicyResponse> {
        self.0.put_retention_policy(r.into_inner()).await?;
        Ok(Response::new(PutRetentionPolicyResponse {}))
    }
    async fn delete_retention_policy(
        &self,
        r: Request<DeleteRetentionPolicyRequest>,
    ) -> R<DeleteRetentionPolicyResponse> {
        self.0.delete_retention_policy(r.into_inner()).await?;
        Ok(Response::new(DeleteRetentionPolicyResponse {}))
    }
    async fn create_log_stream(
        &self,
        r: Request<CreateLogStreamRequest>,
    ) -> R<CreateLogStreamResponse> {
        self.0.create_log_stream(r.into_inner()).await?;
        Ok(Response::new(CreateLogStreamResponse {}))
    }
    async fn describe_log_streams(
        &self,
        r: Request<DescribeLogStreamsRequest>,
    ) -> R<DescribeLogStreamsResponse> {
        Ok(Response::new(
            self.0.describe_log_streams(r.into_inner()).await?,
        ))
    }
    async fn put_log_events(&self, r: Request<PutLogEventsRequest>) -> R<PutLogEventsResponse> {
        Ok(Response::new(self.0.put_log_events(r.into_inner()).await?))
    }
    async fn get_log_events(&self, r: Request<GetLogEventsRequest>) -> R<GetLogEventsResponse> {
        Ok(Response::new(self.0.get_log_events(r.into_inner()).await?))
    }
    async fn filter_log_events(
        &self,
        r: Request<FilterLogEventsRequest>,
    ) -> R<FilterLogEventsResponse> {
        Ok(Response::new(
            self.0.filter_log_events(r.into_inner()).await?,
        ))
    }

    type StartLiveTailStream = ReceiverStream<Result<StartLiveTailResponse, Status>>;

    async fn start_live_tail(
        &self,
        r: Request<StartLiveTailRequest>,
    ) -> R<Self::StartLiveTailStream> {
        let mut tail = self.0.start_live_tail(r.into_inner()).await?;
        let (tx, rx) = mpsc::channel(TAIL_WINDOW);
        // Ends when the caller goes away (the send fails or the channel closes) or the
        // controller stops (the broadcast closes).
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    _ = tx.closed() => return,
                    b = tail.batches.recv() => b,
                };
                let msg = match batch {
                    Ok(b) => {
                        let events = tail.select(&b);
                        if events.is_empty() {
                            continue;
                        }
                        Ok(StartLiveTailResponse { events })
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::resource_exhausted(
                        format!("the live tail fell behind: {n} batches of new events were not read in time; start it again"),
                    )),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let end = msg.is_err();
                if tx.send(msg).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
