//! What every page shares: the access token, whether the server accepts it,
//! the machines online and the suite catalog.

use std::rc::Rc;

use ensemble_protocol::Profile;
use ensemble_protocol::api::{MachineStatus, SuiteSummary};
use yew::Reducible;

use crate::services::Api;

#[derive(Clone, Debug, PartialEq)]
pub enum AuthState {
    /// Not asked yet.
    Unknown,
    /// The server answered with the current token (or needs none).
    Accepted,
    /// The server wants a token; `refused` says the last one was wrong.
    Needed { refused: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub api: Api,
    pub auth: AuthState,
    pub machines: Vec<MachineStatus>,
    /// Whether `machines` has been loaded at least once.
    pub machines_loaded: bool,
    pub suites: Vec<SuiteSummary>,
    /// A message from the last failed background call (server down, ...).
    pub trouble: Option<String>,
}

pub enum SessionAction {
    /// A token to try (from the prompt or local storage).
    UseToken(Option<String>),
    /// The server refused the token: ask for one.
    AuthRequired,
    Machines(Vec<MachineStatus>),
    Suites(Vec<SuiteSummary>),
    /// A suite was uploaded (or found already stored).
    SuiteStored(SuiteSummary),
    Trouble(Option<String>),
}

impl Session {
    pub fn new(token: Option<String>) -> Self {
        Self {
            api: Api::new(token),
            auth: AuthState::Unknown,
            machines: Vec::new(),
            machines_loaded: false,
            suites: Vec::new(),
            trouble: None,
        }
    }

    /// Machines that can take work now and match the profile.
    pub fn matching(&self, profile: &Profile) -> Vec<&MachineStatus> {
        self.machines.iter().filter(|m| m.state.is_connected() && profile.matches(&m.info)).collect()
    }

    pub fn suite(&self, sha256: &str) -> Option<&SuiteSummary> {
        self.suites.iter().find(|s| s.sha256 == sha256)
    }
}

impl Reducible for Session {
    type Action = SessionAction;

    fn reduce(self: Rc<Self>, action: SessionAction) -> Rc<Self> {
        let mut s = (*self).clone();
        match action {
            SessionAction::UseToken(token) => {
                s.api = Api::new(token);
                s.auth = AuthState::Unknown;
            }
            SessionAction::AuthRequired => {
                // Refused with a token in hand means that token is wrong.
                s.auth = AuthState::Needed { refused: s.api.token.is_some() };
            }
            SessionAction::Machines(m) => {
                s.auth = AuthState::Accepted;
                s.machines = m;
                s.machines_loaded = true;
                s.trouble = None;
            }
            SessionAction::Suites(list) => s.suites = list,
            SessionAction::SuiteStored(meta) => {
                if !s.suites.iter().any(|x| x.sha256 == meta.sha256) {
                    s.suites.push(meta);
                }
            }
            SessionAction::Trouble(t) => s.trouble = t,
        }
        Rc::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::api::MachineState;
    use ensemble_protocol::machine::{Facts, MachineInfo};

    fn machine(name: &str, tier: &str, state: MachineState) -> MachineStatus {
        MachineStatus {
            info: MachineInfo {
                name: name.into(),
                labels: [("tier".to_string(), tier.to_string())].into(),
                slots: 1,
                facts: Facts::default(),
                allow_exec: Vec::new(),
            },
            state,
            clock_offset_us: 0,
            clock_uncertainty_us: 0,
            running: vec![],
            last_seen_us: 0,
            lost_at_us: None,
            local: false,
        }
    }

    #[test]
    fn a_refused_token_is_told_apart_from_no_token() {
        let s = Rc::new(Session::new(None)).reduce(SessionAction::AuthRequired);
        assert_eq!(s.auth, AuthState::Needed { refused: false });
        let s = s.reduce(SessionAction::UseToken(Some("wrong".into()))).reduce(SessionAction::AuthRequired);
        assert_eq!(s.auth, AuthState::Needed { refused: true });
        let s =
            s.reduce(SessionAction::UseToken(Some("right".into()))).reduce(SessionAction::Machines(vec![]));
        assert_eq!(s.auth, AuthState::Accepted);
        assert_eq!(s.api.token.as_deref(), Some("right"));
    }

    #[test]
    fn matching_counts_only_machines_that_can_work() {
        let mut s = Session::new(None);
        s.machines = vec![
            machine("a", "server", MachineState::Online),
            machine("b", "server", MachineState::Offline),
            machine("c", "client", MachineState::Busy),
        ];
        let server = Profile {
            name: "p".into(),
            labels: [("tier".to_string(), "server".to_string())].into(),
            machine: None,
            count: 1,
        };
        assert_eq!(s.matching(&server).len(), 1);
        let any = Profile { labels: Default::default(), ..server.clone() };
        assert_eq!(s.matching(&any).len(), 2);
        let pinned = Profile { machine: Some("c".into()), ..server };
        assert_eq!(s.matching(&pinned).len(), 1);
    }
}
