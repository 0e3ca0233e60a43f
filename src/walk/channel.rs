//! An [`Operator`] that talks to a UI over channels, for the cockpit: the engine runs on
//! the network runtime, the UI renders every [`WalkUpdate::State`] with
//! `tui::views::walk::draw` and answers questions from keys (continue, skip with a
//! reason, abort, retry; yes or no to a change).

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::engine::{Confirm, Operator};
use super::machine::{Decision, PauseKind, WalkState};
use crate::control::Plan;

/// What the engine tells the UI.
#[derive(Debug)]
pub enum WalkUpdate {
    /// The state after a transition: redraw.
    State(Box<WalkState>),
    /// A progress line for a log panel.
    Line(String),
    /// Show the plan (before → after, checks) and answer yes or no.
    Confirm {
        plan: Box<Plan>,
        reply: oneshot::Sender<bool>,
    },
    /// The walk is paused: answer with a decision.
    Decide {
        kind: PauseKind,
        reason: String,
        reply: oneshot::Sender<Decision>,
    },
}

/// The engine's side. When the UI has gone away, changes are not confirmed and pauses
/// stay paused (the state is saved; the walkthrough can be resumed).
pub struct ChannelOperator {
    tx: mpsc::UnboundedSender<WalkUpdate>,
}

impl ChannelOperator {
    /// The operator for the engine, and the receiver the UI reads.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<WalkUpdate>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

impl Operator for ChannelOperator {
    async fn confirm(&mut self, plan: &Plan) -> Confirm {
        let (reply, answer) = oneshot::channel();
        if self
            .tx
            .send(WalkUpdate::Confirm {
                plan: Box::new(plan.clone()),
                reply,
            })
            .is_err()
        {
            return Confirm::Unavailable;
        }
        match answer.await {
            Ok(true) => Confirm::Yes,
            Ok(false) => Confirm::No,
            Err(_) => Confirm::Unavailable,
        }
    }

    async fn decide(
        &mut self,
        _st: &WalkState,
        kind: PauseKind,
        reason: &str,
        cancel: &CancellationToken,
    ) -> Option<Decision> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(WalkUpdate::Decide {
                kind,
                reason: reason.to_string(),
                reply,
            })
            .ok()?;
        tokio::select! {
            a = answer => a.ok(),
            _ = cancel.cancelled() => None,
        }
    }

    fn progress(&mut self, line: &str, st: &WalkState) {
        let _ = self.tx.send(if line.is_empty() {
            WalkUpdate::State(Box::new(st.clone()))
        } else {
            WalkUpdate::Line(line.to_string())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::runbook::parse_str;

    #[tokio::test]
    async fn questions_go_to_the_ui_and_answers_come_back() {
        let rb = parse_str(
            "name: t\nenv: dev\nroute: users\nsteps:\n  - pause: { message: look }\n",
            "t.yaml",
        )
        .unwrap();
        let st = WalkState::new(
            "id".into(),
            &rb,
            "t.yaml",
            "sha",
            "ui",
            &rb.expand("dev"),
            chrono::Utc::now(),
        );
        let (mut op, mut rx) = ChannelOperator::new();
        let ui = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(u) = rx.recv().await {
                match u {
                    WalkUpdate::State(s) => seen.push(format!("state {}", s.steps.len())),
                    WalkUpdate::Line(l) => seen.push(l),
                    WalkUpdate::Decide { reason, reply, .. } => {
                        seen.push(format!("asked: {reason}"));
                        let _ = reply.send(Decision::Skip("not needed".into()));
                    }
                    WalkUpdate::Confirm { reply, .. } => {
                        let _ = reply.send(false);
                    }
                }
            }
            seen
        });
        op.progress("", &st);
        op.progress("1/1 dev: pause: look …", &st);
        let cancel = CancellationToken::new();
        let d = op.decide(&st, PauseKind::Approval, "look", &cancel).await;
        assert_eq!(d, Some(Decision::Skip("not needed".into())));
        drop(op);
        assert_eq!(
            ui.await.unwrap(),
            ["state 1", "1/1 dev: pause: look …", "asked: look"]
        );

        // No UI: the pause stays paused, and a cancelled wait returns.
        let (mut op, rx) = ChannelOperator::new();
        drop(rx);
        assert_eq!(
            op.decide(&st, PauseKind::Approval, "x", &cancel).await,
            None
        );
        let (mut op, _rx) = ChannelOperator::new();
        cancel.cancel();
        assert_eq!(
            op.decide(&st, PauseKind::Approval, "x", &cancel).await,
            None
        );
    }
}
