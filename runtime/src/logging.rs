//! Logs: to stderr, or to `--log` in runc's format. The json form is one object a line with
//! `level`, `msg` and `time`, which containerd's shim reads back to show users the error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use serde::{Deserialize, Serialize};

/// runc's `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

struct LineLayer {
    out: Mutex<Box<dyn Write + Send>>,
    json: bool,
    max: Level,
}

#[derive(Default)]
struct Msg(String);

impl Visit for Msg {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max {
            return;
        }
        let mut msg = Msg::default();
        event.record(&mut msg);
        let line = format_line(self.json, level, &msg.0);
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }
}

pub fn format_line(json: bool, level: Level, msg: &str) -> String {
    let lvl = level.as_str().to_lowercase();
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    if json {
        let v = serde_json::json!({"level": lvl, "msg": msg, "time": time});
        format!("{v}\n")
    } else {
        format!(
            "time=\"{time}\" level={lvl} msg=\"{}\"\n",
            msg.replace('"', "\\\"")
        )
    }
}

/// What logging was set up with, for helper processes that log the same way (handed to
/// them whole, as JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Settings {
    pub log: Option<PathBuf>,
    pub format: LogFormat,
    pub debug: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get()
}

/// Sets up logging; returns the log file too, so that the final error can be written to it
/// even if tracing is not yet up.
pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> std::io::Result<()> {
    init_with(Settings {
        log: log.map(Path::to_path_buf),
        format,
        debug,
    })
}

/// [`init`] with settings as a value, as a helper process receives them.
pub fn init_with(settings: Settings) -> std::io::Result<()> {
    let Settings { log, format, debug } = settings.clone();
    let log = log.as_deref();
    let _ = SETTINGS.set(settings);
    let out: Box<dyn Write + Send> = match log {
        Some(p) => Box::new(open_log(p)?),
        None => Box::new(std::io::stderr()),
    };
    let layer = LineLayer {
        out: Mutex::new(out),
        json: format == LogFormat::Json,
        max: if debug { Level::DEBUG } else { Level::WARN },
    };
    let subscriber = tracing_subscriber::registry().with(layer);
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

fn open_log(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}
