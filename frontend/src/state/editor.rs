//! The plan editor: a `Plan` being edited, the text of fields that must parse
//! (durations, sizes, label lists), and which problems to show where.
//!
//! Problems come from `Plan::problems()` — the same validation the CLI and
//! the server apply — plus this editor's own parse errors and the details of
//! the server's last refusal (`ApiError::details`), each keyed by the plan
//! field path (`entries[1].profile`) so the page shows it next to that field.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use ensemble_protocol::api::{ApiError, ParamMeta, SHA_PREFIX, ScheduleStatus, StoredPlan, SuiteSummary};
use ensemble_protocol::plan::{Execution, Problem};
use ensemble_protocol::plan::{Notify, NotifyFormat, NotifyOn};
use ensemble_protocol::service::{Readiness, Ready, Service};
use ensemble_protocol::units::{ByteSize, HumanDuration};
use ensemble_protocol::{Entry, Plan, PlanType, Profile, Schedule, Settings};
use yew::Reducible;

/// Settings edited as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingField {
    TestTimeout,
    BarrierTimeout,
    Retries,
    MemoryLimit,
    OutputLimit,
    AttachmentLimit,
    QueueTimeout,
}

impl SettingField {
    pub const ALL: [SettingField; 7] = [
        SettingField::TestTimeout,
        SettingField::Retries,
        SettingField::MemoryLimit,
        SettingField::BarrierTimeout,
        SettingField::OutputLimit,
        SettingField::AttachmentLimit,
        SettingField::QueueTimeout,
    ];

    pub fn path(self) -> &'static str {
        match self {
            SettingField::TestTimeout => "settings.test_timeout",
            SettingField::BarrierTimeout => "settings.barrier_timeout",
            SettingField::Retries => "settings.retries",
            SettingField::MemoryLimit => "settings.memory_limit",
            SettingField::OutputLimit => "settings.output_limit",
            SettingField::AttachmentLimit => "settings.attachment_limit",
            SettingField::QueueTimeout => "settings.queue_timeout",
        }
    }

    fn format(self, s: &Settings) -> String {
        match self {
            SettingField::TestTimeout => s.test_timeout.to_string(),
            SettingField::BarrierTimeout => s.barrier_timeout.to_string(),
            SettingField::Retries => s.retries.to_string(),
            SettingField::MemoryLimit => s.memory_limit.to_string(),
            SettingField::OutputLimit => s.output_limit.to_string(),
            SettingField::AttachmentLimit => s.attachment_limit.to_string(),
            SettingField::QueueTimeout => s.queue_timeout.to_string(),
        }
    }

    fn apply(self, s: &mut Settings, text: &str) -> Result<(), String> {
        match self {
            SettingField::TestTimeout => s.test_timeout = text.parse::<HumanDuration>()?,
            SettingField::BarrierTimeout => s.barrier_timeout = text.parse::<HumanDuration>()?,
            SettingField::MemoryLimit => s.memory_limit = text.parse::<ByteSize>()?,
            SettingField::OutputLimit => s.output_limit = text.parse::<ByteSize>()?,
            SettingField::AttachmentLimit => s.attachment_limit = text.parse::<ByteSize>()?,
            SettingField::QueueTimeout => s.queue_timeout = text.parse::<HumanDuration>()?,
            SettingField::Retries => {
                s.retries = text.trim().parse().map_err(|_| format!("{text:?} is not a whole number"))?
            }
        }
        Ok(())
    }
}

/// An entry field edited as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryText {
    Params,
    Net,
    Env,
    /// The services it may fault.
    Faults,
    Filter,
}

/// A service's fields the editor edits as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceText {
    Name,
    Profile,
    /// One argument per line, the program first.
    Command,
    /// `KEY=value` per line.
    Env,
    ReadyTimeout,
}

impl ServiceText {
    pub fn path(self, i: usize) -> String {
        let field = match self {
            ServiceText::Name => "name",
            ServiceText::Profile => "profile",
            ServiceText::Command => "command",
            ServiceText::Env => "env",
            ServiceText::ReadyTimeout => "ready_timeout",
        };
        format!("services[{i}].{field}")
    }
}

impl EntryText {
    pub fn path(self, i: usize) -> String {
        match self {
            EntryText::Params => format!("entries[{i}].params"),
            EntryText::Net => format!("entries[{i}].capabilities.net"),
            EntryText::Env => format!("entries[{i}].capabilities.env"),
            EntryText::Faults => format!("entries[{i}].capabilities.faults"),
            EntryText::Filter => format!("entries[{i}].filter"),
        }
    }
}

