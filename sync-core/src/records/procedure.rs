//! The case procedure: states, transitions and the fold that derives a case's state.
//!
//! The state machine follows DOMAIN.md §2. The fold never refuses an event (what happened in
//! the field happened); an event whose precondition fails, or two transitions written
//! concurrently from the same point, become [`TransitionIssue`]s that validation reports.

use std::collections::BTreeMap;

use crate::records::case_file::TimelineEvent;

/// Summary (简易程序, on-site decision) or general (普通程序) procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Procedure {
    /// 简易程序.
    Summary,
    /// 普通程序.
    General,
}

impl Procedure {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Summary => "summary",
            Self::General => "general",
        }
    }

    /// Reads the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "summary" => Some(Self::Summary),
            "general" => Some(Self::General),
            _ => None,
        }
    }

    fn initial_state(self) -> CaseState {
        match self {
            Self::Summary => CaseState::Draft,
            Self::General => CaseState::Lead,
        }
    }
}

/// Every state a case can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CaseState {
    /// Summary procedure, before the on-site decision.
    Draft,
    /// 当场处罚: decision handed over on site.
    IssuedOnSite,
    /// 备案: on-site decision filed with the agency.
    FiledWithAgency,
    /// Summary decision executed.
    Executed,
    /// General procedure: a lead (线索), not yet filed.
    Lead,
    /// 立案.
    Filed,
    /// Under investigation.
    Investigating,
    /// Investigation paused (鉴定, 公告, …).
    Suspended,
    /// 调查终结.
    InvestigationClosed,
    /// 法制审核 under way.
    LegalReview,
    /// 事先告知 sent.
    Notified,
    /// 听证.
    Hearing,
    /// 集体讨论.
    CollectiveDiscussion,
    /// Decision made.
    Decided,
    /// Decision served on the party.
    Served,
    /// Being executed (payment, rectification).
    Executing,
    /// 结案.
    Closed,
    /// 归档.
    Archived,
    /// 不予立案.
    NotFiled,
    /// 终止调查.
    Terminated,
    /// 移送.
    Transferred,
}

impl CaseState {
    /// The stored and projected form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::IssuedOnSite => "issued_on_site",
            Self::FiledWithAgency => "filed_with_agency",
            Self::Executed => "executed",
            Self::Lead => "lead",
            Self::Filed => "filed",
            Self::Investigating => "investigating",
            Self::Suspended => "suspended",
            Self::InvestigationClosed => "investigation_closed",
            Self::LegalReview => "legal_review",
            Self::Notified => "notified",
            Self::Hearing => "hearing",
            Self::CollectiveDiscussion => "collective_discussion",
            Self::Decided => "decided",
            Self::Served => "served",
            Self::Executing => "executing",
            Self::Closed => "closed",
            Self::Archived => "archived",
            Self::NotFiled => "not_filed",
            Self::Terminated => "terminated",
            Self::Transferred => "transferred",
        }
    }
}

/// The states an event kind may start from, and the state it leads to; `None` for events that
/// do not move the case (notes, requests, extensions).
fn transition(kind: &str) -> Option<(&'static [CaseState], CaseState)> {
    use CaseState as S;
    const OPEN: &[CaseState] = &[
        S::Lead,
        S::Filed,
        S::Investigating,
        S::Suspended,
        S::InvestigationClosed,
        S::LegalReview,
        S::Notified,
        S::Hearing,
        S::CollectiveDiscussion,
    ];
    Some(match kind {
        "issue_on_site" => (&[S::Draft], S::IssuedOnSite),
        "file_with_agency" => (&[S::IssuedOnSite], S::FiledWithAgency),
        "execute" => (&[S::IssuedOnSite, S::FiledWithAgency], S::Executed),
        "file" => (&[S::Lead], S::Filed),
        "not_file" => (&[S::Lead], S::NotFiled),
        "investigate" => (&[S::Filed], S::Investigating),
        "suspend" => (&[S::Investigating], S::Suspended),
        "resume" => (&[S::Suspended], S::Investigating),
        "close_investigation" => (&[S::Investigating], S::InvestigationClosed),
        "legal_review" => (&[S::InvestigationClosed, S::Hearing], S::LegalReview),
        "notify" => (&[S::InvestigationClosed, S::LegalReview], S::Notified),
        "hearing" => (&[S::Notified], S::Hearing),
        "collective_discussion" => {
            (&[S::Notified, S::Hearing, S::LegalReview], S::CollectiveDiscussion)
        }
        "decide" => {
            (&[S::Notified, S::Hearing, S::LegalReview, S::CollectiveDiscussion], S::Decided)
        }
        "serve" => (&[S::Decided], S::Served),
        "begin_execution" => (&[S::Served], S::Executing),
        "close" => (
            &[
                S::Executing,
                S::Served,
                S::Executed,
                S::FiledWithAgency,
                S::NotFiled,
                S::Terminated,
                S::Transferred,
            ],
            S::Closed,
        ),
        "archive" => (&[S::Closed], S::Archived),
        "terminate" => (OPEN, S::Terminated),
        "transfer" => (OPEN, S::Transferred),
        _ => return None,
    })
}

