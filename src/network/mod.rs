//! Pod networking. For now: the loopback interface of a new network namespace. Bridge,
//! veth, IPAM and CNI come with the networking work (rtnetlink).

mod loopback;

pub use loopback::bring_up_loopback;
