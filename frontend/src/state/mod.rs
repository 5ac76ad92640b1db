//! The app's state: each part is a `Reducible` with an `Action` enum, shared
//! through contexts (session) or owned by a page (editor, run view). Pure
//! logic, so it is unit-tested natively.

pub mod editor;
pub mod run;
pub mod session;

pub use editor::{EditorAction, EditorState};
pub use run::{RunAction, RunView};
pub use session::{AuthState, Session, SessionAction};
