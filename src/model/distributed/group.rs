//! A safe [`Group`] over mlx-sys's `mlx_distributed_*` functions.
//!
//! Errors: mlx-c reports an error by calling the process-global error handler and returning a
//! non-zero status; its default handler prints and **exits the process**, and the one mlx-rs
//! installs keeps the message where only mlx-rs can read it. [`install_error_handler`] installs
//! a handler that hands the message to this module while one of its calls runs on the calling
//! thread ([`capture`]), and forwards every other error to mlx-rs's handler, so mlx-rs keeps
//! reporting its own errors as before.
use super::hostfile::Hostfile;
use super::{DistributedError, HOSTFILE_ENV, RANK_ENV, Watchdog};
use mlx_rs::{Array, Dtype, Stream};
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::Once;

/// Which MLX backend connects the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// TCP ring (`MLX_RANK`, `MLX_HOSTFILE`): every CPU build of MLX; what `energy launch` and
    /// `mlx.launch` set up.
    Ring,
    /// MPI (loads `libmpi` at run time; ranks started by `mpirun`).
    Mpi,
    /// The first available of MLX's backends (nccl, ring, mpi, jaccl).
    Any,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ring => "ring",
            Self::Mpi => "mpi",
            Self::Any => "any",
        }
    }
}

/// A group of ranks that can run collectives together. Collectives are lazy MLX operations:
/// they run when their result is evaluated (guard that evaluation with a [`Watchdog`]).
#[derive(Debug)]
pub struct Group {
    raw: mlx_sys::mlx_distributed_group,
    rank: usize,
    size: usize,
}

/// The raw group crossing from the thread that formed it to the caller.
struct RawGroup(mlx_sys::mlx_distributed_group);

// SAFETY: an `mlx_distributed_group` is a pointer to a heap-allocated
// `mlx::core::distributed::Group`, which holds a `shared_ptr` to its implementation; it has no
// thread affinity (MLX's collectives take it from whichever thread builds the graph, and its
// ring sockets are served by MLX's own threads).
unsafe impl Send for RawGroup {}
// SAFETY: as for `RawGroup`; `Group` only reads the handle (rank, size, building operations).
unsafe impl Send for Group {}

impl Group {
    /// Join the group this process was started in, with `backend`. With `strict` a missing
    /// configuration is an error; without, it gives a group of one (collectives are the
    /// identity). Forming the ring waits for every rank: if that takes longer than
    /// `watchdog`'s timeout (a rank that never starts, an address nobody listens on) the
    /// result is [`DistributedError::Timeout`].
    pub fn init(backend: Backend, strict: bool, watchdog: Watchdog) -> Result<Self, DistributedError> {
        install_error_handler();
        if matches!(backend, Backend::Ring | Backend::Any) {
            check_ring_environment(strict)?;
        }
        let name = CString::new(backend.name()).map_err(|e| DistributedError::Invalid(e.to_string()))?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("energy-distributed-init".into())
            .spawn(move || {
                let result = capture("distributed init", || {
                    // SAFETY: `mlx_distributed_group_new` returns an empty handle that
                    // `mlx_distributed_init` fills in; `name` outlives the call.
                    let mut raw = unsafe { mlx_sys::mlx_distributed_group_new() };
                    // SAFETY: `raw` is a valid handle to write to and `name` a valid C string.
                    let status = unsafe { mlx_sys::mlx_distributed_init(&mut raw, strict, name.as_ptr()) };
                    (status, RawGroup(raw))
                });
                let _ = sender.send(result);
            })
            .map_err(|e| DistributedError::Setup(format!("cannot start a thread: {e}")))?;
        let raw = match receiver.recv_timeout(watchdog.timeout()) {
            Ok(result) => result?.0,
            Err(_) => {
                return Err(DistributedError::Timeout {
                    what: format!("forming the {} group", backend.name()),
                    timeout: watchdog.timeout(),
                });
            }
        };
        // SAFETY: `raw` was initialised by a successful `mlx_distributed_init`.
        let (rank, size) =
            unsafe { (mlx_sys::mlx_distributed_group_rank(raw), mlx_sys::mlx_distributed_group_size(raw)) };
        let group = Self { raw, rank: usize::try_from(rank).unwrap_or(0), size: usize::try_from(size).unwrap_or(1) };
        if rank < 0 || size < 1 || group.rank >= group.size {
            return Err(DistributedError::Setup(format!("MLX formed a group with rank {rank} of size {size}")));
        }
        Ok(group)
    }

