//! A container's /etc/hosts, /etc/hostname and /etc/resolv.conf, made to fit its network mode
//! and honouring the container definition's hostname, dnsServers, dnsSearchDomains and
//! extraHosts; written under the data dir (`tasks/<id>/etc/<container>/`) and bind-mounted
//! read-only... (issue 8; filled in by the engine work).