/// Event kinds only the server may write (DOMAIN.md §3: filing approval, general-procedure
/// decisions with their official numbers, closing and archiving); a device records a request
/// (`request_file`, `request_decision`, `request_close`) and a supervisor grants it.
pub const SERVER_AUTHORED: [&str; 5] = ["file", "not_file", "decide", "close", "archive"];

/// Something irregular in a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionIssue {
    /// The event's precondition failed: the case was not in a state it may start from.
    Invalid {
        /// Position of the event in the timeline.
        index: usize,
        /// The event kind.
        kind: String,
        /// The state the case was in.
        from: CaseState,
    },
    /// A server-authored transition written by a device; the case does not move.
    Unauthorised {
        /// Position of the event in the timeline.
        index: usize,
        /// The event kind.
        kind: String,
        /// Hex actor that wrote it.
        actor: String,
    },
    /// Two or more transitions were written concurrently after the same event.
    Concurrent {
        /// Positions of the concurrent events.
        indexes: Vec<usize>,
        /// Their kinds.
        kinds: Vec<String>,
    },
}

/// The outcome of folding a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcedureFold {
    /// The state after the last applicable event.
    pub state: CaseState,
    /// Every irregularity found.
    pub issues: Vec<TransitionIssue>,
}

impl ProcedureFold {
    /// Folds the events in timeline order. An invalid transition is reported and skipped, so
    /// one bad event does not hide the rest of the case.
    ///
    /// A server-authored kind ([`SERVER_AUTHORED`]) moves the case only when its `actor` is
    /// the server's; `Record::hydrate` sets every event's actor from the document's operations.
    pub fn run(procedure: Procedure, events: &[TimelineEvent]) -> Self {
        let mut state = procedure.initial_state();
        let mut issues = Vec::new();
        let mut by_prev: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let server = crate::records::server_actor_hex();
        for (index, event) in events.iter().enumerate() {
            let Some((from, to)) = transition(&event.kind) else { continue };
            by_prev.entry(event.prev.as_str()).or_default().push(index);
            if SERVER_AUTHORED.contains(&event.kind.as_str()) && event.actor != server {
                issues.push(TransitionIssue::Unauthorised {
                    index,
                    kind: event.kind.clone(),
                    actor: event.actor.clone(),
                });
                continue;
            }
            if from.contains(&state) {
                state = to;
            } else {
                issues.push(TransitionIssue::Invalid {
                    index,
                    kind: event.kind.clone(),
                    from: state,
                });
            }
        }
        for indexes in by_prev.into_values().filter(|indexes| indexes.len() > 1) {
            let kinds = indexes.iter().map(|&index| events[index].kind.clone()).collect();
            issues.push(TransitionIssue::Concurrent { indexes, kinds });
        }
        Self { state, issues }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: &str, prev: &str) -> TimelineEvent {
        let actor = if SERVER_AUTHORED.contains(&kind) {
            crate::records::server_actor_hex()
        } else {
            "aa".to_owned()
        };
        TimelineEvent {
            id: id.to_owned(),
            kind: kind.to_owned(),
            prev: prev.to_owned(),
            officer: "o1".to_owned(),
            actor,
            device_time: 0,
            fields: BTreeMap::new(),
        }
    }

    #[track_caller]
    fn check(procedure: Procedure, events: &[(&str, &str, &str)], state: CaseState, issues: usize) {
        let events: Vec<_> = events.iter().map(|(id, kind, prev)| event(id, kind, prev)).collect();
        let fold = ProcedureFold::run(procedure, &events);
        assert_eq!(fold.state, state, "{fold:?}");
        assert_eq!(fold.issues.len(), issues, "{fold:?}");
    }