    /// Whether MLX was built with `backend` (the Linux CPU wheel has `ring`).
    pub fn is_available(backend: Backend) -> bool {
        install_error_handler();
        let Ok(name) = CString::new(backend.name()) else { return false };
        // SAFETY: `name` is a valid C string that outlives the call.
        unsafe { mlx_sys::mlx_distributed_is_available(name.as_ptr()) }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The rank after this one on the ring.
    pub fn right(&self) -> usize {
        (self.rank + 1) % self.size
    }

    /// The rank before this one on the ring.
    pub fn left(&self) -> usize {
        (self.rank + self.size - 1) % self.size
    }

    /// Element-wise sum of `x` over every rank (same shape and dtype on every rank), on
    /// MLX's default CPU stream.
    pub fn all_sum(&self, x: &Array) -> Result<Array, DistributedError> {
        self.all_sum_on(x, &Stream::cpu())
    }

    pub fn all_sum_on(&self, x: &Array, stream: &Stream) -> Result<Array, DistributedError> {
        // SAFETY: `result` is a valid handle to fill; `x`, the group and the stream are live
        // handles for the duration of the call.
        self.array_op("all_sum", |result| unsafe {
            mlx_sys::mlx_distributed_all_sum(result, x.as_ptr(), self.raw, stream.as_ptr())
        })
    }

    /// Every rank's `x` concatenated along axis 0 in rank order.
    pub fn all_gather(&self, x: &Array) -> Result<Array, DistributedError> {
        // SAFETY: as in `all_sum_on`.
        self.array_op("all_gather", |result| unsafe {
            mlx_sys::mlx_distributed_all_gather(result, x.as_ptr(), self.raw, Stream::cpu().as_ptr())
        })
    }

    /// Send `x` to `destination`, which must be a ring neighbour (the ring backend sends to no
    /// other rank). The result is a token: evaluate it (with the matching [`Group::recv`] on
    /// the other rank evaluated too) for the send to happen.
    pub fn send(&self, x: &Array, destination: usize, stream: &Stream) -> Result<Array, DistributedError> {
        let destination = self.neighbour(destination, "send to")?;
        // SAFETY: as in `all_sum_on`.
        self.array_op("send", |result| unsafe {
            mlx_sys::mlx_distributed_send(result, x.as_ptr(), destination, self.raw, stream.as_ptr())
        })
    }

    /// Receive an array of `shape` and `dtype` from `source`, a ring neighbour.
    pub fn recv(&self, shape: &[i32], dtype: Dtype, source: usize, stream: &Stream) -> Result<Array, DistributedError> {
        let source = self.neighbour(source, "receive from")?;
        // SAFETY: as in `all_sum_on`; `shape` points to `shape.len()` integers that outlive the call.
        self.array_op("recv", |result| unsafe {
            mlx_sys::mlx_distributed_recv(
                result,
                shape.as_ptr(),
                shape.len(),
                dtype as mlx_sys::mlx_dtype,
                source,
                self.raw,
                stream.as_ptr(),
            )
        })
    }

    /// `rank` as MLX's `int`, checked to be a ring neighbour: MLX's ring backend raises the
    /// error for any other rank on its worker thread, where it cannot be caught.
    fn neighbour(&self, rank: usize, what: &str) -> Result<c_int, DistributedError> {
        if self.size < 2 || (rank != self.left() && rank != self.right()) {
            return Err(DistributedError::Invalid(format!(
                "rank {} of {} cannot {what} rank {rank}: only ring neighbours exchange arrays",
                self.rank, self.size
            )));
        }
        c_int::try_from(rank).map_err(|_| DistributedError::Invalid(format!("rank {rank} does not fit in an int")))
    }

    fn array_op(
        &self,
        operation: &'static str,
        f: impl FnOnce(*mut mlx_sys::mlx_array) -> c_int,
    ) -> Result<Array, DistributedError> {
        install_error_handler();
        // SAFETY: `mlx_array_new` returns an empty handle for the operation to fill in.
        let mut result = unsafe { mlx_sys::mlx_array_new() };
        match capture(operation, || (f(&mut result), ())) {
            // SAFETY: a successful operation filled `result` with an array we now own.
            Ok(()) => Ok(unsafe { Array::from_ptr(result) }),
            Err(error) => {
                // SAFETY: `result` is the empty (or partial) handle we own; freed once.
                unsafe { mlx_sys::mlx_array_free(result) };
                Err(error)
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` is the handle this `Group` owns, freed once here.
        unsafe { mlx_sys::mlx_distributed_group_free(self.raw) };
    }
}

/// Check `MLX_HOSTFILE` and `MLX_RANK` before MLX reads them, with messages naming the
/// problem (MLX would parse a bad rank as 0 and a missing file as an empty ring).
fn check_ring_environment(strict: bool) -> Result<(), DistributedError> {
    let (rank, hostfile) = (std::env::var(RANK_ENV).ok(), std::env::var_os(HOSTFILE_ENV));
    let (rank, hostfile) = match (rank, hostfile) {
        (Some(rank), Some(hostfile)) => (rank, hostfile),
        (None, None) if !strict => return Ok(()),
        (rank, hostfile) => {
            return Err(DistributedError::Setup(format!(
                "a distributed run needs both {RANK_ENV} and {HOSTFILE_ENV} (got {RANK_ENV}={}, {HOSTFILE_ENV}={}); \
                 start the ranks with `energy launch -n N -- …` or `mlx.launch`",
                rank.as_deref().unwrap_or("unset"),
                hostfile.as_ref().map_or("unset".into(), |path| std::path::Path::new(path).display().to_string())
            )));
        }
    };
    let path = std::path::Path::new(&hostfile);
    let ranks = Hostfile::read(path)?.len();
    match rank.trim().parse::<usize>() {
        Ok(rank) if rank < ranks => Ok(()),
        _ => Err(DistributedError::Setup(format!(
            "{RANK_ENV}={rank} is not a rank of the hostfile `{}`, which names {ranks} (0..{})",
            path.display(),
            ranks
        ))),
    }
}

thread_local! {
    /// While one of this module's calls runs on this thread: the error MLX reported, if any.
    static CAPTURED: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

unsafe extern "C" {
    /// mlx-rs's error handler (exported unmangled by mlx-rs): it keeps the message for mlx-rs
    /// to turn into its `Exception`.
    fn default_mlx_error_handler(message: *const c_char, data: *mut c_void);
}

/// The process-global mlx-c error handler: the message goes to [`capture`] when one of this
/// module's calls is running on this thread, else to mlx-rs.
extern "C" fn error_handler(message: *const c_char, data: *mut c_void) {
    let text = if message.is_null() {
        String::from("(no message)")
    } else {
        // SAFETY: mlx-c passes a NUL-terminated string that lives for the call.
        unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
    };
    let taken = CAPTURED.with_borrow_mut(|captured| match captured {
        Some(slot) => {
            *slot = Some(text);
            true
        }
        None => false,
    });
    if !taken {
        // SAFETY: the same arguments mlx-c gave us, for the handler mlx-rs would have had.
        unsafe { default_mlx_error_handler(message, data) };
    }
}

/// Install [`error_handler`] once, after mlx-rs has installed its own (which would otherwise
/// replace ours on its first operation).
pub(super) fn install_error_handler() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // Any mlx-rs operation registers mlx-rs's handler first (a `Once` inside mlx-rs).
        let _ = Array::from_f32(0.0).add(Array::from_f32(0.0));
        // SAFETY: `error_handler` is a valid `extern "C"` function for the life of the process;
        // it uses no `data` and needs no destructor.
        unsafe { mlx_sys::mlx_set_error_handler(Some(error_handler), std::ptr::null_mut(), None) };
    });
}

/// Run one mlx-c call `f` (returning its status and value) with this thread's errors captured:
/// a non-zero status becomes [`DistributedError::Mlx`] with MLX's message.
pub(super) fn capture<T>(operation: &'static str, f: impl FnOnce() -> (c_int, T)) -> Result<T, DistributedError> {
    install_error_handler();
    let previous = CAPTURED.with_borrow_mut(|captured| captured.replace(None));
    let (status, value) = f();
    let message = CAPTURED.with_borrow_mut(|captured| std::mem::replace(captured, previous)).flatten();
    if status == 0 {
        return Ok(value);
    }
    Err(DistributedError::Mlx {
        operation,
        message: message.unwrap_or_else(|| format!("MLX returned status {status} without a message")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Serialises the tests that change the process environment.
    static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn watchdog() -> Watchdog {
        Watchdog::new(Duration::from_secs(20))
    }

    #[test]
    fn ring_backend_is_available() {
        assert!(Group::is_available(Backend::Ring));
    }

    #[test]
    fn without_configuration_a_lax_group_is_one_rank_and_all_sum_is_the_identity() -> Result<(), DistributedError> {
        let _lock = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY (test): the environment is only changed under the lock above.
        unsafe {
            std::env::remove_var(RANK_ENV);
            std::env::remove_var(HOSTFILE_ENV);
        }
        let group = Group::init(Backend::Ring, false, watchdog())?;
        assert_eq!((group.rank(), group.size()), (0, 1));
        let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]);
        let sum = group.all_sum(&x)?;
        assert_eq!(sum.as_slice::<f32>(), &[1.0, 2.0, 3.0]);
        let gathered = group.all_gather(&x)?;
        assert_eq!(gathered.as_slice::<f32>(), &[1.0, 2.0, 3.0]);
        // One rank has no neighbour to send to.
        let error = group.send(&x, 0, &Stream::cpu()).unwrap_err();
        assert!(error.to_string().contains("only ring neighbours"), "{error}");
        Ok(())
    }

    /// mlx-c's default handler would exit the process here (status 255).
    #[test]
    fn a_strict_init_without_configuration_is_an_error_not_an_exit() {
        let _lock = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY (test): the environment is only changed under the lock above.
        unsafe {
            std::env::remove_var(RANK_ENV);
            std::env::remove_var(HOSTFILE_ENV);
        }
        let error = Group::init(Backend::Ring, true, watchdog()).unwrap_err();
        assert!(error.is_bad_input(), "{error:?}");
        assert!(error.to_string().contains("MLX_RANK"), "{error}");
        // Straight to MLX, past our own check: MLX's message comes back as a typed error. (A
        // backend MLX does not know: MLX caches the groups it formed, so a strict `ring` init
        // after another test's lax one would succeed.)
        let name = CString::new("no-such-backend").unwrap();
        let error = capture("distributed init", || {
            // SAFETY (test): as in `Group::init`.
            let mut raw = unsafe { mlx_sys::mlx_distributed_group_new() };
            // SAFETY (test): as in `Group::init`.
            let status = unsafe { mlx_sys::mlx_distributed_init(&mut raw, true, name.as_ptr()) };
            (status, ())
        })
        .unwrap_err();
        let DistributedError::Mlx { message, .. } = &error else { panic!("{error:?}") };
        assert!(message.contains("no-such-backend") || message.contains("backend"), "MLX's own message: {message}");
        assert!(!message.contains("without a message"), "{message}");
    }

    /// mlx-rs keeps its own errors while ours is installed.
    #[test]
    fn mlx_rs_errors_still_reach_mlx_rs() {
        install_error_handler();
        let error = Array::from_slice(&[1.0f32; 6], &[6]).reshape(&[4, 4]).unwrap_err();
        assert!(error.what().contains("reshape"), "{}", error.what());
    }

    #[test]
    fn a_bad_rank_or_hostfile_is_named() {
        let _lock = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.json");
        Hostfile::local(2).unwrap().write(&path).unwrap();
        for (rank, file, expected) in [
            ("2", path.clone(), "is not a rank"),
            ("x", path.clone(), "is not a rank"),
            ("0", dir.path().join("missing.json"), "cannot read the hostfile"),
        ] {
            // SAFETY (test): the environment is only changed under the lock above.
            unsafe {
                std::env::set_var(RANK_ENV, rank);
                std::env::set_var(HOSTFILE_ENV, &file);
            }
            let error = Group::init(Backend::Ring, true, watchdog()).unwrap_err();
            assert!(error.is_bad_input() && error.to_string().contains(expected), "{error}");
        }
        // SAFETY (test): as above.
        unsafe {
            std::env::remove_var(RANK_ENV);
            std::env::remove_var(HOSTFILE_ENV);
        }
    }
}
