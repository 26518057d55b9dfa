//! Which metadata keys carry the tenant and the campaign.
//!
//! The sender stamps its ids on every message; each provider echoes them back in its own
//! carrier (SendGrid: custom args flattened to top-level keys; Mailgun: `user-variables`; SES:
//! `mail.tags`; Postmark: `Metadata`; SparkPost: `rcpt_meta`; Mandrill: `msg.metadata`). The
//! key names inside those carriers are configuration, the same for every provider.

use serde::{Deserialize, Serialize};

/// The metadata key names of the tenant and campaign ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CarrierKeys {
    /// Key of the tenant id (default `tenant_id`).
    pub tenant: String,
    /// Key of the campaign id (default `campaign_id`).
    pub campaign: String,
}

impl Default for CarrierKeys {
    fn default() -> Self {
        CarrierKeys {
            tenant: "tenant_id".to_owned(),
            campaign: "campaign_id".to_owned(),
        }
    }
}

impl CarrierKeys {
    /// Checks the keys at start-up: both non-empty and different.
    pub fn validate(&self) -> Result<(), String> {
        if self.tenant.trim().is_empty() || self.campaign.trim().is_empty() {
            return Err("carrier keys: tenant and campaign must be non-empty".to_owned());
        }
        if self.tenant == self.campaign {
            return Err(format!("carrier keys: tenant and campaign are both {:?}", self.tenant));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let keys: CarrierKeys = serde_json::from_str("{}").unwrap();
        assert_eq!(keys, CarrierKeys::default());
        assert!(keys.validate().is_ok());
        let same = CarrierKeys {
            tenant: "x".into(),
            campaign: "x".into(),
        };
        assert!(same.validate().is_err());
        assert!(serde_json::from_str::<CarrierKeys>(r#"{"tenant":"t","other":1}"#).is_err());
    }
}
