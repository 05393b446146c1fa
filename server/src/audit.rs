//! The decision audit log for SIEMs: one JSON line per decision and per admin action.
//!
//! A line holds the time, tenant, account (as given, or a keyed hash when configured), source
//! address, decision, reason, the counter that fired and the policy version. Never a fingerprint:
//! nothing that writes here is handed one.

use portcullis_engine::Decision;
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::{self, LineWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Where audit lines go, and how accounts are written.
pub struct Audit {
    out: Option<Mutex<Box<dyn Write + Send>>>,
    account_key: Option<[u8; 32]>,
}

/// One decision, as the audit log records it.
pub struct DecisionRecord<'a> {
    /// `check` or `validate`.
    pub api: &'a str,
    /// Tenant name.
    pub tenant: &'a str,
    /// The account as typed.
    pub user: &'a str,
    /// The source address.
    pub ip: IpAddr,
    /// The decision.
    pub decision: &'a Decision,
    /// The agent's answer, in in-line mode.
    pub result: Option<&'a str>,
    /// The policy version in force.
    pub policy_version: &'a str,
}

impl Audit {
    /// No audit log.
    pub fn off() -> Self {
        Audit {
            out: None,
            account_key: None,
        }
    }

    /// Appends to `target` (`-` is stdout). With `account_key`, accounts are written as a keyed
    /// hash under it.
    pub fn open(target: &str, account_key: Option<[u8; 32]>) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(LineWriter::new(io::stdout()))
        } else {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(target))?;
            Box::new(LineWriter::new(file))
        };
        Ok(Audit {
            out: Some(Mutex::new(out)),
            account_key,
        })
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.out.is_some()
    }

    fn account(&self, tenant: &str, user: &str) -> String {
        match &self.account_key {
            Some(key) => {
                let mut h = blake3::Hasher::new_keyed(key);
                h.update(tenant.as_bytes());
                h.update(b"\0");
                h.update(user.as_bytes());
                format!("h:{}", &h.finalize().to_hex()[..32])
            }
            None => user.to_string(),
        }
    }

    /// Records a decision.
    pub fn decision(&self, r: &DecisionRecord<'_>) {
        if self.out.is_none() {
            return;
        }
        let d = r.decision;
        let mut line = json!({
            "ts": now_rfc3339(),
            "kind": "decision",
            "api": r.api,
            "tenant": r.tenant,
            "account": self.account(r.tenant, r.user),
            "source": r.ip.to_string(),
            "decision": d.verdict.as_str(),
            "policy_version": r.policy_version,
        });
        if d.assessed != d.verdict {
            line["assessed"] = d.assessed.as_str().into();
        }
        if let Some(reason) = d.reason {
            line["reason"] = reason.as_str().into();
        }
        if let Some(f) = d.fired {
            line["fired"] = json!({"counter": f.counter, "value": f.value, "limit": f.limit});
        }
        if let Some(id) = d.attempt_id {
            line["id"] = id.to_string().into();
        }
        if let Some(result) = r.result {
            line["result"] = result.into();
        }
        self.write(&line);
    }

    /// Records an admin action (`action`, with its parameters in `detail`).
    pub fn admin(&self, action: &str, mut detail: Value, policy_version: &str) {
        if self.out.is_none() {
            return;
        }
        if let (Some(obj), Some(_)) = (detail.as_object_mut(), &self.account_key) {
            if let (Some(t), Some(u)) = (
                obj.get("tenant")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                obj.get("account")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            ) {
                obj.insert("account".into(), self.account(&t, &u).into());
            }
        }
        let line = json!({
            "ts": now_rfc3339(),
            "kind": "admin",
            "action": action,
            "detail": detail,
            "policy_version": policy_version,
        });
        self.write(&line);
    }

    fn write(&self, line: &Value) {
        let Some(out) = &self.out else { return };
        let mut text = line.to_string();
        text.push('\n');
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.write_all(text.as_bytes()) {
            tracing::warn!(error = %e, "Audit log write failed.");
        }
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_engine::{Familiarity, Fired, Reason, Verdict};

    #[test]
    fn writes_one_line_per_decision_with_hashed_account_and_no_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(path.to_str().unwrap(), Some([1; 32])).unwrap();
        let d = Decision {
            verdict: Verdict::Block,
            assessed: Verdict::Block,
            reason: Some(Reason::AccountLocked),
            retry_after: None,
            fired: Some(Fired {
                counter: "unfamiliar_failures",
                value: 5,
                limit: 5,
            }),
            familiarity: Familiarity::Unfamiliar,
            attempt_id: None,
        };
        audit.decision(&DecisionRecord {
            api: "check",
            tenant: "acme",
            user: "alice",
            ip: "192.0.2.1".parse().unwrap(),
            decision: &d,
            result: None,
            policy_version: "v1",
        });
        drop(audit);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["reason"], "account_locked");
        assert_eq!(v["fired"]["counter"], "unfamiliar_failures");
        assert_eq!(v["policy_version"], "v1");
        assert!(v["account"].as_str().unwrap().starts_with("h:"));
        assert!(!text.contains("alice"));
    }
}