pub enum EditorAction {
    Load(StoredPlan),
    /// The suite catalog, to know which suites use sync.
    Catalog(Vec<SuiteSummary>),
    SetName(String),
    SetDescription(String),
    SetType(PlanType),
    AddSuite(SuiteSummary),
    RemoveEntry(usize),
    /// The entry runs this catalog suite instead (in place of a path, or
    /// of a suite this server does not have); its role and settings stay.
    SwapSuite(usize, SuiteSummary),
    SetRole(usize, String),
    LinkProfile(usize, Option<String>),
    /// Create a profile named after the entry's role and link it.
    NewProfileFor(usize),
    SetEntryText(usize, EntryText, String),
    AddProfile,
    RemoveProfile(usize),
    SetProfileName(usize, String),
    SetProfileLabels(usize, String),
    SetProfileMachine(usize, Option<String>),
    SetProfileCount(usize, String),
    SetExecution(Execution),
    SetFailFast(bool),
    SetSetting(SettingField, String),
    /// A new service on the first profile (a program under test).
    AddService,
    RemoveService(usize),
    SetServiceText(usize, ServiceText, String),
    /// Its readiness check: `tcp`, `http`, `log` or `` (none), and its value.
    SetServiceReady(usize, String, String),
    /// A new schedule in timezone `.0` (the browser's).
    AddSchedule(String),
    RemoveSchedule(usize),
    SetScheduleCron(usize, String),
    SetScheduleTimezone(usize, String),
    /// A new webhook (`[[notify]]`): an empty URL to fill in.
    AddNotify,
    RemoveNotify(usize),
    SetNotifyUrl(usize, String),
    SetNotifyOn(usize, NotifyOn),
    SetNotifyFormat(usize, NotifyFormat),
    /// A save was tried: show every problem.
    Submitted,
    Saved(StoredPlan),
    /// The server refused the plan; its details are problems at field paths.
    Rejected(ApiError),
}

#[derive(Clone, Debug, PartialEq)]
pub struct EditorState {
    /// The stored plan's id; `None` until first saved.
    pub id: Option<String>,
    pub plan: Plan,
    /// What the person typed into fields that must parse, by field path.
    raw: BTreeMap<String, String>,
    parse_errors: BTreeMap<String, String>,
    touched: BTreeSet<String>,
    pub submitted: bool,
    server_problems: Vec<Problem>,
    /// The suites (by sha256) that import the sync interface, as the
    /// catalog says: a sequential plan may have one such entry at most.
    syncing: BTreeSet<String>,
    /// The params each suite (by sha256) declares, as the catalog says:
    /// entries are checked against them (missing, unknown, mistyped).
    declared: BTreeMap<String, Vec<ParamMeta>>,
    /// Changed since loaded or saved.
    pub dirty: bool,
    /// Edits made in this editor so far: a message about an earlier save
    /// is stale once this moves.
    pub edits: u64,
    /// Where the stored plan's schedules stood when loaded or saved.
    pub schedules: Vec<ScheduleStatus>,
}

impl Default for EditorState {
    fn default() -> Self {
        Self::new()
    }
}

impl EditorState {
    /// A new, empty distributed plan.
    pub fn new() -> Self {
        Self {
            id: None,
            plan: Plan {
                name: String::new(),
                description: String::new(),
                kind: PlanType::Distributed,
                settings: Settings::default(),
                profiles: Vec::new(),
                entries: Vec::new(),
                services: Vec::new(),
                notify: Vec::new(),
                schedule: Vec::new(),
            },
            raw: BTreeMap::new(),
            parse_errors: BTreeMap::new(),
            touched: BTreeSet::new(),
            submitted: false,
            server_problems: Vec::new(),
            syncing: BTreeSet::new(),
            declared: BTreeMap::new(),
            dirty: false,
            edits: 0,
            schedules: Vec::new(),
        }
    }

    /// A stored plan, with what the editor already knew of the catalog.
    pub fn loaded(stored: StoredPlan, known: &EditorState) -> Self {
        Self {
            id: Some(stored.id),
            plan: stored.plan,
            schedules: stored.schedules,
            syncing: known.syncing.clone(),
            declared: known.declared.clone(),
            ..Self::new()
        }
    }

    /// What entry `i`'s suite declares it reads, as far as the catalog
    /// knows (`None`: it does not say, or the catalog does not know it).
    pub fn declared_params(&self, i: usize) -> Option<&[ParamMeta]> {
        let entry = self.plan.entries.get(i)?;
        self.declared.get(ensemble_protocol::api::suite_sha(&entry.suite)?).map(Vec::as_slice)
    }

    fn learn(&mut self, meta: &SuiteSummary) {
        if meta.uses_sync() {
            self.syncing.insert(meta.sha256.clone());
        }
        if let Some(params) = &meta.params {
            self.declared.insert(meta.sha256.clone(), params.clone());
        }
    }

    /// Where schedule `i` stands, as the server last said (none once it
    /// is edited, until saved).
    pub fn schedule_status(&self, i: usize) -> Option<&ScheduleStatus> {
        let key = self.plan.schedule.get(i)?.key();
        self.schedules.iter().find(|s| s.schedule == key)
    }

    /// Which entries' suites use sync, as far as the catalog knows.
    fn uses_sync(&self) -> Vec<bool> {
        self.plan
            .entries
            .iter()
            .map(|e| {
                ensemble_protocol::api::suite_sha(&e.suite).is_some_and(|sha| self.syncing.contains(sha))
            })
            .collect()
    }

    /// A problem that shows the moment it arises, untouched field or not:
    /// the one at `path` that needs the catalog (sequential execution of
    /// entries that coordinate).
    pub fn sync_problem(&self, path: &str) -> Option<String> {
        self.plan.sync_problems(&self.uses_sync()).into_iter().find(|p| p.path == path).map(|p| p.message)
    }