    #[test]
    fn general_procedure_runs_to_archive() {
        let kinds = [
            "file",
            "investigate",
            "suspend",
            "resume",
            "close_investigation",
            "notify",
            "hearing",
            "legal_review",
            "decide",
            "serve",
            "begin_execution",
            "close",
            "archive",
        ];
        let ids: Vec<String> = (0..kinds.len()).map(|i| format!("e{i}")).collect();
        let events: Vec<(&str, &str, &str)> = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                (ids[i].as_str(), *kind, if i == 0 { "" } else { ids[i - 1].as_str() })
            })
            .collect();
        check(Procedure::General, &events, CaseState::Archived, 0);
    }

    #[test]
    fn summary_procedure_and_notes() {
        check(
            Procedure::Summary,
            &[("a", "issue_on_site", ""), ("b", "note", "a"), ("c", "file_with_agency", "b")],
            CaseState::FiledWithAgency,
            0,
        );
    }

    const ALL_STATES: [CaseState; 21] = [
        CaseState::Draft,
        CaseState::IssuedOnSite,
        CaseState::FiledWithAgency,
        CaseState::Executed,
        CaseState::Lead,
        CaseState::Filed,
        CaseState::Investigating,
        CaseState::Suspended,
        CaseState::InvestigationClosed,
        CaseState::LegalReview,
        CaseState::Notified,
        CaseState::Hearing,
        CaseState::CollectiveDiscussion,
        CaseState::Decided,
        CaseState::Served,
        CaseState::Executing,
        CaseState::Closed,
        CaseState::Archived,
        CaseState::NotFiled,
        CaseState::Terminated,
        CaseState::Transferred,
    ];

    const KINDS: [&str; 21] = [
        "issue_on_site",
        "file_with_agency",
        "execute",
        "file",
        "not_file",
        "investigate",
        "suspend",
        "resume",
        "close_investigation",
        "legal_review",
        "notify",
        "hearing",
        "collective_discussion",
        "decide",
        "serve",
        "begin_execution",
        "close",
        "archive",
        "terminate",
        "transfer",
        "note",
    ];

    /// The shortest event path from the procedure's initial state to `target`, by breadth-first
    /// search over the transition table.
    fn path_to(procedure: Procedure, target: CaseState) -> Option<Vec<&'static str>> {
        let mut frontier = vec![(procedure.initial_state(), Vec::new())];
        let mut seen = vec![procedure.initial_state()];
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for (state, path) in frontier {
                if state == target {
                    return Some(path);
                }
                for kind in KINDS {
                    if let Some((from, to)) = transition(kind)
                        && from.contains(&state)
                        && !seen.contains(&to)
                    {
                        seen.push(to);
                        let mut longer = path.clone();
                        longer.push(kind);
                        next.push((to, longer));
                    }
                }
            }
            frontier = next;
        }
        None
    }

    fn fold_path(procedure: Procedure, kinds: &[&str]) -> ProcedureFold {
        let events: Vec<TimelineEvent> = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let prev = if i == 0 { String::new() } else { format!("e{}", i - 1) };
                event(&format!("e{i}"), kind, &prev)
            })
            .collect();
        ProcedureFold::run(procedure, &events)
    }

    /// Every transition of the table, from every state it may start from that the procedure
    /// can reach, lands where the table says; every other event from that state is an issue
    /// and leaves the state alone.
    #[test]
    fn every_legal_transition_and_every_illegal_one_of_both_procedures() {
        let mut legal = 0;
        let mut illegal = 0;
        for procedure in [Procedure::Summary, Procedure::General] {
            for state in ALL_STATES {
                let Some(path) = path_to(procedure, state) else { continue };
                for kind in KINDS {
                    let mut kinds = path.clone();
                    kinds.push(kind);
                    let fold = fold_path(procedure, &kinds);
                    match transition(kind) {
                        Some((from, to)) if from.contains(&state) => {
                            assert_eq!(fold.state, to, "{procedure:?} {state:?} --{kind}-->");
                            assert!(fold.issues.is_empty(), "{kinds:?}: {:?}", fold.issues);
                            legal += 1;
                        }
                        Some(_) => {
                            assert_eq!(
                                fold.state, state,
                                "{procedure:?} {state:?} --{kind}--> refused"
                            );
                            assert!(
                                matches!(fold.issues[..], [TransitionIssue::Invalid { .. }]),
                                "{kinds:?}: {:?}",
                                fold.issues
                            );
                            illegal += 1;
                        }
                        None => assert_eq!(fold.state, state, "a note moves nothing"),
                    }
                }
            }
        }
        assert!(
            legal >= 30 && illegal >= 200,
            "{legal} legal, {illegal} illegal transitions checked"
        );
    }

    #[test]
    fn a_failed_precondition_is_an_issue_not_a_state() {
        check(Procedure::General, &[("a", "decide", "")], CaseState::Lead, 1);
    }

    #[test]
    fn a_device_cannot_file_decide_or_close() {
        let mut events = vec![event("a", "file", "")];
        events[0].actor = "aa".to_owned();
        let fold = ProcedureFold::run(Procedure::General, &events);
        assert_eq!(fold.state, CaseState::Lead);
        assert!(matches!(fold.issues[..], [TransitionIssue::Unauthorised { index: 0, .. }]));
        check(
            Procedure::General,
            &[("a", "request_file", ""), ("b", "file", "a")],
            CaseState::Filed,
            0,
        );
    }

    #[test]
    fn concurrent_transitions_are_an_issue() {
        check(
            Procedure::General,
            &[("a", "file", ""), ("b", "investigate", "a"), ("c", "terminate", "a")],
            CaseState::Terminated,
            1,
        );
    }
}
