//! The Linux implementation of [`Network`]: rtnetlink, nix and nft. (Stub: the networking work
//! fills it in.)

use super::*;

/// Task networks on this host's kernel.
pub struct LinuxNetwork {
    config: NetworkConfig,
}

impl LinuxNetwork {
    /// Takes the agent's settings; creates nothing until a task needs it.
    pub fn new(config: NetworkConfig) -> Result<Self, NetworkError> {
        Ok(Self { config })
    }
}

fn not_yet() -> NetworkError {
    NetworkError::Invalid("task networking is not implemented yet".into())
}

#[async_trait]
impl Network for LinuxNetwork {
    fn subnets(&self) -> Vec<SubnetConfig> {
        self.config.subnets.clone()
    }
    fn allocate(&self, _plan: &NetworkPlan) -> Result<TaskNetworkState, NetworkError> {
        Err(not_yet())
    }
    fn release(&self, _state: &TaskNetworkState) {}
    async fn setup(&self, _state: &mut TaskNetworkState) -> Result<(), NetworkError> {
        Err(not_yet())
    }
    async fn set_ingress(
        &self,
        _state: &TaskNetworkState,
        _rules: &[IngressRule],
    ) -> Result<(), NetworkError> {
        Err(not_yet())
    }
    async fn teardown(&self, _state: &TaskNetworkState) -> Result<(), NetworkError> {
        Ok(())
    }
    async fn recover(&self, _held: &[TaskNetworkState]) -> Result<Vec<String>, NetworkError> {
        Ok(Vec::new())
    }
}