    /// Every problem, by field path (several at one path are joined).
    pub fn problems(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        let mut add = |path: &str, msg: &str| {
            out.entry(path.to_string())
                .and_modify(|m| {
                    m.push_str("; ");
                    m.push_str(msg)
                })
                .or_insert_with(|| msg.to_string());
        };
        for (path, msg) in &self.parse_errors {
            add(path, msg);
        }
        let mut sync = self.plan.sync_problems(&self.uses_sync());
        let declared: Vec<Option<&[ParamMeta]>> =
            (0..self.plan.entries.len()).map(|i| self.declared_params(i)).collect();
        sync.extend(self.plan.param_problems(&declared));
        for p in self.plan.problems().iter().chain(&sync).chain(&self.server_problems) {
            // A field that does not parse shows that, not the stale value's problem.
            if !self.parse_errors.keys().any(|k| within(&p.path, k)) {
                add(&p.path, &p.message);
            }
        }
        out
    }

    pub fn is_valid(&self) -> bool {
        self.problems().is_empty()
    }

    /// The problem to show beside the field at `path` (covering its sub-paths,
    /// e.g. `entries[0].capabilities.net[2]` for the net field), once the
    /// field was touched or a save was tried.
    /// Whether the person has edited the field at `path`.
    pub fn is_touched(&self, path: &str) -> bool {
        self.touched.contains(path)
    }

    pub fn error(&self, path: &str) -> Option<String> {
        if !self.submitted && !self.touched.contains(path) {
            return None;
        }
        let msgs: Vec<String> = self
            .problems()
            .into_iter()
            .filter(|(p, _)| within(p, path))
            .map(|(p, m)| if p == path { m } else { format!("{}: {m}", &p[path.len()..]) })
            .collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    }

    /// The text a parsed field shows: what was typed, or the plan's value.
    pub fn setting_text(&self, f: SettingField) -> String {
        self.raw.get(f.path()).cloned().unwrap_or_else(|| f.format(&self.plan.settings))
    }

    pub fn entry_text(&self, i: usize, f: EntryText) -> String {
        if let Some(t) = self.raw.get(&f.path(i)) {
            return t.clone();
        }
        let Some(e) = self.plan.entries.get(i) else { return String::new() };
        match f {
            EntryText::Params => {
                e.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
            }
            EntryText::Net => e.capabilities.net.join(", "),
            EntryText::Env => e.capabilities.env.join(", "),
            EntryText::Faults => e.capabilities.faults.join(", "),
            EntryText::Filter => e.filter.clone().unwrap_or_default(),
        }
    }

    /// The text a service's field shows: what was typed, or the plan's value.
    pub fn service_text(&self, i: usize, f: ServiceText) -> String {
        if let Some(t) = self.raw.get(&f.path(i)) {
            return t.clone();
        }
        let Some(svc) = self.plan.services.get(i) else { return String::new() };
        match f {
            ServiceText::Name => svc.name.clone(),
            ServiceText::Profile => svc.profile.clone(),
            ServiceText::Command => svc.command.join("\n"),
            ServiceText::Env => {
                svc.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
            }
            ServiceText::ReadyTimeout => svc.ready_timeout.to_string(),
        }
    }

    /// A service's readiness check as (kind, value): `("tcp", "{port}")`,
    /// or `("", "")` for none.
    pub fn service_ready(&self, i: usize) -> (String, String) {
        match self.plan.services.get(i).map(|s| s.readiness()) {
            Some(Readiness::Tcp(v)) => ("tcp".into(), v),
            Some(Readiness::Http(v)) => ("http".into(), v),
            Some(Readiness::Log(v)) => ("log".into(), v),
            _ => (String::new(), String::new()),
        }
    }

    pub fn labels_text(&self, j: usize) -> String {
        if let Some(t) = self.raw.get(&format!("profiles[{j}].labels")) {
            return t.clone();
        }
        self.plan.profiles.get(j).map(|p| format_labels(&p.labels)).unwrap_or_default()
    }

    pub fn count_text(&self, j: usize) -> String {
        if let Some(t) = self.raw.get(&format!("profiles[{j}].count")) {
            return t.clone();
        }
        self.plan.profiles.get(j).map(|p| p.count.to_string()).unwrap_or_default()
    }

    /// Sets a parsed field: keeps the text, applies it when it parses.
    fn parsed(
        &mut self,
        path: String,
        text: String,
        apply: impl FnOnce(&mut Plan, &str) -> Result<(), String>,
    ) {
        match apply(&mut self.plan, &text) {
            Ok(()) => self.parse_errors.remove(&path),
            Err(e) => self.parse_errors.insert(path.clone(), e),
        };
        self.raw.insert(path.clone(), text);
        self.touched.insert(path);
    }

    /// Forgets per-field text and marks under a list whose indices shift.
    fn forget_under(&mut self, prefix: &str) {
        self.raw.retain(|k, _| !k.starts_with(prefix));
        self.parse_errors.retain(|k, _| !k.starts_with(prefix));
        self.touched.retain(|k| !k.starts_with(prefix));
    }

    fn unique_role(&self, base: &str) -> String {
        let base: String = base
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
            .collect();
        let base = if base.is_empty() { "suite".to_string() } else { base };
        let taken: BTreeSet<String> = self.plan.entries.iter().map(Entry::role_name).collect();
        unique(&base, |n| taken.contains(n))
    }

    fn unique_profile(&self, base: &str) -> String {
        unique(base, |n| self.plan.profiles.iter().any(|p| p.name == n))
    }
}

/// `base`, or `base-2`, `base-3`, ... whichever is free.
fn unique(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (2..).map(|n| format!("{base}-{n}")).find(|n| !taken(n)).expect("some name is free")
}

