//! Outbound masquerade of the built-in bridge network (`network.masquerade`): traffic
//! that pods send out of the node through any interface but the bridge leaves with the
//! node's address, so pods reach networks that have no route back to the pod subnet.
//!
//! crius keeps its rules in one nftables table of its own per bridge,
//! `inet crius-<bridge>`, and touches nothing else (no iptables chain, no other table):
//! one `postrouting` NAT chain with a rule per pod subnet, not per pod, so pods come and
//! go without a rule change. The table is replaced as a whole in one nft transaction
//! (add, delete, add again, then its chain and rules), so a changed subnet never leaves a
//! stale rule and a failure leaves the previous table as it was. It outlives criusd, like
//! the bridge: pods keep their outbound traffic through a restart. A marker file in the
//! state dir remembers that crius made the table, so that turning the switch off removes
//! it at the next start without crius ever deleting a table it did not make.
//!
//! Rules go through `nft -j` (the nftables crate, as Podman's netavark does): the
//! nftables netlink protocol has no well-kept pure-Rust crate. Forwarding is turned on
//! (`net.ipv4.ip_forward`, and `net.ipv6.conf.all.forwarding` for a dual-stack network),
//! since masquerading is pointless without it.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::helper::{apply_ruleset, NftablesError};
use nftables::schema::{Chain, NfListObject, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::{NetworkError, Subnet};

/// Priority of the source NAT hook (nft's `srcnat`).
const SRCNAT_PRIORITY: i32 = 100;

const CHAIN: &str = "postrouting";

/// The masquerade table of one bridge.
pub struct Masquerade {
    bridge: String,
    table: String,
    /// `<state>/network/masquerade/<bridge>`: present while crius's table may exist.
    marker: PathBuf,
}

impl Masquerade {
    pub fn new(bridge: &str, state: &Path) -> Masquerade {
        Masquerade {
            bridge: bridge.to_string(),
            table: table_name(bridge),
            marker: state.join("network").join("masquerade").join(bridge),
        }
    }

    /// Turns forwarding on and (re)writes the table for `subnets`. Idempotent.
    pub fn apply(&self, subnets: &[Subnet]) -> Result<(), NetworkError> {
        enable_forwarding(subnets)?;
        if let Some(dir) = self.marker.parent() {
            std::fs::create_dir_all(dir).map_err(|err| NetworkError::io("create", dir, err))?;
        }
        // Marked before the table exists, so that a crash in between still has it removed.
        std::fs::write(&self.marker, b"")
            .map_err(|err| NetworkError::io("write", &self.marker, err))?;
        let mut batch = Batch::new();
        // `add` of an existing table is a no-op, and `delete` of a missing one an error:
        // adding first makes the delete always valid, so the table is replaced whatever
        // was there.
        batch.add(NfListObject::Table(self.table()));
        batch.delete(NfListObject::Table(self.table()));
        batch.add(NfListObject::Table(self.table()));
        batch.add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: CHAIN.into(),
            _type: Some(NfChainType::NAT),
            hook: Some(NfHook::Postrouting),
            prio: Some(SRCNAT_PRIORITY),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
        for subnet in subnets {
            batch.add(NfListObject::Rule(self.rule(subnet)));
        }
        apply_ruleset(&batch.to_nftables()).map_err(|source| self.error("write", source))
    }

    /// Deletes crius's table if an earlier run made it (the switch was turned off since).
    pub fn remove_if_made(&self) -> Result<(), NetworkError> {
        if !self.marker.exists() {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.add(NfListObject::Table(self.table()));
        batch.delete(NfListObject::Table(self.table()));
        apply_ruleset(&batch.to_nftables()).map_err(|source| self.error("delete", source))?;
        std::fs::remove_file(&self.marker)
            .map_err(|err| NetworkError::io("remove", &self.marker, err))
    }

    /// `nft list table inet <table>`, for people and tests.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    fn table(&self) -> Table<'static> {
        Table {
            family: NfFamily::INet,
            name: self.table.clone().into(),
            handle: None,
        }
    }

    /// `ip saddr <subnet> oifname != <bridge> masquerade` (`ip6` for an IPv6 subnet).
    fn rule(&self, subnet: &Subnet) -> Rule<'static> {
        let protocol = if subnet.is_ipv4() { "ip" } else { "ip6" };
        let from_pods = Statement::Match(Match {
            left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                PayloadField {
                    protocol: protocol.into(),
                    field: "saddr".into(),
                },
            ))),
            right: Expression::Named(NamedExpression::Prefix(Prefix {
                addr: Box::new(Expression::String(subnet.network().to_string().into())),
                len: u32::from(subnet.prefix()),
            })),
            op: Operator::EQ,
        });
        let leaving_the_bridge = Statement::Match(Match {
            left: Expression::Named(NamedExpression::Meta(Meta {
                key: MetaKey::Oifname,
            })),
            right: Expression::String(self.bridge.clone().into()),
            op: Operator::NEQ,
        });
        Rule {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            chain: CHAIN.into(),
            expr: Cow::Owned(vec![
                from_pods,
                leaving_the_bridge,
                Statement::Masquerade(None),
            ]),
            comment: Some(format!("crius: pods of {subnet} out of the node").into()),
            ..Rule::default()
        }
    }

    fn error(&self, what: &'static str, source: NftablesError) -> NetworkError {
        let reason = match &source {
            NftablesError::NftExecution { inner, .. }
                if inner.kind() == std::io::ErrorKind::NotFound =>
            {
                "the nft program is not installed (Debian package nftables); install it or set network.masquerade = false".to_string()
            }
            NftablesError::NftFailed { stderr, .. } => stderr.trim().to_string(),
            other => other.to_string(),
        };
        NetworkError::Masquerade {
            what,
            table: self.table.clone(),
            reason,
        }
    }
}

