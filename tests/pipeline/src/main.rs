//! The engine pipeline: a small program on Feldera's engine (the `dbsp` crate) that the
//! local cluster runs as a real pod, so Sluice's tests can see storage from the side of a
//! pipeline: what it resumed from after a stop, a clear or a restore.
//!
//! It runs a circuit whose state lives in `$STORAGE_DIR/data` (the claim is mounted at
//! `$STORAGE_DIR`), checkpoints periodically and on SIGTERM (then exits 0), resumes from the
//! newest checkpoint on start and starts fresh on an empty directory. The input is
//! deterministic: step `s` (counted over the pipeline's whole life, across restarts) feeds
//! `EVENTS_PER_STEP` events `(key, s)`, one per key, and the circuit keeps the sum per key.
//! The sum of all keys after `n` steps is therefore `expected_total(n)`; a resumed process
//! reports the same only if the engine's state itself came back, not just a step counter.
//!
//! It reports on stdout (one JSON object per line) and on `GET /status` (HTTP, port 8080);
//! `engine-pipeline status` prints the latter from inside the pod (for `kubectl exec`).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dbsp::circuit::checkpointer::Checkpointer;
use dbsp::circuit::{
    CircuitConfig, CircuitStorageConfig, StorageCacheConfig, StorageConfig, StorageOptions,
};
use dbsp::typed_batch::IndexedZSetReader;
use dbsp::{DBSPHandle, IndexedZSetHandle, OrdIndexedZSet, OutputHandle, Runtime};
use serde_json::{json, Value};
use uuid::Uuid;

/// Events fed per step, one per key `0..EVENTS_PER_STEP`.
const EVENTS_PER_STEP: u64 = 10;

/// The sum over all keys after `steps` steps: each step `s` adds `s` to every key.
fn expected_total(steps: u64) -> i64 {
    (EVENTS_PER_STEP * steps * (steps + 1) / 2) as i64
}

const USAGE: &str = "usage: engine-pipeline [--storage-dir DIR] [--checkpoint-interval SECS] \
[--step-interval-ms MS] [--port PORT] [--ignore-sigterm]
       engine-pipeline status [--port PORT]
env: STORAGE_DIR (default /storage), CHECKPOINT_INTERVAL (seconds, default 5), \
STEP_INTERVAL_MS (default 150), PORT (default 8080), IGNORE_SIGTERM=1";

struct Options {
    storage_dir: PathBuf,
    checkpoint_interval: Duration,
    step_interval: Duration,
    port: u16,
    ignore_sigterm: bool,
}

enum Command {
    Run(Options),
    Status { port: u16 },
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Flags win over the environment, which wins over the defaults. Hand-rolled: five flags
/// do not justify another crate in a build this heavy.
fn parse_args() -> Result<Command> {
    let mut args = std::env::args().skip(1).peekable();
    let status = args.peek().map(String::as_str) == Some("status");
    if status {
        args.next();
    }
    let mut storage_dir = env_or("STORAGE_DIR", "/storage");
    let mut checkpoint_interval = env_or("CHECKPOINT_INTERVAL", "5");
    let mut step_interval_ms = env_or("STEP_INTERVAL_MS", "150");
    let mut port = env_or("PORT", "8080");
    let mut ignore_sigterm = matches!(env_or("IGNORE_SIGTERM", "").as_str(), "1" | "true");
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--port" => port = value()?,
            "--storage-dir" if !status => storage_dir = value()?,
            "--checkpoint-interval" if !status => checkpoint_interval = value()?,
            "--step-interval-ms" if !status => step_interval_ms = value()?,
            "--ignore-sigterm" if !status => ignore_sigterm = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    let port: u16 = port.parse().context("--port")?;
    if status {
        return Ok(Command::Status { port });
    }
    let checkpoint_secs: f64 = checkpoint_interval
        .parse()
        .context("--checkpoint-interval")?;
    let step_ms: u64 = step_interval_ms.parse().context("--step-interval-ms")?;
    Ok(Command::Run(Options {
        storage_dir: PathBuf::from(storage_dir),
        checkpoint_interval: Duration::try_from_secs_f64(checkpoint_secs)
            .context("--checkpoint-interval")?,
        step_interval: Duration::from_millis(step_ms),
        port,
        ignore_sigterm,
    }))
}

/// One JSON object per line on stdout, flushed at once: `kubectl logs` and the tests read
/// these lines while the program runs.
fn emit(line: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn checkpoint_ref(uuid: Uuid, steps: u64) -> Value {
    json!({"checkpoint": uuid.to_string(), "steps": steps})
}

/// What `GET /status` serves; updated by the main loop.
struct Status {
    storage_dir: String,
    resumed_from: Value,
    steps: u64,
    checkpoints_taken: u64,
    last_checkpoint: Value,
    total: i64,
}

impl Status {
    fn to_json(&self) -> Value {
        json!({
            "resumed_from": self.resumed_from,
            "steps": self.steps,
            "checkpoints_taken": self.checkpoints_taken,
            "last_checkpoint": self.last_checkpoint,
            "total": self.total,
            "expected_total": expected_total(self.steps),
            "storage_dir": self.storage_dir,
        })
    }
}

// SIGTERM (and SIGINT, for a person at a terminal) only records the signal's number (0 while
// none has come): the main loop acts on it between steps, where a checkpoint is allowed.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: libc::c_int) {
    STOP_SIGNAL.store(signal, Ordering::SeqCst);
}

fn install_stop_handler() -> Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if unsafe { libc::signal(signal, handler) } == libc::SIG_ERR {
            bail!("cannot install a handler for signal {signal}");
        }
    }
    Ok(())
}