/// Whether `path` is `field` or inside it.
fn within(path: &str, field: &str) -> bool {
    path == field
        || path.strip_prefix(field).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// `k=v, k2=v2` (commas or new lines between pairs).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in text.split([',', '\n']).map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not key=value (e.g. tier=server)"));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(format!("{pair:?} has no key"));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label {k:?} is given twice"));
        }
    }
    Ok(out)
}

pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// One `key=value` per line.
pub fn parse_params(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("{line:?} is not key=value"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("{line:?} has no key"));
        }
        if out.insert(k.to_string(), v.trim().to_string()).is_some() {
            return Err(format!("param {k:?} is given twice"));
        }
    }
    Ok(out)
}

fn parse_list(text: &str) -> Vec<String> {
    text.split([',', '\n', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// A name for a copy of a plan that no plan has yet.
pub fn copy_name(name: &str, existing: &[&str]) -> String {
    let first = format!("{name} (copy)");
    if !existing.contains(&first.as_str()) {
        return first;
    }
    (2..)
        .map(|n| format!("{name} (copy {n})"))
        .find(|n| !existing.contains(&n.as_str()))
        .expect("a free name")
}

impl Reducible for EditorState {
    type Action = EditorAction;

    fn reduce(self: Rc<Self>, action: EditorAction) -> Rc<Self> {
        let mut s = (*self).clone();
        let edit = !matches!(
            action,
            EditorAction::Load(_)
                | EditorAction::Catalog(_)
                | EditorAction::Submitted
                | EditorAction::Saved(_)
                | EditorAction::Rejected(_)
        );
        if edit {
            s.dirty = true;
            s.edits += 1;
            s.server_problems.clear();
        }
        match action {
            EditorAction::Load(stored) => s = EditorState::loaded(stored, &s),
            EditorAction::Catalog(suites) => {
                s.syncing.clear();
                s.declared.clear();
                for meta in &suites {
                    s.learn(meta);
                }
            }
            EditorAction::SetName(name) => {
                s.plan.name = name;
                s.touched.insert("name".into());
            }
            EditorAction::SetDescription(text) => {
                s.plan.description = text;
                s.touched.insert("description".into());
            }
            EditorAction::SetType(kind) => s.plan.kind = kind,
            EditorAction::AddSuite(meta) => {
                s.learn(&meta);
                let role = s.unique_role(&meta.name.replace('_', "-"));
                s.plan.entries.push(Entry {
                    suite: format!("{SHA_PREFIX}{}", meta.sha256),
                    profile: None,
                    role: Some(role),
                    params: BTreeMap::new(),
                    capabilities: Default::default(),
                    filter: None,
                    tests: None,
                    split: None,
                });
            }
            EditorAction::SwapSuite(i, meta) => {
                s.learn(&meta);
                if let Some(e) = s.plan.entries.get_mut(i) {
                    if e.role.is_none() {
                        // Its role was its path's name: it keeps it.
                        e.role = Some(e.role_name());
                    }
                    e.suite = format!("{SHA_PREFIX}{}", meta.sha256);
                }
            }
            EditorAction::RemoveEntry(i) if i < s.plan.entries.len() => {
                s.plan.entries.remove(i);
                s.forget_under("entries[");
            }
            EditorAction::SetRole(i, role) => {
                if let Some(e) = s.plan.entries.get_mut(i) {
                    let role = role.trim().to_string();
                    e.role = (!role.is_empty()).then_some(role);
                    s.touched.insert(format!("entries[{i}].role"));
                }
            }
            EditorAction::LinkProfile(i, profile) => {
                if let Some(e) = s.plan.entries.get_mut(i) {
                    e.profile = profile;
                    s.touched.insert(format!("entries[{i}].profile"));
                }
            }
            EditorAction::NewProfileFor(i) => {
                if let Some(role) = s.plan.entries.get(i).map(Entry::role_name) {
                    let name = s.unique_profile(&format!("{role}-machine"));
                    s.plan.profiles.push(Profile {
                        name: name.clone(),
                        labels: BTreeMap::new(),
                        machine: None,
                        count: 1,
                    });
                    s.plan.entries[i].profile = Some(name);
                }
            }
            EditorAction::SetEntryText(i, field, text) => {
                if i < s.plan.entries.len() {
                    s.parsed(field.path(i), text, |plan, t| {
                        let e = &mut plan.entries[i];
                        match field {
                            EntryText::Params => e.params = parse_params(t)?,
                            EntryText::Net => e.capabilities.net = parse_list(t),
                            EntryText::Env => e.capabilities.env = parse_list(t),
                            EntryText::Faults => e.capabilities.faults = parse_list(t),
                            // Checked with the rest of the plan (its problems).
                            EntryText::Filter => {
                                e.filter = Some(t.trim().to_string()).filter(|f| !f.is_empty())
                            }
                        }
                        Ok(())
                    });
                }
            }
            EditorAction::AddProfile => {
                let name = s.unique_profile("profile");
                s.plan.profiles.push(Profile { name, labels: BTreeMap::new(), machine: None, count: 1 });
            }
            EditorAction::RemoveProfile(j) if j < s.plan.profiles.len() => {
                let gone = s.plan.profiles.remove(j).name;
                for e in &mut s.plan.entries {
                    if e.profile.as_deref() == Some(gone.as_str()) {
                        e.profile = None;
                    }
                }
                s.forget_under("profiles[");
            }
            EditorAction::SetProfileName(j, name) => {
                if let Some(p) = s.plan.profiles.get_mut(j) {
                    let old = std::mem::replace(&mut p.name, name.trim().to_string());
                    let new = p.name.clone();
                    // Links follow the profile through a rename.
                    for e in &mut s.plan.entries {
                        if e.profile.as_deref() == Some(old.as_str()) {
                            e.profile = Some(new.clone());
                        }
                    }
                    for svc in &mut s.plan.services {
                        if svc.profile == old {
                            svc.profile = new.clone();
                        }
                    }
                    s.touched.insert(format!("profiles[{j}].name"));
                }
            }
            EditorAction::SetProfileLabels(j, text) => {
                if j < s.plan.profiles.len() {
                    s.parsed(format!("profiles[{j}].labels"), text, |plan, t| {
                        plan.profiles[j].labels = parse_labels(t)?;
                        Ok(())
                    });
                }
            }
            EditorAction::SetProfileMachine(j, machine) => {
                if let Some(p) = s.plan.profiles.get_mut(j) {
                    p.machine = machine.filter(|m| !m.is_empty());
                    s.touched.insert(format!("profiles[{j}].count"));
                }
            }
            EditorAction::SetProfileCount(j, text) => {
                if j < s.plan.profiles.len() {
                    s.parsed(format!("profiles[{j}].count"), text, |plan, t| {
                        plan.profiles[j].count =
                            t.trim().parse().map_err(|_| format!("{t:?} is not a whole number"))?;
                        Ok(())
                    });
                }
            }
            EditorAction::SetExecution(x) => s.plan.settings.execution = x,
            EditorAction::SetFailFast(on) => s.plan.settings.fail_fast = on,
            EditorAction::SetSetting(f, text) => {
                s.parsed(f.path().to_string(), text, |plan, t| f.apply(&mut plan.settings, t));
            }
            EditorAction::AddService => {
                let taken: BTreeSet<String> = s.plan.services.iter().map(|x| x.name.clone()).collect();
                let name = unique("db", |n| taken.contains(n));
                let profile = s.plan.profiles.first().map(|p| p.name.clone()).unwrap_or_default();
                s.plan.services.push(Service {
                    name,
                    profile,
                    command: Vec::new(),
                    ready: Some(Ready { tcp: Some("{port}".into()), ..Ready::default() }),
                    ready_timeout: HumanDuration::from_secs(30),
                    stop_timeout: HumanDuration::from_secs(10),
                    env: BTreeMap::new(),
                });
            }
            EditorAction::RemoveService(i) if i < s.plan.services.len() => {
                s.plan.services.remove(i);
                s.forget_under("services[");
            }
            EditorAction::SetServiceText(i, field, text) => {
                if i < s.plan.services.len() {
                    s.parsed(field.path(i), text, |plan, t| {
                        let svc = &mut plan.services[i];
                        match field {
                            ServiceText::Name => svc.name = t.trim().to_string(),
                            ServiceText::Profile => svc.profile = t.trim().to_string(),
                            ServiceText::Command => {
                                let mut args: Vec<String> =
                                    t.lines().map(|l| l.trim_end_matches('\r').to_string()).collect();
                                while args.last().is_some_and(|a| a.trim().is_empty()) {
                                    args.pop();
                                }
                                svc.command = args;
                            }
                            ServiceText::Env => svc.env = parse_params(t)?,
                            ServiceText::ReadyTimeout => svc.ready_timeout = t.trim().parse()?,
                        }
                        Ok(())
                    });
                }
            }
            EditorAction::SetServiceReady(i, kind, value) => {
                if let Some(svc) = s.plan.services.get_mut(i) {
                    svc.ready = match kind.as_str() {
                        "tcp" => Some(Ready { tcp: Some(value), ..Ready::default() }),
                        "http" => Some(Ready { http: Some(value), ..Ready::default() }),
                        "log" => Some(Ready { log: Some(value), ..Ready::default() }),
                        _ => None,
                    };
                    s.touched.insert(format!("services[{i}].ready"));
                }
            }
            EditorAction::AddSchedule(timezone) => {
                s.plan.schedule.push(Schedule { cron: "0 2 * * *".into(), timezone });
            }
            EditorAction::RemoveSchedule(i) if i < s.plan.schedule.len() => {
                s.plan.schedule.remove(i);
                s.forget_under("schedule[");
            }
            EditorAction::SetScheduleCron(i, cron) => {
                if let Some(x) = s.plan.schedule.get_mut(i) {
                    x.cron = cron;
                    s.touched.insert(format!("schedule[{i}].cron"));
                }
            }
            EditorAction::SetScheduleTimezone(i, timezone) => {
                if let Some(x) = s.plan.schedule.get_mut(i) {
                    x.timezone = timezone.trim().to_string();
                    s.touched.insert(format!("schedule[{i}].timezone"));
                }
            }
            EditorAction::AddNotify => {
                s.plan.notify.push(Notify {
                    url: String::new(),
                    on: NotifyOn::default(),
                    format: NotifyFormat::default(),
                });
            }
            EditorAction::RemoveNotify(i) if i < s.plan.notify.len() => {
                s.plan.notify.remove(i);
                s.forget_under("notify[");
            }
            EditorAction::SetNotifyUrl(i, url) => {
                if let Some(n) = s.plan.notify.get_mut(i) {
                    n.url = url.trim().to_string();
                    s.touched.insert(format!("notify[{i}].url"));
                }
            }
            EditorAction::SetNotifyOn(i, on) => {
                if let Some(n) = s.plan.notify.get_mut(i) {
                    n.on = on;
                }
            }
            EditorAction::SetNotifyFormat(i, format) => {
                if let Some(n) = s.plan.notify.get_mut(i) {
                    n.format = format;
                }
            }
            EditorAction::Submitted => s.submitted = true,
            EditorAction::Saved(stored) => {
                // Keep what is typed; the stored plan is what was sent.
                s.id = Some(stored.id);
                s.plan = stored.plan;
                s.schedules = stored.schedules;
                s.dirty = false;
                s.server_problems.clear();
            }
            EditorAction::Rejected(error) => {
                s.submitted = true;
                s.server_problems = error.details().to_vec();
            }
            EditorAction::RemoveEntry(_)
            | EditorAction::RemoveProfile(_)
            | EditorAction::RemoveService(_)
            | EditorAction::RemoveSchedule(_)
            | EditorAction::RemoveNotify(_) => {}
        }
        Rc::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::api::ErrorKind;

    fn suite(name: &str, fill: char) -> SuiteSummary {
        SuiteSummary {
            sha256: std::iter::repeat_n(fill, 64).collect(),
            name: name.into(),
            size: 1,
            kind: "suite".into(),
            test_count: 0,
            imports: vec![],
            exports: vec![],
            uploaded_us: 0,
            params: None,
            abi: None,
        }
    }

    fn apply(s: Rc<EditorState>, actions: Vec<EditorAction>) -> Rc<EditorState> {
        actions.into_iter().fold(s, |s, a| s.reduce(a))
    }

    #[test]
    fn services_are_edited_like_entries_and_follow_their_profile() {
        let s = apply(
            Rc::new(EditorState::new()),
            vec![
                EditorAction::SetName("redis".into()),
                EditorAction::AddSuite(suite("resp-client", 'r')),
                EditorAction::NewProfileFor(0),
                EditorAction::AddProfile,
                EditorAction::AddService,
                EditorAction::SetServiceText(0, ServiceText::Profile, "profile".into()),
                EditorAction::SetServiceText(
                    0,
                    ServiceText::Command,
                    "redis-server\n--port\n{port}\n--save\n\n".into(),
                ),
                EditorAction::SetServiceText(0, ServiceText::Env, "MODE=test".into()),
                EditorAction::SetServiceReady(0, "log".into(), "Ready to accept".into()),
                EditorAction::SetServiceText(0, ServiceText::ReadyTimeout, "soon".into()),
            ],
        );
        // A duration that does not parse stays on its field, with its text.
        assert!(s.problems()["services[0].ready_timeout"].contains("invalid duration"));
        assert_eq!(s.service_text(0, ServiceText::ReadyTimeout), "soon");
        let s = apply(
            s,
            vec![
                EditorAction::SetServiceText(0, ServiceText::ReadyTimeout, "45s".into()),
                EditorAction::SetProfileName(1, "db-box".into()),
            ],
        );
        assert!(s.is_valid(), "{:?}", s.problems());
        let svc = &s.plan.services[0];
        assert_eq!(svc.profile, "db-box", "the link follows a rename");
        assert_eq!(svc.command, ["redis-server", "--port", "{port}", "--save"]);
        assert_eq!(svc.env["MODE"], "test");
        assert_eq!(s.service_ready(0), ("log".to_string(), "Ready to accept".to_string()));
        assert_eq!(&Plan::from_toml(&s.plan.to_toml()).unwrap(), &s.plan);
        // A bad name is told at its field.
        let s = apply(
            s,
            vec![EditorAction::SetServiceText(0, ServiceText::Name, "DB".into()), EditorAction::Submitted],
        );
        assert!(s.error("services[0].name").is_some_and(|e| e.contains("not a valid service name")));
        let s = apply(s, vec![EditorAction::RemoveService(0)]);
        assert!(s.plan.services.is_empty());
    }

    #[test]
    fn params_are_checked_against_what_the_catalog_says_the_suite_declares() {
        use ensemble_protocol::api::ParamType;
        let mut basics = suite("basics", 'b');
        basics.params = Some(vec![ParamMeta {
            name: "greeting".into(),
            kind: ParamType::String,
            required: true,
            default: None,
            help: "what to say".into(),
        }]);
        let s = apply(Rc::new(EditorState::new()), vec![EditorAction::AddSuite(basics.clone())]);
        assert_eq!(s.declared_params(0).map(<[ParamMeta]>::len), Some(1));
        let problems = s.problems();
        assert!(problems["entries[0].params"].contains("requires the param `greeting`"), "{problems:?}");
        let s = apply(
            s,
            vec![EditorAction::SetEntryText(0, EntryText::Params, "greeting=hi\ncolour=red".into())],
        );
        let problems = s.problems();
        assert!(!problems.contains_key("entries[0].params"), "{problems:?}");
        assert!(problems["entries[0].params.colour"].contains("no param `colour`"), "{problems:?}");
        // A suite that does not say (ABI 0.1) is not checked; a catalog
        // that learns otherwise is.
        let old = suite("old", 'o');
        let s = apply(Rc::new(EditorState::new()), vec![EditorAction::AddSuite(old.clone())]);
        assert!(s.declared_params(0).is_none());
        assert!(!s.problems().keys().any(|p| p.starts_with("entries[0].params")));
        let s = apply(s, vec![EditorAction::Catalog(vec![basics, old])]);
        assert!(s.declared_params(0).is_none());
    }

    #[test]
    fn the_seed_flow_builds_a_valid_distributed_plan() {
        let s = apply(
            Rc::new(EditorState::new()),
            vec![
                EditorAction::SetName("kv across two boxes".into()),
                EditorAction::SetType(PlanType::Distributed),
                EditorAction::AddSuite(suite("kv-server", 'a')),
                EditorAction::AddSuite(suite("kv-client", 'b')),
            ],
        );
        // Not linked yet: the same problem the CLI reports, at the same field.
        let problems = s.problems();
        assert!(problems["entries[0].profile"].contains("links every entry to a profile"), "{problems:?}");
        assert_eq!(s.error("entries[0].profile"), None, "shown only once touched or submitted");
        let s = apply(
            s,
            vec![
                EditorAction::NewProfileFor(0),
                EditorAction::NewProfileFor(1),
                EditorAction::SetProfileLabels(0, "tier=server".into()),
                EditorAction::SetProfileLabels(1, "tier = client".into()),
                EditorAction::SetSetting(SettingField::TestTimeout, "30s".into()),
                EditorAction::SetSetting(SettingField::Retries, "2".into()),
                EditorAction::SetFailFast(true),
            ],
        );
        assert!(s.is_valid(), "{:?}", s.problems());
        let plan = &s.plan;
        assert_eq!(plan.entries[0].profile.as_deref(), Some("kv-server-machine"));
        assert_eq!(plan.entries[1].profile.as_deref(), Some("kv-client-machine"));
        assert_eq!(plan.profiles[1].labels["tier"], "client");
        assert_eq!(plan.entries[0].suite, format!("sha256:{}", "a".repeat(64)));
        assert_eq!(plan.settings.test_timeout.as_millis_u64(), 30_000);
        assert_eq!(plan.settings.retries, 2);
        // What the editor makes, the TOML reader takes back unchanged.
        assert_eq!(&Plan::from_toml(&plan.to_toml()).unwrap(), plan);
    }

    #[test]
    fn parse_errors_stay_on_their_field_and_keep_the_text() {
        let s = apply(
            Rc::new(EditorState::new()),
            vec![
                EditorAction::SetSetting(SettingField::TestTimeout, "soon".into()),
                EditorAction::SetSetting(SettingField::MemoryLimit, "12 parsecs".into()),
            ],
        );
        assert_eq!(s.setting_text(SettingField::TestTimeout), "soon");
        assert!(s.error("settings.test_timeout").unwrap().contains("invalid duration"));
        assert!(s.error("settings.memory_limit").unwrap().contains("invalid size"));
        // The plan keeps its last good value.
        assert_eq!(s.plan.settings.test_timeout.as_millis_u64(), 60_000);
        let s = s.reduce(EditorAction::SetSetting(SettingField::TestTimeout, "2m".into()));
        assert_eq!(s.error("settings.test_timeout"), None);
        assert_eq!(s.plan.settings.test_timeout.as_millis_u64(), 120_000);
        let s = s.reduce(EditorAction::SetSetting(SettingField::MemoryLimit, "0".into()));
        assert!(s.error("settings.memory_limit").unwrap().contains("out of range"));
    }

    #[test]
    fn submitting_shows_every_problem_and_nested_ones_on_their_field() {
        let s = apply(
            Rc::new(EditorState::new()),
            vec![
                EditorAction::AddSuite(suite("kv-server", 'a')),
                EditorAction::SetEntryText(0, EntryText::Net, "127.0.0.1:80, nohost".into()),
                EditorAction::SetEntryText(0, EntryText::Params, "keys=100\nbroken".into()),
            ],
        );
        assert!(s.error("name").is_none());
        let s = s.reduce(EditorAction::Submitted);
        assert!(s.error("name").unwrap().contains("needs a name"));
        assert!(s.error("entries[0].capabilities.net").unwrap().contains("[1]: \"nohost\" is not host:port"));
        assert!(s.error("entries[0].params").unwrap().contains("\"broken\" is not key=value"));
        assert!(s.error("entries[0].profile").is_some());
    }

    #[test]
    fn renaming_and_removing_profiles_keeps_links_right() {
        let s = apply(
            Rc::new(EditorState::new()),
            vec![
                EditorAction::AddSuite(suite("a", 'a')),
                EditorAction::AddSuite(suite("a", 'b')),
                EditorAction::NewProfileFor(0),
                EditorAction::LinkProfile(1, Some("a-machine".into())),
                EditorAction::SetProfileName(0, "servers".into()),
            ],
        );
        assert_eq!(s.plan.entries[1].role.as_deref(), Some("a-2"), "roles are unique");
        assert_eq!(s.plan.entries[0].profile.as_deref(), Some("servers"));
        assert_eq!(s.plan.entries[1].profile.as_deref(), Some("servers"));
        let s = s.reduce(EditorAction::RemoveProfile(0));
        assert!(s.plan.entries.iter().all(|e| e.profile.is_none()));
        let s = s.reduce(EditorAction::SetProfileLabels(0, "x".into()));
        assert!(s.plan.profiles.is_empty(), "editing a removed profile is ignored");
    }

    #[test]
    fn schedules_are_added_edited_and_show_their_status_until_changed() {
        let s = apply(
            Rc::new(EditorState::new()),
            vec![
                EditorAction::AddSchedule("Europe/Berlin".into()),
                EditorAction::AddSchedule("UTC".into()),
                EditorAction::SetScheduleCron(1, "*/30 * * * * *".into()),
                EditorAction::SetScheduleTimezone(1, " Asia/Tokyo ".into()),
            ],
        );
        let keys: Vec<String> = s.plan.schedule.iter().map(Schedule::key).collect();
        assert_eq!(keys, ["0 2 * * * (Europe/Berlin)", "*/30 * * * * * (Asia/Tokyo)"]);
        let status = |key: &str| ScheduleStatus {
            schedule: key.into(),
            next_us: Some(1),
            last_fired_us: None,
            last_run: None,
            error: None,
        };
        let mut stored = StoredPlan {
            id: "p".into(),
            plan: s.plan.clone(),
            created_us: 0,
            updated_us: 0,
            schedules: vec![status("0 2 * * * (Europe/Berlin)"), status("*/30 * * * * * (Asia/Tokyo)")],
        };
        stored.plan.name = "p".into();
        let s = s.reduce(EditorAction::Saved(stored));
        assert!(s.schedule_status(0).is_some() && s.schedule_status(1).is_some());
        // Edited: the status is the stored schedule's, no longer this one's.
        let s = s.reduce(EditorAction::SetScheduleCron(0, "0 3 * * *".into()));
        assert!(s.schedule_status(0).is_none());
        let s = s.reduce(EditorAction::RemoveSchedule(0));
        assert_eq!(s.plan.schedule.len(), 1);
        assert!(s.schedule_status(0).is_some(), "the remaining one is still as stored");
    }

    #[test]
    fn server_problems_show_at_their_fields_until_the_next_edit() {
        let s = apply(
            Rc::new(EditorState::new()),
            vec![EditorAction::SetName("kv".into()), EditorAction::AddSuite(suite("kv-server", 'a'))],
        );
        let problem = |path: &str, message: &str| Problem { path: path.into(), message: message.into() };
        let refusal = ApiError::new(ErrorKind::InvalidPlan, "invalid plan: 2 problems").with_details(vec![
            problem("name", "taken"),
            problem("entries[0].capabilities.net[0]", "no such host"),
        ]);
        // As the server sends it.
        let refusal: ApiError = serde_json::from_value(serde_json::to_value(&refusal).unwrap()).unwrap();
        let s = s.reduce(EditorAction::Rejected(refusal));
        assert!(s.submitted, "a refusal shows every problem");
        assert!(s.error("name").unwrap().contains("taken"));
        assert_eq!(s.error("entries[0].capabilities.net").as_deref(), Some("[0]: no such host"));
        assert!(s.problems()["entries[0].capabilities.net[0]"].contains("no such host"));
        let s = s.reduce(EditorAction::SetName("x".into()));
        assert!(s.error("name").is_none_or(|m| !m.contains("taken")));
        assert_eq!(s.error("entries[0].capabilities.net"), None);
    }

    #[test]
    fn labels_params_and_copy_names() {
        assert_eq!(parse_labels("a=1, b = 2\nc=").unwrap().len(), 3);
        assert!(parse_labels("a=1, a=2").unwrap_err().contains("twice"));
        assert!(parse_labels("tier").unwrap_err().contains("key=value"));
        assert_eq!(parse_params("x = 1\n\ny=a,b").unwrap()["y"], "a,b");
        assert_eq!(copy_name("demo", &["demo"]), "demo (copy)");
        assert_eq!(copy_name("demo", &["demo", "demo (copy)"]), "demo (copy 2)");
    }

    #[test]
    fn sequential_execution_of_coordinating_suites_shows_at_the_execution_setting_at_once() {
        let mut server = suite("kv-server", 'a');
        server.imports = vec!["ensemble:suite/sync@0.1.0".into(), "ensemble:suite/context@0.1.0".into()];
        let mut client = suite("kv-client", 'b');
        client.imports = vec!["ensemble:suite/sync@0.1.0".into()];
        let s = apply(
            Rc::new(EditorState::new()),
            vec![
                EditorAction::Catalog(vec![server.clone(), client.clone()]),
                EditorAction::SetName("kv".into()),
                EditorAction::AddSuite(server),
                EditorAction::AddSuite(client),
                EditorAction::NewProfileFor(0),
                EditorAction::NewProfileFor(1),
            ],
        );
        assert!(s.is_valid(), "{:?}", s.problems());
        let s = apply(s, vec![EditorAction::SetExecution(Execution::Sequential)]);
        let shown = s.sync_problem("settings.execution").expect("shown before any save");
        assert!(shown.contains("entries 0 (kv-server), 1 (kv-client) use sync"), "{shown}");
        assert!(!s.is_valid(), "and it blocks saving");
        // A plan loaded later keeps knowing the catalog.
        let stored = StoredPlan {
            id: "p".into(),
            plan: s.plan.clone(),
            created_us: 0,
            updated_us: 0,
            schedules: Vec::new(),
        };
        let s = apply(s, vec![EditorAction::Load(stored)]);
        assert!(s.sync_problem("settings.execution").is_some());
        let s = apply(s, vec![EditorAction::SetExecution(Execution::Parallel)]);
        assert_eq!(s.sync_problem("settings.execution"), None);
    }
}