/// `crius-<bridge>`: a name nft's own parser takes unquoted, as a bridge name is letters,
/// digits and a few of `-_.`.
fn table_name(bridge: &str) -> String {
    format!("crius-{bridge}")
}

/// Turns on forwarding for the families of `subnets`.
fn enable_forwarding(subnets: &[Subnet]) -> Result<(), NetworkError> {
    let mut switches = vec![Path::new("/proc/sys/net/ipv4/ip_forward")];
    if subnets.iter().any(|subnet| !subnet.is_ipv4()) {
        switches.push(Path::new("/proc/sys/net/ipv6/conf/all/forwarding"));
    }
    for switch in switches {
        let on = std::fs::read_to_string(switch).is_ok_and(|value| value.trim() == "1");
        if !on {
            std::fs::write(switch, b"1").map_err(|err| NetworkError::io("write", switch, err))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_the_subnet_and_skip_the_bridge() {
        let masquerade = Masquerade::new("crius0", Path::new("/nonexistent"));
        let v4: Subnet = "10.88.0.0/16".parse().unwrap();
        let v6: Subnet = "fd88::/64".parse().unwrap();
        let rule = serde_json::to_value(masquerade.rule(&v4)).unwrap();
        assert_eq!(rule["table"], "crius-crius0");
        assert_eq!(rule["family"], "inet");
        let expr = &rule["expr"];
        assert_eq!(expr[0]["match"]["left"]["payload"]["protocol"], "ip");
        assert_eq!(expr[0]["match"]["right"]["prefix"]["addr"], "10.88.0.0");
        assert_eq!(expr[0]["match"]["right"]["prefix"]["len"], 16);
        assert_eq!(expr[1]["match"]["op"], "!=");
        assert_eq!(expr[1]["match"]["right"], "crius0");
        assert!(expr[2].get("masquerade").is_some(), "{expr}");
        let rule6 = serde_json::to_value(masquerade.rule(&v6)).unwrap();
        assert_eq!(
            rule6["expr"][0]["match"]["left"]["payload"]["protocol"],
            "ip6"
        );
        assert_eq!(
            rule6["expr"][0]["match"]["right"]["prefix"]["addr"],
            "fd88::"
        );
    }
}
