//! The keeper: a small process of our own binary (`ensemble __keep-service
//! PARENT_PID GRACE_MS ARG0 -- PROGRAM ARGS…`, hidden) between a runner and a
//! service it starts, so that no process of the service outlives the runner.
//!
//! The keeper starts the program in a process group of its own and watches
//! two things: the program, and its parent. When the runner asks the service
//! to stop (SIGTERM or SIGINT to the keeper), the keeper sends SIGTERM to the
//! whole group, and SIGKILL after the grace. When the program exits, the
//! keeper kills what is left of its group (workers it forked). When the
//! runner is gone (SIGKILLed, crashed: the keeper's parent changes), the
//! keeper kills the whole group at once, and removes the service's `{dir}`
//! (its working directory, which the runner would have removed). Its exit
//! code is the program's (128 plus the signal when a signal ended it). A
//! group whose processes leave it (`setsid`, daemons) escapes, as with every
//! process-group supervisor.
//!
//! Faults reach the group through the keeper: the runner writes commands
//! on its stdin, one a line (`signal STOP`, `signal HUP`, …), and the keeper
//! sends that signal to the group. The keeper itself is in a group of its
//! own, so a paused service (SIGSTOP) never stops its keeper: it still
//! watches the runner, and a stop of a paused service continues it after
//! SIGTERM so that it can act on it.

/// The hidden command that runs a keeper.
pub const COMMAND: &str = "__keep-service";

/// How often the keeper looks at its parent.
#[cfg(unix)]
const TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// The keeper's main: returns its exit code.
#[cfg(unix)]
pub fn keeper_main(args: &[String]) -> i32 {
    let usage = || {
        eprintln!("usage: ensemble {COMMAND} PARENT_PID GRACE_MS ARG0 -- PROGRAM ARGS…");
        64
    };
    let (Some(parent), Some(grace), Some(arg0), Some(rest)) =
        (args.first(), args.get(1), args.get(2), args.get(3..))
    else {
        return usage();
    };
    let rest = rest.strip_prefix(&["--".to_string()]).unwrap_or(rest);
    let (Ok(parent), Ok(grace), Some((program, program_args))) =
        (parent.parse::<i32>(), grace.parse::<u64>(), rest.split_first())
    else {
        return usage();
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the keeper: {e}");
            return 1;
        }
    };
    let code =
        runtime.block_on(keep(parent, std::time::Duration::from_millis(grace), program, arg0, program_args));
    // The read of stdin may still block a thread: do not wait for it.
    runtime.shutdown_background();
    code
}

#[cfg(unix)]
async fn keep(parent: i32, grace: std::time::Duration, program: &str, arg0: &str, args: &[String]) -> i32 {
    use rustix::process::{Pid, Signal, getppid, kill_process_group};
    use std::os::unix::process::ExitStatusExt;
    use tokio::signal::unix::{SignalKind, signal};

    let parent_alive = || getppid().is_some_and(|p| p.as_raw_nonzero().get() == parent);
    // The runner starts the keeper in the service's `{dir}`: it is the
    // keeper's to remove when the runner cannot.
    let scratch = std::env::current_dir()
        .ok()
        .filter(|d| d.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(super::SCRATCH)));
    // Listen before starting anything: a stop that comes early is not lost.
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        eprintln!("cannot listen for signals");
        return 1;
    };
    if !parent_alive() {
        return 1; // the runner is already gone: start nothing
    }
    let mut child = match tokio::process::Command::new(program)
        .arg0(arg0)
        .args(args)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start {program}: {e}");
            return 127;
        }
    };
    let group = child.id().and_then(|id| Pid::from_raw(id as i32));
    let kill_group = |sig: Signal| {
        if let Some(g) = group {
            let _ = kill_process_group(g, sig);
        }
    };
    let mut tick = tokio::time::interval(TICK);
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut commands = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
    let mut commands_open = true;
    let mut paused = false;
    loop {
        let until_kill = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => {
                // Workers it forked and left behind go with it.
                kill_group(Signal::KILL);
                return match status {
                    Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
                    Err(e) => {
                        eprintln!("cannot watch {program}: {e}");
                        1
                    }
                };
            }
            _ = tick.tick() => {
                if !parent_alive() {
                    kill_group(Signal::KILL);
                    let _ = child.wait().await;
                    if let Some(dir) = &scratch {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    return 137;
                }
            }
            Some(()) = async { tokio::select! { s = term.recv() => s, s = int.recv() => s, s = hup.recv() => s } } => {
                if kill_at.is_none() {
                    kill_group(Signal::TERM);
                    if paused {
                        kill_group(Signal::CONT);
                    }
                    kill_at = Some(tokio::time::Instant::now() + grace);
                }
            }
            line = commands.next_line(), if commands_open => match line {
                Ok(Some(line)) => match command_signal(&line) {
                    Some(sig) => {
                        paused = match sig {
                            Signal::STOP => true,
                            Signal::CONT => false,
                            _ => paused,
                        };
                        kill_group(sig);
                    }
                    None => eprintln!("ensemble keeper: unknown command {line:?}"),
                },
                // The runner closed the pipe (or is gone: the tick sees that).
                Ok(None) | Err(_) => commands_open = false,
            },
            () = until_kill => {
                kill_group(Signal::KILL);
                kill_at = None;
            }
        }
    }
}

/// The signal of a command line (`signal NAME`), if it is one.
#[cfg(unix)]
fn command_signal(line: &str) -> Option<rustix::process::Signal> {
    use rustix::process::Signal;
    let name = line.trim().strip_prefix("signal ")?;
    Some(match name {
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "QUIT" => Signal::QUIT,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        _ => return None,
    })
}

/// The command line that has the keeper send `signal` to the group.
pub fn signal_command(signal: &str) -> String {
    format!("signal {signal}\n")
}

/// Windows needs no keeper: services there are held in job objects
/// (`services::job`).
#[cfg(not(unix))]
pub fn keeper_main(_args: &[String]) -> i32 {
    eprintln!("ensemble {COMMAND} runs on Unix only");
    64
}