type Input = IndexedZSetHandle<u64, i64>;
type Sums = OutputHandle<OrdIndexedZSet<u64, i64>>;

/// Opens the engine's storage in `data_dir` and builds the circuit there, restored from the
/// newest checkpoint in the catalog (which lists them oldest first), as Feldera's own server
/// resumes. Returns that checkpoint and its step count, or None for a fresh start.
fn start_engine(data_dir: &str) -> Result<(DBSPHandle, Input, Sums, Option<(Uuid, u64)>)> {
    let storage = CircuitStorageConfig::for_config(
        StorageConfig {
            path: data_dir.to_string(),
            cache: StorageCacheConfig::default(),
        },
        StorageOptions::default(),
    )
    .map_err(|e| anyhow!("opening storage in {data_dir}: {e}"))?;
    let catalog = Checkpointer::read_checkpoints(&*storage.backend)
        .map_err(|e| anyhow!("reading the checkpoint catalog in {data_dir}: {e}"))?;
    let resume = catalog.back().map(|cp| (cp.uuid, cp.steps.unwrap_or(0)));
    let storage = storage.with_init_checkpoint(resume.map(|(uuid, _)| uuid));
    // One worker: the circuit is tiny, and the machine is shared.
    let config = CircuitConfig::with_workers(1).with_storage(Some(storage));
    let (handle, (input, sums)) = Runtime::init_circuit(config, |circuit| {
        let (events, input) = circuit.add_input_indexed_zset::<u64, i64>();
        // The per-key sums are the state that a checkpoint must carry.
        let sums = events.aggregate_linear(|value: &i64| *value).output();
        Ok((input, sums))
    })
    .map_err(|e| anyhow!("starting the circuit in {data_dir}: {e}"))?;
    Ok((handle, input, sums, resume))
}

struct Pipeline {
    handle: DBSPHandle,
    input: Input,
    sums: Sums,
    /// Current sum per key, from the circuit's output: every step touches every key, so
    /// every step's output carries every key's new sum.
    totals: Vec<i64>,
    steps: u64,
    status: Arc<Mutex<Status>>,
}

impl Pipeline {
    fn step(&mut self) -> Result<()> {
        let step = self.steps + 1;
        for key in 0..EVENTS_PER_STEP {
            self.input.push(key, (step as i64, 1));
        }
        self.handle
            .transaction()
            .map_err(|e| anyhow!("step {step}: {e}"))?;
        for (key, sum, weight) in self.sums.consolidate().iter() {
            // An update is a retraction of the old sum (-1) and an insertion of the new (+1).
            if weight > 0 {
                self.totals[key as usize] = sum;
            }
        }
        self.steps = step;
        let mut status = self.status.lock().unwrap();
        status.steps = step;
        status.total = self.totals.iter().sum();
        Ok(())
    }

    fn total(&self) -> i64 {
        self.totals.iter().sum()
    }

    fn checkpoint(&mut self) -> Result<Value> {
        let metadata = self
            .handle
            .checkpoint()
            .with_steps(self.steps)
            .run()
            .map_err(|e| anyhow!("checkpoint at step {}: {e}", self.steps))?;
        // The engine keeps the newest two; older ones go.
        self.handle
            .gc_checkpoint(HashSet::new())
            .map_err(|e| anyhow!("removing old checkpoints: {e}"))?;
        let taken = checkpoint_ref(metadata.uuid, self.steps);
        let mut status = self.status.lock().unwrap();
        status.checkpoints_taken += 1;
        status.last_checkpoint = taken.clone();
        Ok(taken)
    }
}

