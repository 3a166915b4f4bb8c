//! The one table of gRPC services: each service's name, the role each of its methods needs,
//! and whether health reports on it. Dispatch, health, reflection and authorization all
//! read it, so adding a service is one row here and one handler in `dispatch`.
use crate::auth::Role;

/// One service as the listener serves it.
pub struct ServiceSpec {
    pub name: &'static str,
    /// The role a method needs when `methods` does not name it; None: open to anyone.
    pub role: Option<Role>,
    /// Methods that need another role than the service's.
    pub methods: &'static [(&'static str, Option<Role>)],
    /// Health reports a status for it (the preflight.v1 services).
    pub health: bool,
}

pub const DECISION: &str = "preflight.v1.DecisionService";
pub const CONSENT: &str = "preflight.v1.ConsentService";
pub const DNC: &str = "preflight.v1.DncService";
pub const ATTEMPTS: &str = "preflight.v1.AttemptService";
pub const EVENTS: &str = "preflight.v1.EventService";
pub const AUDIT: &str = "preflight.v1.AuditService";
pub const PRIVACY: &str = "preflight.v1.PrivacyService";
pub const WEBHOOKS: &str = "preflight.v1.WebhookService";
pub const HEALTH: &str = "grpc.health.v1.Health";
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
/// Evans, older grpcurl and Postman, and Python's grpcio-reflection speak only this one.
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

pub static SERVICES: &[ServiceSpec] = &[
    ServiceSpec {
        name: DECISION,
        role: Some(Role::Check),
        methods: &[],
        health: true,
    },
    ServiceSpec {
        name: CONSENT,
        role: Some(Role::Write),
        // A bulk import can grant or withdraw millions at once, as a registry import can.
        methods: &[("ImportConsents", Some(Role::Admin))],
        health: true,
    },
    ServiceSpec {
        name: DNC,
        role: Some(Role::Admin),
        methods: &[
            ("ListRegistries", Some(Role::Check)),
            ("AddEntries", Some(Role::Write)),
            ("RemoveEntries", Some(Role::Write)),
            ("GetEntries", Some(Role::Write)),
        ],
        health: true,
    },
    ServiceSpec {
        name: ATTEMPTS,
        role: Some(Role::Write),
        methods: &[],
        health: true,
    },
    ServiceSpec {
        name: EVENTS,
        role: Some(Role::Write),
        methods: &[],
        health: true,
    },
    ServiceSpec {
        name: AUDIT,
        role: Some(Role::Admin),
        methods: &[],
        health: true,
    },
    ServiceSpec {
        name: PRIVACY,
        role: Some(Role::Admin),
        methods: &[],
        health: true,
    },
    ServiceSpec {
        name: WEBHOOKS,
        role: Some(Role::Admin),
        methods: &[],
        health: true,
    },
    ServiceSpec {
        name: HEALTH,
        role: None,
        methods: &[],
        health: false,
    },
    ServiceSpec {
        name: REFLECTION_V1,
        role: Some(Role::Check),
        methods: &[],
        health: false,
    },
    ServiceSpec {
        name: REFLECTION_V1ALPHA,
        role: Some(Role::Check),
        methods: &[],
        health: false,
    },
];

/// `preflight.v1.DecisionService` of `/preflight.v1.DecisionService/Check`.
pub fn service_name(path: &str) -> &str {
    split(path).0
}

fn split(path: &str) -> (&str, &str) {
    let p = path.strip_prefix('/').unwrap_or(path);
    p.split_once('/').unwrap_or((p, ""))
}

pub fn spec(name: &str) -> Option<&'static ServiceSpec> {
    SERVICES.iter().find(|s| s.name == name)
}

/// The role a call to `path` (`/Service/Method`) needs; None for health checks. A service
/// the table does not name needs admin, so anything added later is closed until listed.
pub fn role(path: &str) -> Option<Role> {
    let (service, method) = split(path);
    match spec(service) {
        None => Some(Role::Admin),
        Some(s) => s
            .methods
            .iter()
            .find(|(m, _)| *m == method)
            .map_or(s.role, |(_, r)| *r),
    }
}

/// The names health reports on: the whole server ("") and each preflight service.
pub fn health_names() -> impl Iterator<Item = &'static str> {
    std::iter::once("").chain(SERVICES.iter().filter(|s| s.health).map(|s| s.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_come_from_the_path() {
        assert_eq!(
            service_name("/preflight.v1.DecisionService/Check"),
            "preflight.v1.DecisionService"
        );
        assert_eq!(
            service_name("/grpc.health.v1.Health/Watch"),
            "grpc.health.v1.Health"
        );
        assert_eq!(service_name("/nothing"), "nothing");
        assert_eq!(service_name(""), "");
    }

    #[test]
    fn method_table_is_closed_by_default() {
        assert_eq!(role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            role("/preflight.v1.DecisionService/CheckStream"),
            Some(Role::Check)
        );
        assert_eq!(
            role("/preflight.v1.ConsentService/RecordConsent"),
            Some(Role::Write)
        );
        assert_eq!(
            role("/preflight.v1.DncService/ImportRegistry"),
            Some(Role::Admin)
        );
        assert_eq!(
            role("/preflight.v1.DncService/ListRegistries"),
            Some(Role::Check)
        );
        assert_eq!(
            role("/preflight.v1.DncService/GetEntries"),
            Some(Role::Write)
        );
        assert_eq!(
            role("/preflight.v1.PrivacyService/SubmitRequest"),
            Some(Role::Admin)
        );
        assert_eq!(
            role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Some(Role::Check)
        );
        assert_eq!(role("/preflight.v2.Anything/X"), Some(Role::Admin));
    }

    #[test]
    fn every_preflight_service_in_the_descriptor_set_is_in_the_table() {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        for file in &set.file {
            for s in &file.service {
                let name = format!("{}.{}", file.package(), s.name());
                assert!(spec(&name).is_some(), "{name} is not in SERVICES");
            }
        }
    }
}
