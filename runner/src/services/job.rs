//! Windows has no process groups or parent-death signal: a service's
//! processes are held in job objects instead.
//!
//! - Each instance runs in a job of its own, ended whole when the instance
//!   stops (the service and everything it started).
//! - The runner puts itself in a job at start ([`hold_descendants`]) whose
//!   only handle it keeps: when it dies, however it dies, Windows closes the
//!   handle and kills every process of the job — every service it started,
//!   even one started in the instant before its own job held it.
//!
//! Both jobs are `KILL_ON_JOB_CLOSE`; jobs nest (Windows 8 and later).
//! The calls into the Windows API are this module's only unsafe code.
#![allow(unsafe_code)]

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation, SetInformationJobObject,
    TerminateJobObject,
};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

/// A job whose processes die when it is dropped (its handle closed).
pub struct Job(OwnedHandle);

impl Job {
    /// A new, empty job that kills its processes when closed.
    pub fn new() -> io::Result<Job> {
        // SAFETY: no attributes (the handle is not inherited), no name.
        let handle = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if handle.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a handle just returned to us, owned from here on.
        let job = Job(unsafe { OwnedHandle::from_raw_handle(handle) });
        let mut info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: `info` is the structure the class names, with its size.
        let set = unsafe {
            SetInformationJobObject(
                job.0.as_raw_handle(),
                JobObjectExtendedLimitInformation,
                (&raw const info).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if set == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(job)
    }

    /// Puts `child` (and what it starts from now on) in the job.
    pub fn assign_child(&self, child: &tokio::process::Child) -> io::Result<()> {
        let handle = child.raw_handle().ok_or_else(|| io::Error::other("the process has ended"))?;
        self.assign(handle)
    }

    /// Puts the process of `process`, a handle open for the call, in the job.
    fn assign(&self, process: std::os::windows::io::RawHandle) -> io::Result<()> {
        // SAFETY: both handles are open for the call.
        if unsafe { AssignProcessToJobObject(self.0.as_raw_handle(), process) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Ends every process of the job now.
    pub fn kill(&self) -> io::Result<()> {
        // SAFETY: the job's handle is open.
        if unsafe { TerminateJobObject(self.0.as_raw_handle(), 1) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Puts this process in a job that dies with it: whatever it starts from
/// now on is ended when it ends, SIGKILL-like deaths included. The job's
/// one handle is kept open until the process exits.
pub fn hold_descendants() -> io::Result<()> {
    let job = Job::new()?;
    // SAFETY: the pseudo-handle of this process needs no closing.
    job.assign(unsafe { GetCurrentProcess() })?;
    std::mem::forget(job);
    Ok(())
}