fn run(options: Options) -> Result<()> {
    // The engine deletes directories at its storage root that no checkpoint uses, so it
    // gets a subdirectory of the mount, never the mount itself (`lost+found`).
    let data_dir = options.storage_dir.join("data");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir
        .to_str()
        .context("storage dir is not UTF-8")?
        .to_string();

    let (handle, input, sums, resume) = start_engine(&data_dir)?;
    // Only now, after init_circuit: a flag set during it would go unseen until init ends,
    // which can be 60 s (the wait for the engine's storage lock). Until now SIGTERM keeps its
    // default action: the process ends at once, or, as a container's PID 1, ignores it until
    // the kubelet's SIGKILL.
    if options.ignore_sigterm {
        // A test variant: a pipeline that outlives its grace period.
        // SAFETY: setting a signal's disposition to "ignore".
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    } else {
        install_stop_handler()?;
    }
    let resumed_from = resume.map_or(Value::Null, |(uuid, steps)| checkpoint_ref(uuid, steps));
    emit(
        json!({"event": "started", "resumed_from": resumed_from, "storage_dir": data_dir,
                "ignore_sigterm": options.ignore_sigterm}),
    );

    let steps = resume.map_or(0, |(_, steps)| steps);
    let status = Arc::new(Mutex::new(Status {
        storage_dir: data_dir.clone(),
        resumed_from,
        steps,
        checkpoints_taken: 0,
        last_checkpoint: Value::Null,
        total: expected_total(steps),
    }));
    let mut pipeline = Pipeline {
        handle,
        input,
        sums,
        totals: vec![0; EVENTS_PER_STEP as usize],
        steps,
        status: status.clone(),
    };
    // One step before serving: from then on `total` is what the engine computed, never a guess.
    pipeline.step()?;
    serve_status(options.port, status)?;

    let mut next_step = Instant::now() + options.step_interval;
    let mut next_checkpoint = Instant::now() + options.checkpoint_interval;
    while STOP_SIGNAL.load(Ordering::SeqCst) == 0 {
        let now = Instant::now();
        if now >= next_step {
            pipeline.step()?;
            next_step += options.step_interval;
            // After a stall (a slow checkpoint), step at the usual pace, don't catch up.
            next_step = next_step.max(now);
        }
        if now >= next_checkpoint {
            let taken = pipeline.checkpoint()?;
            emit(
                json!({"event": "checkpoint", "checkpoint": taken["checkpoint"],
                        "steps": pipeline.steps, "total": pipeline.total(),
                        "expected_total": expected_total(pipeline.steps)}),
            );
            next_checkpoint = Instant::now() + options.checkpoint_interval;
        }
        // Short sleeps so a SIGTERM is seen within ~20 ms, yet the process stays idle.
        let wake = next_step.min(next_checkpoint);
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }

    let signal = match STOP_SIGNAL.load(Ordering::SeqCst) {
        libc::SIGINT => "SIGINT",
        _ => "SIGTERM",
    };
    emit(
        json!({"event": "stopping", "signal": signal, "steps": pipeline.steps,
                "total": pipeline.total()}),
    );
    let last = pipeline.checkpoint()?;
    let (steps, total) = (pipeline.steps, pipeline.total());
    pipeline
        .handle
        .kill()
        .map_err(|_| anyhow!("an engine worker panicked while stopping"))?;
    emit(
        json!({"event": "stopped", "final_checkpoint": last, "steps": steps, "total": total,
                "expected_total": expected_total(steps)}),
    );
    Ok(())
}

/// Serves `GET /status` on 0.0.0.0:`port` from a thread: one short request per connection,
/// enough for `engine-pipeline status` and a probe.
fn serve_status(port: u16, status: Arc<Mutex<Status>>) -> Result<()> {
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding port {port}"))?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream, &status);
        }
    });
    Ok(())
}

fn answer(mut stream: TcpStream, status: &Mutex<Status>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    // Read the head only; requests here have no body.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let (code, body) = match head.split_whitespace().take(2).collect::<Vec<_>>()[..] {
        ["GET", "/status"] => ("200 OK", status.lock().unwrap().to_json().to_string()),
        _ => (
            "404 Not Found",
            json!({"error": "only GET /status"}).to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `engine-pipeline status`: prints this pod's `/status` (pods are reached by `kubectl
/// exec`, not over the network, on the local cluster).
fn print_status(port: u16) -> Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET /status: {}", head.lines().next().unwrap_or(""));
    }
    println!("{body}");
    Ok(())
}

fn main() {
    let result = parse_args().and_then(|command| match command {
        Command::Run(options) => run(options).inspect_err(|error| {
            // Also on stdout, so the failure is in `kubectl logs` among the other reports.
            emit(json!({"event": "error", "message": format!("{error:#}")}));
        }),
        Command::Status { port } => print_status(port),
    });
    if let Err(error) = result {
        eprintln!("engine-pipeline: {error:#}");
        std::process::exit(1);
    }
}
